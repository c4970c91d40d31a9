-- nn.SyncBatchNorm and nn.DistributedDataParallel in a plain process
-- (dist not initialized): SyncBatchNorm is then a BatchNorm (PyTorch's
-- fallback) for any input of at least 2 dims; construction, options,
-- printing, state dicts, errors, and convert_sync_batchnorm (types, shared
-- tensors, modes, names). The synchronized behaviour is tested under
-- mpirun by tests/dist/syncbn.lua, syncbn_mismatch.lua and ddp.lua.
local lunet = require("lunet")
local nn = require("lunet.nn")

local helpers = require("tests.spec.helpers")
local err = helpers.err

local f64 = { dtype = "float64" }

local function assert_close(a, b, tol)
  assert.are.same(b:size(), a:size())
  if b:numel() > 0 then
    assert.is_true((a - b):abs():max():item() <= (tol or 1e-12), "values differ")
  end
end

describe("nn.SyncBatchNorm", function()
  it("has BatchNorm's slots, attributes, defaults and printing", function()
    local m = nn.SyncBatchNorm(4)
    assert.are.equal("SyncBatchNorm(4, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true)", tostring(m))
    assert.are.equal("SyncBatchNorm", m:type_name())
    assert.are.same({ 1, 1, 1, 1 }, m.weight:tolist())
    assert.are.same({ 1, 1, 1, 1 }, m.running_var:tolist())
    assert.are.equal(0, m.num_batches_tracked:item())
    assert.is_nil(m.process_group)
    local names = {}
    for k in pairs(m:state_dict()) do names[#names + 1] = k end
    assert.are.same({ "weight", "bias", "running_mean", "running_var",
                      "num_batches_tracked", "_metadata" }, names)
    assert.are.equal(2, m:state_dict()._metadata[""].version)
    local o = nn.SyncBatchNorm(3, { eps = 1e-3, momentum = false, affine = false,
                                    track_running_stats = false, dtype = "float64" })
    assert.are.equal("SyncBatchNorm(3, eps=0.001, momentum=false, affine=false, "
                     .. "track_running_stats=false)", tostring(o))
    assert.is_nil(o.weight)
    assert.is_nil(o.running_mean)
  end)

  it("checks its arguments with BatchNorm's messages", function()
    assert.matches("bad argument #1 to 'SyncBatchNorm' %(number expected, got string%)",
                   err(nn.SyncBatchNorm, "a"))
    assert.matches("bad argument #2 to 'SyncBatchNorm' %(unknown option 'foo'%)",
                   err(nn.SyncBatchNorm, 3, { foo = 1 }))
    assert.matches("option 'process_group': process group expected, got number",
                   err(nn.SyncBatchNorm, 3, { process_group = 5 }))
    local m = nn.SyncBatchNorm(3)
    assert.matches("expected at least 2D input %(got 1D input%)", err(m, lunet.randn(3)))
    assert.matches("SyncBatchNorm number of input channels should be non%-zero",
                   err(nn.SyncBatchNorm(0), lunet.randn(2, 0)))
    assert.matches("SyncBatchNorm expected input with 3 channels %(num_features%), got 4",
                   err(m, lunet.randn(2, 4)))
    assert.matches("Expected more than 1 value per channel when training",
                   err(m, lunet.randn(1, 3)))
    assert.are.equal(0, m.num_batches_tracked:item())   -- failed steps do not count
    assert.matches("process group expected, got string",
                   err(nn.SyncBatchNorm.convert_sync_batchnorm, m, "world"))
    assert.matches("bad argument #1 to 'convert_sync_batchnorm' %(module expected, got number%)",
                   err(nn.SyncBatchNorm.convert_sync_batchnorm, 5))
    assert.matches("bad argument #3 to 'SyncBatchNorm' %(no more arguments expected%)",
                   err(nn.SyncBatchNorm, 3, {}, 7))
    assert.matches("SyncBatchNorm.forward expects 1 input, got 2",
                   err(m, lunet.randn(2, 3), lunet.randn(2, 3)))
  end)

  it("is BatchNorm without a process group: any rank from 2D, grads, eval", function()
    for _, shape in ipairs{ { 5, 3 }, { 4, 3, 6 }, { 2, 3, 4, 5 }, { 2, 3, 2, 3, 2 },
                            { 2, 3, 2, 2, 2, 2 } } do
      lunet.manual_seed(5)
      local m, ref = nn.SyncBatchNorm(3, f64), nn.BatchNorm1d(3, f64)
      local x = lunet.randn(shape, f64)
      local flat = x:transpose(1, 2):reshape(3, -1):t()   -- (values, C) for BatchNorm1d
      local xs, xr = x:clone():requires_grad_(true), flat:clone():requires_grad_(true)
      local y, yr = m(xs), ref(xr)
      assert_close(y:transpose(1, 2):reshape(3, -1):t(), yr)
      y:pow(2):sum():backward()
      yr:pow(2):sum():backward()
      assert_close(xs.grad:transpose(1, 2):reshape(3, -1):t(), xr.grad, 1e-10)
      assert_close(m.weight.grad, ref.weight.grad, 1e-10)
      assert_close(m.running_var, ref.running_var)
      m:eval()
      ref:eval()
      assert_close(m(x):transpose(1, 2):reshape(3, -1):t(), ref(flat))
    end
  end)

  it("channels-last input keeps its layout", function()
    local m = nn.SyncBatchNorm(3)
    local y = m(lunet.randn(2, 3, 4, 5):contiguous("channels_last"))
    assert.is_true(y:is_contiguous("channels_last"))
  end)

  it("loads a BatchNorm2d's state dict and resets like BatchNorm", function()
    local bn = nn.BatchNorm2d(3)
    bn(lunet.randn(4, 3, 2, 2))
    local m = nn.SyncBatchNorm(3)
    m:load_state_dict(bn:state_dict())
    assert.are.same(bn.running_mean:tolist(), m.running_mean:tolist())
    assert.are.equal(1, m.num_batches_tracked:item())
    m:reset_running_stats()
    assert.are.same({ 0, 0, 0 }, m.running_mean:tolist())
    assert.are.equal(0, m.num_batches_tracked:item())
  end)
end)

describe("nn.SyncBatchNorm.convert_sync_batchnorm", function()
  it("returns a new SyncBatchNorm for a BatchNorm, sharing its tensors and mode", function()
    local bn = nn.BatchNorm2d(3, { eps = 1e-3, momentum = false, dtype = "float64" })
    bn:eval()
    local m = nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert.are_not.equal(bn, m)
    assert.are.equal("SyncBatchNorm", m:type_name())
    assert.are.equal("BatchNorm2d", bn:type_name())
    for _, k in ipairs{ "weight", "bias", "running_mean", "running_var", "num_batches_tracked" } do
      assert.are.equal(bn[k], m[k], k .. " is the same tensor")
    end
    assert.are.equal(false, m.training)
    assert.are.equal(1e-3, m.eps)
    assert.are.equal(false, m.momentum)
    m:train()
    m(lunet.randn(4, 3, 2, 2, f64))
    assert.are.equal(1, bn.num_batches_tracked:item())
    local a = nn.SyncBatchNorm.convert_sync_batchnorm(
      nn.BatchNorm1d(2, { affine = false, track_running_stats = false }))
    assert.are.equal("SyncBatchNorm(2, eps=1e-05, momentum=0.1, affine=false, "
                     .. "track_running_stats=false)", tostring(a))
  end)

  it("converts a tree in place, keeping child names, other modules and modes", function()
    local Net = nn.Module:extend("ConvertNet")
    function Net:__init()
      self.first = nn.BatchNorm1d(4)
      self.body = nn.Sequential(nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm3d(4)))
    end
    local net = Net()
    net.body[2][1]:eval()
    local w = net.body[1].weight
    assert.are.equal(net, nn.SyncBatchNorm.convert_sync_batchnorm(net))
    local types = {}
    for name, m in net:named_modules() do types[#types + 1] = name .. "=" .. m:type_name() end
    assert.are.same({ "=ConvertNet", "first=SyncBatchNorm", "body=Sequential",
                      "body.1=SyncBatchNorm", "body.2=Sequential", "body.2.1=SyncBatchNorm" },
                    types)
    assert.are.equal(w, net.body[1].weight)
    assert.are.equal(false, net.body[2][1].training)
    assert.are.equal(true, net.first.training)
    local other = nn.Sequential()
    assert.are.equal(other, nn.SyncBatchNorm.convert_sync_batchnorm(other))
  end)
end)

describe("nn.DistributedDataParallel", function()
  it("needs dist.init (it broadcasts the model's state at construction)", function()
    assert.matches("Default process group has not been initialized",
                   err(nn.DistributedDataParallel, nn.SyncBatchNorm(2)))
    assert.matches("lunet.Module expected, got number", err(nn.DistributedDataParallel, 1))
    assert.matches("unknown option 'groups'",
                   err(nn.DistributedDataParallel, nn.SyncBatchNorm(2), { groups = 1 }))
  end)
end)
