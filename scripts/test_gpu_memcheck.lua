-- test_gpu_memcheck.lua -- a short run of every CUDA op and BatchNorm
-- module, forward and backward, for compute-sanitizer (scripts/test_gpu):
--   compute-sanitizer --tool memcheck build-gpu/lunet scripts/test_gpu_memcheck.lua
-- Small shapes with odd sizes (so that tails and bounds are exercised),
-- every dtype and both memory formats. Checks nothing itself (the specs
-- do): it prints "memcheck script: N steps done" at the end, and fails
-- on the first Lua error.
local lunet = require("lunet")
local nn = require("lunet.nn")

assert(lunet.cuda.is_available(), "no CUDA device")
local D = { device = "cuda" }
local FLOATS = { "float32", "float64", "float16", "bfloat16" }
local steps = 0

local function step(what, fn)
  local ok, e = pcall(fn)
  if not ok then error(what .. ": " .. tostring(e), 0) end
  lunet.cuda.synchronize()   -- a kernel's fault shows at its own step
  steps = steps + 1
end

local function randn(shape, dt)
  return lunet.randn(shape, { dtype = dt, device = "cuda" })
end

for _, dt in ipairs(FLOATS) do
  step("creation and copies " .. dt, function()
    local x = randn({ 3, 5, 7 }, dt)
    local _ = x:cpu(), x:transpose(1, 3):contiguous(), x:to("float64"), x:to("int64"),
              lunet.zeros(4, 3, { dtype = dt, device = "cuda" }):fill_(2), x:clone(),
              lunet.rand({ 1001 }, { dtype = dt, device = "cuda" }), lunet.arange(9, D),
              lunet.empty(0, 3, { dtype = dt, device = "cuda" }):zero_()
    local y = lunet.zeros(3, 5, 7, { dtype = dt, device = "cuda" })
    y:narrow(2, 2, 3):copy_(x:narrow(2, 1, 3))
    y:copy_(lunet.randn(1, 5, 1))
  end)
  step("elementwise " .. dt, function()
    local a, b = randn({ 4, 1, 9 }, dt), randn({ 5, 1 }, dt)
    local p = a:abs() + 0.1
    for _, op in ipairs({ "neg", "abs", "exp", "relu", "sign" }) do local _ = a[op](a) end
    local _ = p:sqrt(), p:log(), a + b, a - b, a * b, a / (b:abs() + 1), p ^ b,
              lunet.maximum(a, b), lunet.minimum(a, b), a:eq(b), a:lt(b), a:ge(0),
              a + 2, 3 * a, b:t() * 2, a:to("float32") + b:to("float64")
    a:add_(a, { alpha = 0.5 })
    a:mul_(2)
  end)
  step("reductions " .. dt, function()
    local x = randn({ 6, 7, 33 }, dt)
    for _, d in ipairs({ 1, 2, 3, { 1, 3 } }) do
      local _ = x:sum(d), x:mean(d, true), x:var(d), x:max(d), x:min(d), x:std(d)
    end
    local _ = x:sum(), x:max(), x:argmax(), x:argmin(2), x:transpose(1, 3):sum(1),
              randn({ 1 << 18 | 5 }, dt):sum(), lunet.zeros(0, 4, { dtype = dt, device = "cuda" }):sum(1)
  end)
  step("matmul and cat " .. dt, function()
    local a, b = randn({ 3, 65, 33 }, dt):requires_grad_(true), randn({ 3, 33, 17 }, dt):requires_grad_(true)
    a:matmul(b):sum():backward()
    local _ = randn({ 7 }, dt):matmul(randn({ 7 }, dt)), randn({ 5, 7 }, dt):matmul(randn({ 7 }, dt)),
              randn({ 9, 6 }, dt):t():matmul(randn({ 9, 4 }, dt)),
              lunet.cat({ randn({ 2, 3 }, dt), randn({ 2, 5 }, dt) }, 2),
              lunet.cat({ randn({ 2, 3 }, dt), lunet.zeros(0, 3, { dtype = dt, device = "cuda" }) })
  end)
end

-- Every BatchNorm module: two training steps and eval, forward and backward.
local function run_bn(m, shape, dt, fmt, addend)
  for _, mode in ipairs({ "train", "train", "eval" }) do
    m:train(mode == "train")
    local x = randn(shape, dt)
    if fmt then x = x:contiguous(fmt) end
    x:requires_grad_(true)
    local a = addend and randn(shape, dt):contiguous(fmt or "contiguous_format"):requires_grad_(true)
    local y = a and m(x, a) or m(x)
    y:backward(lunet.ones_like(y))
  end
end

local cudnn = lunet.backends and lunet.backends.cudnn
for _, use_cudnn in ipairs(cudnn and { false, true } or { "default" }) do
  if use_cudnn ~= "default" then cudnn.enabled = use_cudnn end
  for _, dt in ipairs(FLOATS) do
    local o = { dtype = dt, device = "cuda" }
    local function with(extra)
      local t = { dtype = dt, device = "cuda" }
      for k, v in pairs(extra) do t[k] = v end
      return t
    end
    local tag = (" %s cudnn=%s"):format(dt, tostring(use_cudnn))
    step("BatchNorm1d" .. tag, function()
      run_bn(nn.BatchNorm1d(5, o), { 37, 5 }, dt)
      run_bn(nn.BatchNorm1d(5, o), { 6, 5, 11 }, dt)
      run_bn(nn.BatchNorm1d(1023, o), { 3, 1023 }, dt)
      run_bn(nn.BatchNorm1d(5, o), { 0, 5 }, dt)
    end)
    step("BatchNorm2d" .. tag, function()
      for _, fmt in ipairs({ "contiguous_format", "channels_last" }) do
        run_bn(nn.BatchNorm2d(3, o), { 5, 3, 33, 17 }, dt, fmt)
        run_bn(nn.BatchNorm2d(129, o), { 2, 129, 3, 5 }, dt, fmt)
        run_bn(nn.BatchNorm2d(3, o), { 0, 3, 4, 4 }, dt, fmt)
        run_bn(nn.BatchNorm2d(3, with{ affine = false, track_running_stats = false }),
               { 4, 3, 5, 5 }, dt, fmt)
      end
    end)
    step("BatchNorm3d" .. tag, function()
      for _, fmt in ipairs({ "contiguous_format", "channels_last_3d" }) do
        run_bn(nn.BatchNorm3d(5, o), { 2, 5, 3, 7, 9 }, dt, fmt)
      end
    end)
    step("variants" .. tag, function()
      for _, fmt in ipairs({ "contiguous_format", "channels_last" }) do
        run_bn(nn.FusedBatchNorm2d(6, o), { 4, 6, 9, 7 }, dt, fmt, true)
        run_bn(nn.FusedBatchNorm2d(6, o), { 4, 6, 9, 7 }, dt, fmt, false)
        run_bn(nn.BatchNorm2d(6, with{ virtual_batch_size = 2 }), { 8, 6, 5, 3 }, dt, fmt)
        run_bn(nn.BatchRenorm2d(6, with{ rmax = 1.5, dmax = 0.5 }), { 4, 6, 5, 3 }, dt, fmt)
        run_bn(nn.BatchNorm2d(6, with{ ema_update = "skip" }), { 4, 6, 5, 3 }, dt, fmt)
        run_bn(nn.SyncBatchNorm(6, o), { 4, 6, 5, 3 }, dt, fmt)
      end
      run_bn(nn.BatchRenorm1d(5, with{ rmax = 2 }), { 9, 5 }, dt)
      run_bn(nn.LazyBatchNorm2d(o), { 4, 6, 5, 3 }, dt)
      nn.functional.batch_norm(randn({ 4, 3, 2, 2 }, dt), lunet.zeros(3, o), lunet.ones(3, o),
                               nil, nil, true)
    end)
  end
end

step("a module moved to the device, an optimizer step", function()
  local m = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)):cuda()
  local opt = lunet.optim.SGD(m:parameters(), { lr = 0.1, momentum = 0.9 })
  for _ = 1, 2 do
    opt:zero_grad()
    nn.functional.cross_entropy(m(randn({ 8, 10 }, "float32")), lunet.tensor({ 1, 2, 3, 1, 2, 3, 1, 2 }, D)):backward()
    opt:step()
  end
  m:cpu()
end)

collectgarbage()
lunet.empty_cache()
print(("memcheck script: %d steps done"):format(steps))
