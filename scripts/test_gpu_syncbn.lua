-- test_gpu_syncbn.lua -- nn.SyncBatchNorm on CUDA tensors in a process
-- group of one, against BatchNorm on the same device (scripts/test_gpu
-- runs it under `mpirun -np 1`, with backend "nccl" when lunet has NCCL,
-- else "mpi"): the statistics go through the collectives and must come
-- back unchanged. Prints "cuda_syncbn np=1: N passed, N failed"; exits
-- non-zero on a failure.
local lunet = require("lunet")
local nn = require("lunet.nn")
local dist = require("lunet.dist")
local TOL = dofile(arg[0]:match("^(.-)[^/]*$") .. "../tests/spec/helpers.lua").bn_tol

local backend = dist.is_nccl_available() and "nccl" or "mpi"
dist.init{ backend = backend }
local group = dist.new_group({ 0 })
local passed, failed = 0, 0

local function close(a, b, tol, what)
  local d = a:numel() == 0 and 0 or (a:cpu():double() - b:cpu():double()):abs():max():item()
  local scale = b:numel() == 0 and 0 or b:cpu():double():abs():max():item()
  if not (d <= tol.atol + tol.rtol * scale) then
    error(("%s: max abs difference %g"):format(what, d), 0)
  end
end

local function case(shape, dt, fmt)
  local what = ("(%s) %s %s"):format(table.concat(shape, ","), dt, fmt or "contiguous")
  local ok, e = pcall(function()
    local C, tol = shape[2], TOL[dt]
    local o = { dtype = dt, device = "cuda" }
    local ref = nn.BatchNorm2d(C, o)
    local m = nn.SyncBatchNorm(C, { dtype = dt, device = "cuda", process_group = group })
    for _, mode in ipairs({ "train", "train", "eval" }) do
      m:train(mode == "train")
      ref:train(mode == "train")
      local x = lunet.randn(shape, o)
      if fmt then x = x:contiguous(fmt) end
      local xs, xr = x:clone():requires_grad_(true), x:clone():requires_grad_(true)
      local dy = lunet.randn(shape, o)
      local y, yr = m(xs), ref(xr)
      y:backward(dy)
      yr:backward(dy)
      close(y:detach(), yr:detach(), tol, what .. " " .. mode .. ": output")
      close(xs.grad, xr.grad, tol, what .. " " .. mode .. ": input gradient")
      close(m.weight.grad, ref.weight.grad, tol, what .. " " .. mode .. ": weight gradient")
      close(m.running_var, ref.running_var, tol, what .. " " .. mode .. ": running_var")
      m:zero_grad()
      ref:zero_grad()
    end
  end)
  if ok then passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write("FAIL ", what, ": ", tostring(e), "\n")
  end
end

for _, dt in ipairs({ "float32", "float16", "bfloat16", "float64" }) do
  case({ 8, 5, 7, 9 }, dt)
  case({ 8, 5, 7, 9 }, dt, "channels_last")
  case({ 16, 3, 64, 64 }, dt, "channels_last")
end
case({ 0, 5, 3, 3 }, "float32")

dist.finalize()
print(("cuda_syncbn np=1 (%s): %d passed, %d failed"):format(backend, passed, failed))
os.exit(failed == 0 and 0 or 1)
