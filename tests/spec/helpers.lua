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

-- A loader of safetensors fixtures in dir: fixture(name) returns the
-- tensors and the metadata of dir .. name .. ".safetensors".
function M.fixtures(dir)
  return function(name)
    local t, meta = lunet.load(dir .. name .. ".safetensors")
    assert(t, meta)
    return t, meta
  end
end

-- The case names in a fixture's metadata (keys "case.NAME"), sorted.
function M.case_names(meta)
  local names = {}
  for k in pairs(meta) do
    local name = k:match("^case%.(.+)$")
    if name then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- The largest absolute difference between two tensors of one size (0 if empty).
function M.max_diff(a, b)
  if a:numel() == 0 then return 0 end
  return (a:double() - b:double()):abs():max():item()
end

-- got has expected's size and dtype and is within tol ({ rtol, atol }).
function M.assert_close(expected, got, tol, what)
  assert(got, what .. ": missing")
  assert.are.same(expected:size(), got:size(), what .. ": sizes")
  assert.are.equal(expected.dtype, got.dtype, what .. ": dtype")
  assert(got:numel() == 0 or lunet.allclose(got:double(), expected:double(), tol),
         ("%s: max abs difference %g"):format(what, M.max_diff(expected, got)))
end

-- A state dict's keys in its iteration order, without "_metadata".
function M.keys_of(sd)
  local ks = {}
  for k in pairs(sd) do
    if k ~= "_metadata" then ks[#ks + 1] = k end
  end
  return ks
end

-- A fixture case's options: "k=v k=a,b" -> table (numbers, booleans,
-- {a, b} pairs of integers, other values as strings).
function M.parse_case(s)
  local c = {}
  for k, v in s:gmatch("([%w_]+)=(%S+)") do
    local a, b = v:match("^(%-?%d+),(%-?%d+)$")
    if a then c[k] = { tonumber(a), tonumber(b) }
    elseif v == "true" or v == "false" then c[k] = v == "true"
    else c[k] = tonumber(v) or v end
  end
  return c
end

-- Tolerances per dtype of the BatchNorm family's fixtures, for outputs and
-- gradients of magnitude ~1 to 5. float16/bfloat16 are stored as such and
-- computed in float32: the differences are a rounding of the stored result.
M.bn_tol = {
  float64 = { rtol = 1e-10, atol = 1e-10 },
  float32 = { rtol = 1e-4, atol = 2e-5 },
  float16 = { rtol = 4e-3, atol = 4e-3 },
  bfloat16 = { rtol = 2e-2, atol = 3e-2 },
}

return M
