-- The BatchNorm family on CUDA against the same modules on the CPU:
-- BatchNorm1d/2d/3d, lazy, FusedBatchNorm2d with and without an addend,
-- ghost BN (virtual_batch_size), BatchRenorm1d/2d/3d, ema_update="skip"
-- and SyncBatchNorm without a process group; training steps and eval, each
-- forward and backward (input, addend, weight and bias gradients), the
-- running statistics and num_batches_tracked, in float32, float64,
-- float16 and bfloat16, NCHW and channels-last (the output keeps the
-- input's strides), odd channel counts with many values per channel and
-- many channels with few rows, empty batches, and modules moved between
-- devices (identity, state dicts, checkpoints). Each comparison runs with
-- lunet's own kernels and with cuDNN (lunet.backends.cudnn.enabled) when
-- lunet has the switch. Without a CUDA device every test is pending
-- ("skipped: no CUDA device"), never passed.
local lunet = require("lunet")
local nn = require("lunet.nn")

local helpers = require("tests.spec.helpers")
local assert_agree, TOL = helpers.assert_agree, helpers.bn_tol
local cuda_it = helpers.cuda_it(it, pending)
local gpu_it = helpers.cuda_it(it, pending, true)   -- needs the real device
local DEV, DEV_NAME = helpers.dev, helpers.dev_name
helpers.note_no_cuda("cuda_batchnorm_spec.lua")

local DTYPES = { "float32", "float64", "float16", "bfloat16" }
local FORMAT = { [4] = "channels_last", [5] = "channels_last_3d" }

-- The cuDNN settings each comparison runs under: lunet's own kernels and
-- cuDNN when lunet has the switch, else whatever lunet picks.
local cudnn = lunet.backends and lunet.backends.cudnn
local CUDNN = cudnn and { false, true } or { "default" }

-- fn() under a cuDNN setting ("default": the switch left alone).
local function with_cudnn(setting, fn)
  if setting == "default" then return fn() end
  return helpers.with_cudnn(setting, fn)
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- Random data of `shape` and dtype in memory format `fmt` ("contiguous",
-- "channels_last", "channels_last_3d" or "transposed": an (N, C) tensor
-- whose N dim is the fast one); step k shifts and scales it so that the
-- statistics change from step to step (BatchRenorm's r and d move).
local function data(shape, dtype, fmt, k)
  local x = lunet.randn(shape, { dtype = "float64" }) * (0.5 + 0.5 * (k or 0)) + 0.3 * (k or 0)
  x = x:to(dtype)
  if fmt == "transposed" then return x:t():contiguous():t() end
  if fmt ~= "contiguous" then return x:contiguous(fmt) end
  return x
end

-- A new leaf that requires grad: t's values on `device` in t's layout.
local function leaf(t, device)
  return t:to(device):clone():requires_grad_(true)
end

-- addend `a` moved so that relu's input bn(x) + a is at least 0.02 from 0
-- (pre is bn(x) in float64): there, the CPU's and the device's roundings
-- cannot fall on two sides of 0, where the gradient differs by all of dy.
local function away_from_zero(pre, a)
  local s = pre + a:double()
  return (a:double() + s:ge(0):double() * 0.04 - 0.02):to(a.dtype):contiguous(
    a:is_contiguous() and "contiguous_format" or "channels_last")
end

-- bn(x) in float64 for a module m (training: batch statistics; eval: m's
-- running statistics), for away_from_zero.
local function bn_reference(m, x, training)
  local c = x:size(2)
  local w = m.weight and m.weight:double() or lunet.ones(c, { dtype = "float64" })
  local b = m.bias and m.bias:double() or lunet.zeros(c, { dtype = "float64" })
  if training then
    return nn.functional.batch_norm(x:double(), nil, nil, w, b, true, 0, m.eps)
  end
  return nn.functional.batch_norm(x:double(), m.running_mean:double(), m.running_var:double(),
                                  w, b, false, 0, m.eps)
end

-- m(x), or m(x, a) with an addend.
local function call(m, x, a)
  if a then return m(x, a) end
  return m(x)
end

-- Runs the same steps on a CPU module and a device module built by
-- make(device) and compares them after each step. c: shape, dtype, fmt,
-- steps (a list of "train" / "eval"), addend (FusedBatchNorm2d's second
-- input: true, or false for none), what (the case's name). Each step
-- draws new x and dy, runs forward and backward on both, and compares the
-- output (values and strides), the input's, the addend's, the weight's
-- and the bias's gradients, the running statistics and the counter.
local function compare(make, c)
  local tol = TOL[c.dtype]
  for _, setting in ipairs(CUDNN) do
    with_cudnn(setting, function()
      local m, g = make("cpu"), make(DEV)
      local what0 = ("%s cudnn=%s"):format(c.what, tostring(setting))
      if m.weight and m.weight:numel() > 0 then   -- lazy modules: after the first input
        local w = lunet.rand(m.weight:size(), { dtype = "float64" }) + 0.5
        local b = lunet.randn(m.bias:size(), { dtype = "float64" })
        lunet.no_grad(function()
          m.weight:copy_(w); m.bias:copy_(b)
          g.weight:copy_(w); g.bias:copy_(b)
        end)
      end
      for k, mode in ipairs(c.steps) do
        local what = ("%s step %d (%s)"):format(what0, k, mode)
        m:train(mode == "train")
        g:train(mode == "train")
        m:zero_grad()
        g:zero_grad()
        local x = data(c.shape, c.dtype, c.fmt, k)
        local dy = data(c.shape, c.dtype, c.fmt, 0)
        local a
        if c.addend then
          a = data(c.shape, c.dtype, c.fmt, 0)
          if x:numel() > 0 then a = away_from_zero(bn_reference(m, x, mode == "train"), a) end
        end
        local xc, xg = leaf(x, "cpu"), leaf(x, DEV)
        local ac, ag = a and leaf(a, "cpu"), a and leaf(a, DEV)
        local y, yg = call(m, xc, ac), call(g, xg, ag)
        assert_agree(y:detach(), yg:detach(), tol, what .. ": output")
        assert.are.same(y:stride(), yg:stride(), what .. ": the output's strides")
        y:backward(dy)
        yg:backward(dy:to(DEV))
        assert_agree(xc.grad, xg.grad, tol, what .. ": input gradient")
        if a then assert_agree(ac.grad, ag.grad, tol, what .. ": addend gradient") end
        if m.weight then
          assert_agree(m.weight.grad, g.weight.grad, tol, what .. ": weight gradient")
          assert_agree(m.bias.grad, g.bias.grad, tol, what .. ": bias gradient")
        end
        if m.running_mean then
          assert_agree(m.running_mean, g.running_mean, tol, what .. ": running_mean")
          assert_agree(m.running_var, g.running_var, tol, what .. ": running_var")
          assert.are.equal(m.num_batches_tracked:item(), g.num_batches_tracked:item(),
                           what .. ": num_batches_tracked")
          assert.are.equal(DEV_NAME, g.num_batches_tracked.device, what .. ": counter's device")
        end
      end
    end)
  end
end

-- make(device) for a module class with C channels and options.
local function maker(class, C, opts)
  return function(device)
    local o = { device = device }
    for k, v in pairs(opts or {}) do o[k] = v end
    return nn[class](C, o)
  end
end

local TRAIN_EVAL = { "train", "train", "eval" }

-- The ranks of each BatchNorm module: input shapes and their formats.
local RANKS = {
  { class = "BatchNorm1d", shape = { 37, 5 }, formats = { "contiguous", "transposed" } },
  { class = "BatchNorm1d", shape = { 6, 5, 11 }, formats = { "contiguous" } },
  { class = "BatchNorm2d", shape = { 4, 6, 5, 7 }, formats = { "contiguous", "channels_last" } },
  { class = "BatchNorm3d", shape = { 2, 5, 3, 4, 6 },
    formats = { "contiguous", "channels_last_3d" } },
}

describe("CUDA BatchNorm1d/2d/3d against the CPU", function()
  for _, dt in ipairs(DTYPES) do
    for _, r in ipairs(RANKS) do
      cuda_it(("%s %s (%s), train and eval, every format"):format(r.class, dt,
              table.concat(r.shape, ",")), function()
        for _, fmt in ipairs(r.formats) do
          compare(maker(r.class, r.shape[2], { dtype = dt }),
                  { shape = r.shape, dtype = dt, fmt = fmt, steps = TRAIN_EVAL,
                    what = ("%s %s %s"):format(r.class, dt, fmt) })
        end
      end)
    end
  end

  cuda_it("options: momentum, momentum=false, eps, affine=false, track_running_stats=false", function()
    local variants = {
      { momentum = 0.3, eps = 1e-3 }, { momentum = false }, { affine = false },
      { track_running_stats = false }, { affine = false, track_running_stats = false },
    }
    for i, o in ipairs(variants) do
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        o.dtype = "float32"
        compare(maker("BatchNorm2d", 6, o),
                { shape = { 4, 6, 5, 7 }, dtype = "float32", fmt = fmt,
                  steps = { "train", "train", "train", "eval" },
                  what = ("options #%d %s"):format(i, fmt) })
      end
    end
  end)
end)

describe("CUDA BatchNorm: odd channel counts, many values per channel, empty batches", function()
  cuda_it("C=3 with 2^20 values per channel, NCHW and channels-last, float32 and float16", function()
    for _, dt in ipairs({ "float32", "float16" }) do
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        compare(maker("BatchNorm2d", 3, { dtype = dt }),
                { shape = { 16, 3, 256, 256 }, dtype = dt, fmt = fmt, steps = { "train", "eval" },
                  what = ("C=3 2^20 per channel %s %s"):format(dt, fmt) })
      end
    end
  end)

  cuda_it("C=1023 with few rows: BatchNorm1d (4,1023) and BatchNorm2d (2,1023,1,3)", function()
    for _, dt in ipairs({ "float32", "bfloat16" }) do
      compare(maker("BatchNorm1d", 1023, { dtype = dt }),
              { shape = { 4, 1023 }, dtype = dt, fmt = "contiguous", steps = TRAIN_EVAL,
                what = "BatchNorm1d (4,1023) " .. dt })
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        compare(maker("BatchNorm2d", 1023, { dtype = dt }),
                { shape = { 2, 1023, 1, 3 }, dtype = dt, fmt = fmt, steps = TRAIN_EVAL,
                  what = ("BatchNorm2d (2,1023,1,3) %s %s"):format(dt, fmt) })
      end
    end
  end)

  cuda_it("one channel of 300001 rows, 32 channels of 100000 rows, 4097 channels of 2", function()
    compare(maker("BatchNorm1d", 1), { shape = { 300001, 1 }, dtype = "float32",
            fmt = "contiguous", steps = TRAIN_EVAL, what = "BatchNorm1d (300001,1)" })
    compare(maker("BatchNorm1d", 32), { shape = { 100000, 32 }, dtype = "float32",
            fmt = "contiguous", steps = TRAIN_EVAL, what = "BatchNorm1d (100000,32)" })
    compare(maker("BatchNorm1d", 4097, { dtype = "float16" }),
            { shape = { 2, 4097 }, dtype = "float16", fmt = "contiguous", steps = TRAIN_EVAL,
              what = "BatchNorm1d (2,4097) float16" })
    compare(maker("BatchNorm2d", 7, { dtype = "bfloat16" }),
            { shape = { 3, 7, 129, 131 }, dtype = "bfloat16", fmt = "channels_last",
              steps = TRAIN_EVAL, what = "BatchNorm2d (3,7,129,131) bfloat16 channels-last" })
  end)

  cuda_it("empty batches: empty outputs and gradients, statistics left, the counter counts", function()
    for _, dt in ipairs(DTYPES) do
      compare(maker("BatchNorm1d", 5, { dtype = dt }), { shape = { 0, 5 }, dtype = dt,
              fmt = "contiguous", steps = TRAIN_EVAL, what = "BatchNorm1d (0,5) " .. dt })
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        compare(maker("BatchNorm2d", 6, { dtype = dt }), { shape = { 0, 6, 5, 7 }, dtype = dt,
                fmt = fmt, steps = TRAIN_EVAL, what = ("BatchNorm2d (0,6,5,7) %s %s"):format(dt, fmt) })
      end
      compare(maker("BatchNorm2d", 6, { dtype = dt }), { shape = { 2, 6, 0, 7 }, dtype = dt,
              fmt = "contiguous", steps = TRAIN_EVAL, what = "BatchNorm2d (2,6,0,7) " .. dt })
    end
  end)
end)

describe("CUDA BatchNorm variants against the CPU", function()
  for _, dt in ipairs(DTYPES) do
    cuda_it("FusedBatchNorm2d with and without an addend, " .. dt, function()
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        for _, addend in ipairs({ true, false }) do
          compare(maker("FusedBatchNorm2d", 6, { dtype = dt }),
                  { shape = { 4, 6, 5, 7 }, dtype = dt, fmt = fmt, steps = TRAIN_EVAL,
                    addend = addend, what = ("FusedBatchNorm2d %s %s addend=%s")
                                            :format(dt, fmt, tostring(addend)) })
        end
      end
      compare(maker("FusedBatchNorm2d", 3, { dtype = dt }),
              { shape = { 8, 3, 128, 128 }, dtype = dt, fmt = "channels_last", addend = true,
                steps = { "train", "eval" }, what = "FusedBatchNorm2d (8,3,128,128) " .. dt })
    end)

    cuda_it("BatchRenorm1d/2d/3d (rmax=1.5, dmax=0.5), " .. dt, function()
      for _, r in ipairs(RANKS) do
        local class = r.class:gsub("BatchNorm", "BatchRenorm")
        for _, fmt in ipairs(r.formats) do
          compare(maker(class, r.shape[2], { dtype = dt, rmax = 1.5, dmax = 0.5 }),
                  { shape = r.shape, dtype = dt, fmt = fmt,
                    steps = { "train", "train", "train", "eval" },
                    what = ("%s %s %s"):format(class, dt, fmt) })
        end
      end
    end)

    cuda_it("ghost BN (virtual_batch_size) in 1d and 2d, " .. dt, function()
      compare(maker("BatchNorm1d", 5, { dtype = dt, virtual_batch_size = 4 }),
              { shape = { 16, 5 }, dtype = dt, fmt = "contiguous", steps = TRAIN_EVAL,
                what = "ghost BatchNorm1d V=4 " .. dt })
      for _, fmt in ipairs({ "contiguous", "channels_last" }) do
        compare(maker("BatchNorm2d", 6, { dtype = dt, virtual_batch_size = 2 }),
                { shape = { 8, 6, 5, 7 }, dtype = dt, fmt = fmt, steps = TRAIN_EVAL,
                  what = ("ghost BatchNorm2d V=2 %s %s"):format(dt, fmt) })
      end
    end)
  end

  cuda_it("ema_update='skip' trains with batch statistics and leaves the running ones", function()
    for _, fmt in ipairs({ "contiguous", "channels_last" }) do
      compare(maker("BatchNorm2d", 6, { ema_update = "skip" }),
              { shape = { 4, 6, 5, 7 }, dtype = "float32", fmt = fmt, steps = TRAIN_EVAL,
                what = "ema_update=skip " .. fmt })
    end
    local g = nn.BatchNorm2d(3, { ema_update = "skip", device = DEV })
    g(lunet.randn(4, 3, 2, 2, { device = DEV }))
    assert.are.same({ 0, 0, 0 }, g.running_mean:tolist())
    assert.are.same({ 1, 1, 1 }, g.running_var:tolist())
    assert.are.equal(0, g.num_batches_tracked:item())
  end)

  cuda_it("lazy modules take their channels and device from the first input", function()
    for _, r in ipairs(RANKS) do
      local lazy = r.class:gsub("BatchNorm", "LazyBatchNorm")
      for _, dt in ipairs({ "float32", "float16" }) do
        compare(function(device) return nn[lazy]({ dtype = dt, device = device }) end,
                { shape = r.shape, dtype = dt, fmt = r.formats[#r.formats], steps = TRAIN_EVAL,
                  what = ("%s %s"):format(lazy, dt) })
      end
      local g = nn[lazy]({ device = DEV })
      g(lunet.randn(r.shape, { device = DEV }))
      assert.are.equal(r.class, g:type_name())
      assert.are.equal(DEV_NAME, g.weight.device)
      assert.are.equal(DEV_NAME, g.running_var.device)
    end
  end)

  cuda_it("SyncBatchNorm without a process group is BatchNorm on the device", function()
    for _, shape in ipairs({ { 9, 5 }, { 4, 5, 6 }, { 4, 5, 3, 3 }, { 2, 5, 2, 3, 2 } }) do
      for _, dt in ipairs({ "float32", "float16" }) do
        compare(maker("SyncBatchNorm", 5, { dtype = dt }),
                { shape = shape, dtype = dt, fmt = FORMAT[#shape] or "contiguous",
                  steps = TRAIN_EVAL, what = ("SyncBatchNorm (%s) %s"):format(
                    table.concat(shape, ","), dt) })
      end
    end
  end)
end)

describe("CUDA BatchNorm modules between devices", function()
  gpu_it("bn:to('cuda') keeps the parameter and buffer objects and moves their data", function()
    local bn = nn.BatchNorm2d(4)
    local w, b, rm, rv, nbt = bn.weight, bn.bias, bn.running_mean, bn.running_var,
                              bn.num_batches_tracked
    assert.are.equal(bn, bn:to("cuda"))
    assert.are.equal(w, bn.weight)
    assert.are.equal(b, bn.bias)
    for name, t in pairs({ weight = w, bias = b, running_mean = bn.running_mean,
                           running_var = bn.running_var, nbt = bn.num_batches_tracked }) do
      assert.are.equal("cuda:0", t.device, name)
    end
    assert.are.equal("int64", bn.num_batches_tracked.dtype)
    -- buffers are the same objects too (PyTorch replaces them; lunet swaps data in place)
    assert.are.equal(rm, bn.running_mean)
    assert.are.equal(rv, bn.running_var)
    assert.are.equal(nbt, bn.num_batches_tracked)
    bn(lunet.randn(2, 4, 3, 3):cuda())
    assert.are.equal(1, bn.num_batches_tracked:item())
    bn:cpu()
    assert.are.equal(w, bn.weight)
    assert.are.equal("cpu", bn.weight.device)
    bn:cuda()
    assert.are.equal("cuda:0", bn.running_mean.device)
    bn:to{ device = "cuda", dtype = "float16" }
    assert.are.equal("float16", bn.weight.dtype)
    assert.are.equal("int64", bn.num_batches_tracked.dtype)
    assert.are.equal("cuda:0", bn(lunet.randn(2, 4, 3, 3, { dtype = "float16", device = "cuda" })).device)
  end)

  gpu_it("refuses inputs on another device than the module's", function()
    local bn = nn.BatchNorm2d(3):cuda()
    assert.is_false(pcall(bn, lunet.randn(2, 3, 2, 2)))
    assert.is_false(pcall(nn.BatchNorm2d(3), lunet.randn(2, 3, 2, 2, { device = "cuda" })))
  end)

  gpu_it("state dicts and checkpoints move between the devices", function()
    local src = nn.BatchNorm2d(4):cuda()
    for k = 1, 3 do src(lunet.randn(5, 4, 3, 3, { device = "cuda" }) * k + k) end
    local sd = src:state_dict()
    assert.are.equal("cuda:0", sd.running_mean.device)
    assert.are.equal(2, sd._metadata[""].version)
    local cpu = nn.BatchNorm2d(4)
    cpu:load_state_dict(sd)
    assert.are.equal("cpu", cpu.running_mean.device)
    for _, k in ipairs({ "weight", "bias", "running_mean", "running_var" }) do
      assert.are.same(src[k]:cpu():tolist(), cpu[k]:tolist(), k)
    end
    assert.are.equal(3, cpu.num_batches_tracked:item())
    local back = nn.BatchNorm2d(4):cuda()
    back:load_state_dict(cpu:state_dict())
    assert.are.equal("cuda:0", back.running_var.device)
    assert.are.same(src.running_var:cpu():tolist(), back.running_var:cpu():tolist())
    local path = os.tmpname()
    assert.is_true(lunet.save(path, src:state_dict()))
    local loaded = nn.BatchNorm2d(4):cuda()
    loaded:load_state_dict(lunet.load(path))
    os.remove(path)
    assert.are.equal("cuda:0", loaded.running_mean.device)
    assert.are.same(src.running_mean:cpu():tolist(), loaded.running_mean:cpu():tolist())
    assert.are.equal(3, loaded.num_batches_tracked:item())
  end)

  gpu_it("training moved to the device mid-way continues as on the CPU", function()
    local x1, x2, x3 = lunet.randn(8, 3, 4, 4), lunet.randn(8, 3, 4, 4) * 2, lunet.randn(8, 3, 4, 4) + 1
    local ref, moved = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    ref(x1); moved(x1)
    moved:cuda()
    ref(x2); moved(x2:cuda())
    ref:eval(); moved:eval()
    assert_agree(ref(x3), moved(x3:cuda()), TOL.float32, "eval after the move")
    assert_agree(ref.running_var, moved.running_var, TOL.float32, "running_var")
    assert.are.equal(2, moved.num_batches_tracked:item())
  end)
end)
