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

-- s quoted for the shell, single quotes and all.
function M.shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The lunet executable running these specs (lua.c's arg: the interpreter
-- is the lowest negative index; LUNET_EXE overrides), as an absolute path.
function M.lunet_exe()
  local i = -1
  while arg and arg[i - 1] do i = i - 1 end
  local exe = os.getenv("LUNET_EXE") or (arg and arg[i])
  assert(exe, "cannot tell which lunet runs the specs (set LUNET_EXE)")
  if exe:sub(1, 1) ~= "/" then exe = os.getenv("PWD") .. "/" .. exe end
  return exe
end

return M
