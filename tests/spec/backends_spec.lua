-- lunet.backends.cudnn: the switch of the cuDNN BatchNorm path, readable
-- and assignable like torch.backends.cudnn.enabled, and what the build and
-- the machine offer. The cuDNN path itself needs a GPU: its tests are in
-- the CUDA specs, which say "skipped: no CUDA device" without one.
local lunet = require("lunet")
local nn = require("lunet.nn")
local helpers = require("tests.spec.helpers")

local cudnn = lunet.backends.cudnn
local with_enabled = helpers.with_cudnn

describe("lunet.backends.cudnn", function()
  it("is enabled by default and can be switched off and on", function()
    assert.is_true(cudnn.enabled)
    with_enabled(false, function()
      assert.is_false(cudnn.enabled)
      assert.is_false(lunet.backends.cudnn.enabled)
    end)
    assert.is_true(cudnn.enabled)
    cudnn.enabled = true
    assert.is_true(cudnn.enabled)
  end)

  it("refuses anything but a boolean for enabled", function()
    for _, v in ipairs({ 1, 0, "false", {} }) do
      local ok, err = pcall(function() cudnn.enabled = v end)
      assert.is_false(ok)
      assert.truthy(err:find("lunet.backends.cudnn.enabled must be a boolean (got " .. type(v) .. ")",
                             1, true), err)
    end
    local ok, err = pcall(function() cudnn.enabled = nil end)
    assert.is_false(ok)
    assert.truthy(err:find("must be a boolean (got nil)", 1, true), err)
    assert.is_true(cudnn.enabled)
  end)

  it("refuses settings it does not have, so a misspelt one is not lost", function()
    local ok, err = pcall(function() cudnn.enable = false end)
    assert.is_false(ok)
    assert.truthy(err:find("lunet.backends.cudnn has no setting 'enable'", 1, true), err)
    assert.is_nil(rawget(cudnn, "enable"))
    assert.is_nil(cudnn.enable)
    assert.is_true(cudnn.enabled)
  end)

  it("is available only with a CUDA device, and has a version when built with cuDNN", function()
    local available, version = cudnn.is_available(), cudnn.version()
    assert.is_boolean(available)
    if available then
      assert.is_true(lunet.cuda.is_available())
      assert.is_not_nil(version)
    end
    if version ~= nil then
      assert.equal(math.type(version), "integer")
      assert.is_true(version >= 90000, "cuDNN 9 or newer is required, got " .. version)
    end
    -- a second call gives the same answers
    assert.equal(available, cudnn.is_available())
    assert.equal(version, cudnn.version())
  end)

  it("changes nothing for CPU tensors", function()
    lunet.manual_seed(7)
    local x = lunet.randn(4, 3, 5, 5)
    local function run()
      local bn = nn.BatchNorm2d(3)
      local y = bn(x)
      return y, bn.running_mean, bn.running_var
    end
    local y1, m1, v1 = run()
    with_enabled(false, function()
      local y2, m2, v2 = run()
      assert.is_true(lunet.allclose(y1, y2, { rtol = 0, atol = 0 }))
      assert.is_true(lunet.allclose(m1, m2, { rtol = 0, atol = 0 }))
      assert.is_true(lunet.allclose(v1, v2, { rtol = 0, atol = 0 }))
    end)
  end)
end)
