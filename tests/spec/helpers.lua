-- Helpers shared by the specs, loaded with require("tests.spec.helpers")
-- (busted runs from the repository root, and picks only *_spec.lua files,
-- so this one is never run as a spec).
local lunet = require("lunet")
local assert = require("luassert")  -- busted gives only spec files its assert

local M = {}

-- The message of the error fn(...) raises (fails if none is raised).
function M.err(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(msg)
end

-- Tensors of a fixed dtype from nested tables of numbers.
function M.f32(t) return lunet.tensor(t, { dtype = "float32" }) end
function M.f64(t) return lunet.tensor(t, { dtype = "float64" }) end

return M
