-- The module system, layers, losses and optimizers on CUDA against the
-- CPU: model:to("cuda") keeps every parameter object (optimizers made
-- before keep working), state dicts move between devices, Linear, Conv2d,
-- ReLU, Flatten, pooling and the losses agree forward and backward, and a
-- few SGD and Adam steps of a small Conv-BN-ReLU network give the CPU's
-- parameters. Without a CUDA device every test is pending ("skipped: no
-- CUDA device"), never passed.
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")

local helpers = require("tests.spec.helpers")
local assert_agree = helpers.assert_agree
local cuda_it = helpers.cuda_it(it, pending)
local gpu_it = helpers.cuda_it(it, pending, true)   -- needs the real device
local DEV, DEV_NAME = helpers.dev, helpers.dev_name
helpers.note_no_cuda("cuda_modules_spec.lua")

local TOL = { rtol = 1e-4, atol = 1e-5 }   -- float32, sums in another order

-- A small network of every layer kind the training demo uses.
local function net()
  lunet.manual_seed(11)
  return nn.Sequential(
    nn.Conv2d(3, 8, 3, { padding = 1 }), nn.BatchNorm2d(8), nn.ReLU(),
    nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, { padding = 1, bias = false }), nn.BatchNorm2d(8),
    nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.BatchNorm1d(16),
    nn.ReLU(), nn.Linear(16, 10))
end

-- The same network on the CPU and on the device, with equal parameters.
local function pair()
  local cpu, dev = net(), net()
  dev:to(DEV)
  return cpu, dev
end

-- Every parameter (and its gradient when `grads`) and buffer of dev
-- agrees with cpu's.
local function assert_models_agree(cpu, dev, what, grads)
  local dp = {}
  for name, p in dev:named_parameters() do dp[name] = p end
  for name, p in cpu:named_parameters() do
    assert_agree(p, dp[name], TOL, what .. ": " .. name)
    if grads then assert_agree(p.grad, dp[name].grad, TOL, what .. ": grad of " .. name) end
  end
  local db = {}
  for name, b in dev:named_buffers() do db[name] = b end
  for name, b in cpu:named_buffers() do
    if b.dtype == "int64" then assert.are.equal(b:item(), db[name]:item(), what .. ": " .. name)
    else assert_agree(b, db[name], TOL, what .. ": " .. name) end
  end
end

describe("CUDA modules", function()
  gpu_it("model:to('cuda') keeps every parameter and buffer object", function()
    local m = net()
    local params, buffers = {}, {}
    for name, p in m:named_parameters() do params[name] = p end
    for name, b in m:named_buffers() do buffers[name] = b end
    assert.are.equal(m, m:to("cuda"))
    for name, p in m:named_parameters() do
      assert.are.equal(params[name], p, name)
      assert.are.equal("cuda:0", p.device, name)
      assert.is_true(p.requires_grad, name)
      assert.is_true(p.is_leaf, name)
    end
    for name, b in m:named_buffers() do
      assert.are.equal(buffers[name], b, name)
      assert.are.equal("cuda:0", b.device, name)
    end
    assert.are.equal("cuda:0", m[1].weight.device)
    m:cpu()
    assert.are.equal(params["1.weight"], m[1].weight)
    assert.are.equal("cpu", m[1].weight.device)
    m:cuda(0)
    assert.are.equal("cuda:0", m[2].running_mean.device)
    m:to{ device = "cuda", dtype = "float64" }
    assert.are.equal("float64", m[1].weight.dtype)
    assert.are.equal("int64", m[2].num_batches_tracked.dtype)
  end)

  gpu_it("an optimizer made before model:to('cuda') updates the device parameters", function()
    local cpu, dev = net(), net()
    local ocpu = optim.SGD(cpu:parameters(), { lr = 0.1, momentum = 0.9 })
    local odev = optim.SGD(dev:parameters(), { lr = 0.1, momentum = 0.9 })
    dev:cuda()
    local x, t = lunet.randn(4, 3, 8, 8), lunet.tensor({ 1, 5, 10, 3 })
    for _ = 1, 2 do
      ocpu:zero_grad(); odev:zero_grad()
      nn.functional.cross_entropy(cpu(x), t):backward()
      nn.functional.cross_entropy(dev(x:cuda()), t:cuda()):backward()
      ocpu:step(); odev:step()
    end
    assert_models_agree(cpu, dev, "after 2 steps")
    assert.are.equal("cuda:0", odev.state[dev[1].weight].momentum_buffer.device)
  end)

  gpu_it("state dicts and checkpoints move between the devices", function()
    local cpu, dev = net(), net()
    dev:cuda()
    dev:train()
    dev(lunet.randn(4, 3, 8, 8, { device = "cuda" }))
    local sd = dev:state_dict()
    for k, t in pairs(sd) do
      if k ~= "_metadata" then assert.are.equal("cuda:0", t.device, k) end
    end
    cpu:load_state_dict(sd)
    assert_models_agree(cpu, dev, "CUDA state dict into a CPU model")
    local again = net():cuda()
    again:load_state_dict(cpu:state_dict())
    assert.are.equal("cuda:0", again[2].running_var.device)
    assert_models_agree(cpu, again, "CPU state dict into a CUDA model")
    local path = os.tmpname()
    assert.is_true(lunet.save(path, dev:state_dict()))
    local loaded = net()
    loaded:load_state_dict(lunet.load(path))
    os.remove(path)
    assert_models_agree(loaded, dev, "checkpoint of a CUDA model")
  end)

  cuda_it("layers and losses agree forward and backward", function()
    local x = lunet.randn(4, 3, 9, 9)
    local layers = {
      { "Linear", function() return nn.Linear(9, 5) end, lunet.randn(4, 7, 9) },
      { "Conv2d", function() return nn.Conv2d(3, 6, 3) end, x },
      { "Conv2d stride/padding/dilation/groups",
        function() return nn.Conv2d(3, 6, { 3, 2 }, { stride = 2, padding = { 1, 2 }, dilation = 2, groups = 3 }) end, x },
      { "Conv2d channels-last", function() return nn.Conv2d(3, 4, 3, { padding = "same" }) end,
        x:contiguous("channels_last") },
      { "ReLU", function() return nn.ReLU() end, x },
      { "MaxPool2d", function() return nn.MaxPool2d(2) end, x },
      { "MaxPool2d stride 1 padding 1", function() return nn.MaxPool2d(3, { stride = 1, padding = 1 }) end, x },
      { "AdaptiveAvgPool2d", function() return nn.AdaptiveAvgPool2d(4) end, x },
      { "Flatten", function() return nn.Flatten() end, x },
    }
    for _, l in ipairs(layers) do
      lunet.manual_seed(5)
      local mc = l[2]()
      lunet.manual_seed(5)
      local md = l[2]():to(DEV)
      local xc, xd = l[3]:clone():requires_grad_(true), l[3]:to(DEV):clone():requires_grad_(true)
      local yc, yd = mc(xc), md(xd)
      assert_agree(yc:detach(), yd:detach(), TOL, l[1] .. ": output")
      assert.are.same(yc:stride(), yd:stride(), l[1] .. ": the output's strides")
      local gy = lunet.randn(yc:size())
      yc:backward(gy)
      yd:backward(gy:to(DEV))
      assert_agree(xc.grad, xd.grad, TOL, l[1] .. ": input gradient")
      for name, p in mc:named_parameters() do
        assert_agree(p.grad, md[name].grad, TOL, l[1] .. ": grad of " .. name)
      end
    end
    local logits, target = lunet.randn(6, 10), lunet.tensor({ 1, 10, 3, 3, 7, 2 })
    local f = nn.functional
    local losses = {
      { "cross_entropy", function(a, t) return f.cross_entropy(a, t) end },
      { "cross_entropy sum, ignore_index", function(a, t)
          return f.cross_entropy(a, t, { reduction = "sum", ignore_index = 3 }) end },
      { "mse_loss", function(a) return f.mse_loss(a, a:detach() * 0.5 + 1) end },
      { "log_softmax", function(a) return f.log_softmax(a, 2):sum() end },
    }
    for _, l in ipairs(losses) do
      local ac, ad = logits:clone():requires_grad_(true), logits:to(DEV):clone():requires_grad_(true)
      local lc, ld = l[2](ac, target), l[2](ad, target:to(DEV))
      assert_agree(lc:detach(), ld:detach(), TOL, l[1])
      lc:backward()
      ld:backward()
      assert_agree(ac.grad, ad.grad, TOL, l[1] .. ": gradient")
    end
  end)

  cuda_it("training steps with SGD and Adam give the CPU's parameters", function()
    for _, make_opt in ipairs({
      function(ps) return optim.SGD(ps, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 }) end,
      function(ps) return optim.Adam(ps, { lr = 1e-3 }) end,
    }) do
      local cpu, dev = pair()
      local ocpu, odev = make_opt(cpu:parameters()), make_opt(dev:parameters())
      lunet.manual_seed(2)
      for step = 1, 3 do
        local x = lunet.randn(8, 3, 8, 8)
        local t = (lunet.rand(8) * 10):long() + 1
        ocpu:zero_grad(); odev:zero_grad()
        local lc = nn.functional.cross_entropy(cpu(x), t)
        local ld = nn.functional.cross_entropy(dev(x:to(DEV)), t:to(DEV))
        assert_agree(lc:detach(), ld:detach(), TOL, "loss at step " .. step)
        lc:backward(); ld:backward()
        assert_models_agree(cpu, dev, "gradients at step " .. step, true)
        ocpu:step(); odev:step()
      end
      assert_models_agree(cpu, dev, "after 3 steps")
      cpu:eval(); dev:eval()
      local x = lunet.randn(5, 3, 8, 8)
      assert_agree(cpu(x), dev(x:to(DEV)), TOL, "eval")
    end
  end)
end)
