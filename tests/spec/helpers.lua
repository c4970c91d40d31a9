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
-- Set a BatchNorm module's weight and bias to w and b (fixture values).
function M.set_affine(bn, w, b)
  lunet.no_grad(function()
    bn.weight:copy_(w)
    bn.bias:copy_(b)
  end)
end

M.bn_tol = {
  float64 = { rtol = 1e-10, atol = 1e-10 },
  float32 = { rtol = 1e-4, atol = 2e-5 },
  float16 = { rtol = 4e-3, atol = 4e-3 },
  bfloat16 = { rtol = 2e-2, atol = 3e-2 },
}

-- ---- CUDA specs ----

-- The device the CUDA specs run on: "cuda", or "cpu" when the environment
-- has LUNET_SPEC_DEVICE=cpu: the CPU then stands in for the device, which
-- checks the specs themselves (CPU against CPU) where there is no GPU.
M.stand_in = os.getenv("LUNET_SPEC_DEVICE") == "cpu"
M.dev = M.stand_in and "cpu" or "cuda"
M.dev_name = M.stand_in and "cpu" or "cuda:0"   -- x.device of a tensor there
M.has_cuda = lunet.cuda.is_available()

-- The `it` of a CUDA spec: busted's it(name, fn) when the specs' device is
-- there; otherwise the test is registered as pending (busted's pending,
-- never counted as passed) with "skipped: no CUDA device" in its name.
-- With real_only, the stand-in CPU does not count (tests of lunet.cuda and
-- of moves between devices). Specs pass their own busted functions:
--   local cuda_it = helpers.cuda_it(it, pending)
function M.cuda_it(it, pending, real_only)
  local runs = M.has_cuda or (M.stand_in and not real_only)
  return function(name, fn)   -- tail calls: busted reports the spec's line
    if runs then return it(name, fn) end
    return pending(name .. " -- skipped: no CUDA device")
  end
end

-- fn() with lunet.backends.cudnn.enabled set to `value`, put back as it
-- was afterwards, also when fn raises.
function M.with_cudnn(value, fn)
  local cudnn = lunet.backends.cudnn
  local saved = cudnn.enabled
  cudnn.enabled = value
  local ok, e = pcall(fn)
  cudnn.enabled = saved
  if not ok then error(e, 0) end
end

-- One visible line when a CUDA spec file is loaded on a machine without a
-- device (busted lists its tests as pending at the end).
function M.note_no_cuda(file)
  if not M.has_cuda then
    io.stdout:write(("%s: skipped: no CUDA device (its tests are pending%s)\n")
                    :format(file, M.stand_in and "; the CPU stands in where it can" or ""))
    io.stdout:flush()
  end
end

-- got, computed on the specs' device, agrees with want, the same
-- computation's result on the CPU: it lives on the device and is close
-- (tol) after the copy back, NaN where want has NaN.
function M.assert_agree(want, got, tol, what)
  assert(got, what .. ": missing")
  assert.are.equal(M.dev_name, got.device, what .. ": device")
  got = got:cpu()
  assert.are.same(want:size(), got:size(), what .. ": sizes")
  assert.are.equal(want.dtype, got.dtype, what .. ": dtype")
  local o = { rtol = tol.rtol, atol = tol.atol, equal_nan = true }
  assert(got:numel() == 0 or lunet.allclose(got:double(), want:double(), o),
         ("%s: max abs difference %g"):format(what, M.max_diff(want, got)))
end

-- The same for results that must match exactly (integers, booleans,
-- indices, copies): sizes, dtype, device and every element.
function M.assert_same(want, got, what)
  assert(got, what .. ": missing")
  assert.are.equal(M.dev_name, got.device, what .. ": device")
  assert.are.same(want:size(), got:size(), what .. ": sizes")
  assert.are.equal(want.dtype, got.dtype, what .. ": dtype")
  assert.are.same(want:tolist(), got:cpu():tolist(), what .. ": values")
end

return M
