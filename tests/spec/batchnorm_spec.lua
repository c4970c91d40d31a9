-- The BatchNorm family from Lua against PyTorch's own results
-- (tests/fixtures/batchnorm, written by scripts/gen_bn_fixtures.py; the
-- fixture files say what each case holds): training steps and eval with
-- gradients for every rank, dtype and memory format, momentum=false,
-- affine=false, track_running_stats=false, the functional form, empty
-- batches, NaN, accuracy far from zero, state dicts of every version, lazy
-- modules; then errors, printing, layouts, gradcheck and frozen BN.
local lunet = require("lunet")
local nn = require("lunet.nn")

local helpers = require("tests.spec.helpers")
local err, f32, f64 = helpers.err, helpers.f32, helpers.f64
local assert_close, case_names, max_diff = helpers.assert_close, helpers.case_names,
                                           helpers.max_diff

local fixture = helpers.fixtures("tests/fixtures/batchnorm/")

local parse, TOL = helpers.parse_case, helpers.bn_tol
local set_affine = helpers.set_affine

local function options_of(c)
  return { eps = c.eps, momentum = c.momentum ~= "none" and c.momentum,
           affine = c.affine, track_running_stats = c.track, dtype = c.dtype }
end

-- ---- against PyTorch ----

describe("BatchNorm modules against PyTorch", function()
  local T, meta = fixture("modules")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      local tol = TOL[c.dtype]
      local x1 = T[name .. ".x.1"]
      local bn = nn["BatchNorm" .. c.dims .. "d"](x1:size(2), options_of(c))
      if c.affine then set_affine(bn, T[name .. ".weight"], T[name .. ".bias"]) end
      local steps = {}
      for k = 1, c.steps do steps[#steps + 1] = tostring(k) end
      steps[#steps + 1] = "e"
      for _, k in ipairs(steps) do
        local at = name .. " step " .. k
        bn:train(k ~= "e")
        bn:zero_grad()
        local x = T[name .. ".x." .. k]
        if c.format == "channels_last" then x = x:contiguous("channels_last") end
        x:requires_grad_(true)
        local y = bn(x)
        if c.format == "channels_last" then
          assert.is_true(y:is_contiguous("channels_last"), at .. ": output format")
        else
          assert.is_true(y:is_contiguous(), at .. ": output format")
        end
        y:backward(T[name .. ".gy." .. k])
        assert_close(T[name .. ".y." .. k], y:detach(), tol, at .. ": output")
        assert_close(T[name .. ".gx." .. k], x.grad, tol, at .. ": input gradient")
        if c.affine then
          assert_close(T[name .. ".gw." .. k], bn.weight.grad, tol, at .. ": weight gradient")
          assert_close(T[name .. ".gb." .. k], bn.bias.grad, tol, at .. ": bias gradient")
        else
          assert.is_nil(bn.weight)
          assert.is_nil(bn.bias)
        end
        if c.track then
          assert_close(T[name .. ".rm." .. k], bn.running_mean, tol, at .. ": running_mean")
          assert_close(T[name .. ".rv." .. k], bn.running_var, tol, at .. ": running_var")
          assert.are.equal(T[name .. ".nbt." .. k]:item(), bn.num_batches_tracked:item())
        else
          assert.is_nil(bn.running_mean)
          assert.is_nil(bn.running_var)
          assert.is_nil(bn.num_batches_tracked)
        end
      end
    end)
  end
end)

describe("nn.functional.batch_norm against PyTorch", function()
  local T, meta = fixture("functional")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      local rm, rv = T[name .. ".rm"], T[name .. ".rv"]
      if rm then rm, rv = rm:clone(), rv:clone() end
      local y = nn.functional.batch_norm(T[name .. ".x"], rm, rv, T[name .. ".w"],
                                         T[name .. ".b"], c.training, c.momentum, c.eps)
      assert_close(T[name .. ".y"], y, TOL.float32, "output")
      if rm then
        assert_close(T[name .. ".rm_after"], rm, TOL.float32, "running_mean")
        assert_close(T[name .. ".rv_after"], rv, TOL.float32, "running_var")
      end
    end)
  end

  it("defaults to eval mode, momentum 0.1 and eps 1e-5", function()
    local T1 = T
    local y = nn.functional.batch_norm(T1["eval.x"], T1["eval.rm"], T1["eval.rv"],
                                       T1["eval.w"], T1["eval.b"])
    assert_close(T1["eval.y"], y, TOL.float32, "output")
    local rm, rv = T1["train.rm"]:clone(), T1["train.rv"]:clone()
    nn.functional.batch_norm(T1["train.x"], rm, rv, T1["train.w"], T1["train.b"], true)
    assert_close(T1["train.rm_after"], rm, TOL.float32, "running_mean")
  end)

  it("updates running statistics held in strided views, and nothing beside them", function()
    local x = lunet.randn(8, 6)
    for _, dt in ipairs({ "float32", "float64", "float16" }) do
      local rm0, rv0 = lunet.randn(6):to(dt), (lunet.rand(6) + 0.5):to(dt)
      local rm, rv = rm0:clone(), rv0:clone()
      nn.functional.batch_norm(x:to(dt), rm, rv, nil, nil, true, 0.3)
      local columns = lunet.full({ 6, 2 }, 7, { dtype = dt })
      local srm = columns:select(2, 1)               -- one stride of 2
      local grid = lunet.full({ 3, 2 }, 7, { dtype = dt }):t()   -- no single stride
      srm:copy_(rm0)
      grid:copy_(rv0:view(2, 3))
      nn.functional.batch_norm(x:to(dt), srm, grid, nil, nil, true, 0.3)
      assert.are.same(rm:tolist(), srm:tolist(), dt)
      assert.are.same(rv:tolist(), grid:reshape(6):tolist(), dt)
      assert.are.same({ 7, 7, 7, 7, 7, 7 }, columns:select(2, 2):tolist(), dt)
    end
  end)

  it("reads expanded per-channel tensors, and refuses to write running statistics into them",
     function()
    local x = lunet.randn(4, 1000)
    local function expanded(v) return lunet.full({ 1 }, v, { dtype = "float32" }):expand(1000) end
    local w, b, rm, rv = expanded(2), expanded(0.5), expanded(0.25), expanded(4)
    local dense = function(t) return t:contiguous() end
    assert.are.same(nn.functional.batch_norm(x, nil, nil, dense(w), dense(b), true):tolist(),
                    nn.functional.batch_norm(x, nil, nil, w, b, true):tolist())
    assert.are.same(nn.functional.batch_norm(x, dense(rm), dense(rv), w, b):tolist(),
                    nn.functional.batch_norm(x, rm, rv, w, b):tolist())
    for _, stats in ipairs({ { rm, lunet.ones(1000) }, { lunet.zeros(1000), rv },
                             { lunet.full({ 1, 1 }, 3, { dtype = "float32" }):expand(500, 2),
                               lunet.ones(1000) } }) do
      assert.matches("more than one element of the written%-to tensor refers to a single "
                     .. "memory location", err(nn.functional.batch_norm, x, stats[1], stats[2],
                                               nil, nil, true))
    end
    assert.are.same({ 0.25 }, rm:contiguous():view(-1):narrow(1, 1, 1):tolist())
    local bn = nn.BatchNorm1d(1000)
    bn.running_var = expanded(1)
    assert.matches("refers to a single memory location", err(bn, x))
    assert.are.equal(0, bn.num_batches_tracked:item())
  end)

  it("needs the running statistics in eval mode", function()
    assert.matches("running_mean must be defined in evaluation mode",
                   err(nn.functional.batch_norm, lunet.randn(4, 3)))
  end)
end)

describe("corner cases against PyTorch", function()
  local T, meta = fixture("special")

  it("an empty batch gives an empty output and leaves the statistics alone", function()
    local bn = nn.BatchNorm2d(3)
    bn.running_mean:fill_(0.5)
    local x = lunet.randn(0, 3, 2, 2):requires_grad_(true)
    local y = bn(x)
    assert.are.same({ 0, 3, 2, 2 }, y:size())
    assert_close(T["empty.rm"], bn.running_mean, TOL.float32, "running_mean")
    assert_close(T["empty.rv"], bn.running_var, TOL.float32, "running_var")
    assert.are.equal(T["empty.nbt"]:item(), bn.num_batches_tracked:item())
    y:sum():backward()
    assert.are.same({ 0, 3, 2, 2 }, x.grad:size())
    assert.are.same({ 0, 0, 0 }, bn.weight.grad:tolist())
    assert.are.same({ 0, 0, 0 }, bn.bias.grad:tolist())
    bn:eval()
    assert.are.same({ 0, 3, 2, 2 }, bn(lunet.randn(0, 3, 2, 2)):size())
    local cl = bn(lunet.randn(0, 3, 2, 2):contiguous("channels_last"))
    assert.are.same({ 0, 3, 2, 2 }, cl:size())
  end)

  it("NaN in one channel makes that channel NaN and leaves the others", function()
    local bn = nn.BatchNorm2d(3)
    local y = bn(T["nan.x"])
    local ref = T["nan.y"]
    for ch = 1, 3 do
      local got, want = y:select(2, ch), ref:select(2, ch)
      if ch == 2 then
        local nan = true
        for _, v in ipairs(got:reshape(-1):tolist()) do nan = nan and v ~= v end
        assert.is_true(nan, "channel 2 is all NaN")
      else
        assert_close(want, got, TOL.float32, "channel " .. ch)
      end
    end
    local rm, rv = bn.running_mean:tolist(), bn.running_var:tolist()
    assert.is_true(rm[2] ~= rm[2] and rv[2] ~= rv[2])
    local rm_ref, rv_ref = T["nan.rm"]:tolist(), T["nan.rv"]:tolist()
    for _, ch in ipairs({ 1, 3 }) do
      assert(math.abs(rm[ch] - rm_ref[ch]) < 1e-6 and math.abs(rv[ch] - rv_ref[ch]) < 1e-5)
    end
  end)

  it("gives a channel with infinities an infinite running mean, as its sum", function()
    -- PyTorch (CPU): running_mean {inf, -inf, finite}, running_var {nan, nan,
    -- finite}, the first two channels' outputs NaN. Channel 1 is all inf,
    -- channel 2 starts each image with -inf (a statistics block's first
    -- value); planes of 128x128 take several blocks, (4,3) one.
    for _, shape in ipairs({ { 2, 3, 128, 128 }, { 4, 3 } }) do
      local x = lunet.randn(table.unpack(shape))
      x:select(2, 1):fill_(math.huge)
      for n = 1, 2 do
        local first = x:select(1, n):select(1, 2)
        first:reshape(-1):narrow(1, 1, 1):fill_(-math.huge)
      end
      local bn = #shape == 4 and nn.BatchNorm2d(3) or nn.BatchNorm1d(3)
      local y = bn(x)
      local rm, rv = bn.running_mean:tolist(), bn.running_var:tolist()
      assert.are.same({ math.huge, -math.huge }, { rm[1], rm[2] })
      assert.is_true(rv[1] ~= rv[1] and rv[2] ~= rv[2], "the variances are NaN")
      assert.is_true(math.abs(rm[3]) < 0.1 and math.abs(rv[3] - 1) < 0.2)
      for ch = 1, 3 do
        local nan = true
        for _, v in ipairs(y:select(2, ch):reshape(-1):tolist()) do nan = nan and v ~= v end
        assert.are.equal(ch < 3, nan, "channel " .. ch .. "'s output")
      end
    end
  end)

  it("keeps NaN running statistics with momentum 1 and a first cumulative step", function()
    -- PyTorch computes (1 - m) * r + m * batch: 0 * NaN is NaN for both buffers
    local x = lunet.tensor({ { 1 }, { 2 } }, { dtype = "float32" })
    for _, m in ipairs({ 1, false }) do
      local bn = nn.BatchNorm1d(1, { momentum = m })
      bn.running_mean:fill_(0 / 0)
      bn.running_var:fill_(0 / 0)
      bn(x)
      local rm, rv = bn.running_mean:item(), bn.running_var:item()
      assert.is_true(rm ~= rm and rv ~= rv, "momentum " .. tostring(m))
    end
    local bn = nn.BatchNorm1d(1, { momentum = 1 })
    bn.running_mean:fill_(-math.huge)
    bn(x)
    assert.is_true(bn.running_mean:item() ~= bn.running_mean:item())
    assert.are.equal(0.5, bn.running_var:item())   -- a finite one: the batch's alone
  end)

  it("stays accurate for float32 data far from zero (1e4 + 0.01 * randn)", function()
    local x, y64 = T["accuracy.x"], T["accuracy.y64"]
    local y = nn.BatchNorm2d(2)(x)
    local d = max_diff(y64, y)
    assert(d < 1e-3, ("max error %g against the float64 result (PyTorch's: %s)"):format(
      d, meta["accuracy.pytorch_float32_max_error"]))
    local yf = nn.functional.batch_norm(x, nil, nil, nil, nil, true)
    assert(max_diff(y64, yf) < 1e-3)
  end)

  it("trains with N=1 when there is more than one value per channel", function()
    local bn = nn.BatchNorm2d(3)
    local y = bn(lunet.randn(1, 3, 4, 4))
    assert.are.same({ 1, 3, 4, 4 }, y:size())
    assert.are.equal(1, bn.num_batches_tracked:item())
  end)

  for dims = 1, 3 do
    it(("LazyBatchNorm%dd takes num_features from its first input"):format(dims), function()
      local p = ("lazy%dd."):format(dims)
      local bn = nn["LazyBatchNorm" .. dims .. "d"]()
      assert.are.equal(("LazyBatchNorm%dd(0, eps=1e-05, momentum=0.1, affine=true, "
                        .. "track_running_stats=true)"):format(dims), tostring(bn))
      assert.are.equal("LazyBatchNorm" .. dims .. "d", bn.__name)
      assert.is_nil(bn.weight)
      local y = bn(T[p .. "x"])
      assert_close(T[p .. "y"], y:detach(), TOL.float32, "output")
      assert_close(T[p .. "rm"], bn.running_mean, TOL.float32, "running_mean")
      assert_close(T[p .. "rv"], bn.running_var, TOL.float32, "running_var")
      assert.are.equal(4, bn.num_features)
      assert.are.equal(1, bn.num_batches_tracked:item())
      assert.are.equal(("BatchNorm%dd(4, eps=1e-05, momentum=0.1, affine=true, "
                        .. "track_running_stats=true)"):format(dims), tostring(bn))
      assert.are.equal("BatchNorm" .. dims .. "d", bn:type_name())
      assert.are.equal("BatchNorm" .. dims .. "d", bn.__name)
      assert.is_true(bn.weight.requires_grad)
      local names = {}
      for n in bn:named_parameters() do names[#names + 1] = n end
      assert.are.same({ "weight", "bias" }, names)
    end)
  end
end)

-- ---- state dicts ----

local Net = nn.Module:extend("BnNet")
function Net:__init(lazy)
  nn.Module.__init(self)
  self.bn = lazy and nn.LazyBatchNorm2d() or nn.BatchNorm2d(3)
end
function Net:forward(x) return self.bn(x) end

describe("BatchNorm state dicts", function()
  it("are version 2 with the keys in PyTorch's order", function()
    local sd = nn.BatchNorm2d(4):state_dict()
    assert.are.same({ "weight", "bias", "running_mean", "running_var", "num_batches_tracked" },
                    helpers.keys_of(sd))
    assert.are.equal(2, sd._metadata[""].version)
    assert.are.same({ "running_mean", "running_var", "num_batches_tracked" },
                    helpers.keys_of(nn.BatchNorm1d(4, { affine = false }):state_dict()))
    assert.are.same({ "weight", "bias" },
                    helpers.keys_of(nn.BatchNorm3d(4, { track_running_stats = false }):state_dict()))
    local net = Net()
    local nsd = net:state_dict()
    assert.are.equal(1, nsd._metadata[""].version)
    assert.are.equal(2, nsd._metadata.bn.version)
    assert.are.equal("int64", nsd["bn.num_batches_tracked"].dtype)
    assert.are.same({}, nsd["bn.num_batches_tracked"]:size())
  end)

  it("load PyTorch's version-2 state dict", function()
    local sd = fixture("sd_v2")
    assert.are.equal(2, sd._metadata.bn.version)
    local net = Net()
    local r = net:load_state_dict(sd)
    assert.are.same({}, r.missing_keys)
    assert.are.same({}, r.unexpected_keys)
    for _, k in ipairs({ "weight", "bias", "running_mean", "running_var" }) do
      assert_close(sd["bn." .. k], net.bn[k], TOL.float32, k)
    end
    assert.are.equal(2, net.bn.num_batches_tracked:item())
  end)

  it("load a version-1 or unversioned state dict with the counter at 0", function()
    for _, file in ipairs({ "sd_v1", "sd_noversion" }) do
      local sd = fixture(file)
      assert.is_nil(sd["bn.num_batches_tracked"])
      local net = Net()
      net.bn.num_batches_tracked:fill_(0)
      net:load_state_dict(sd)
      assert.are.equal(0, net.bn.num_batches_tracked:item(), file)
      assert_close(sd["bn.running_var"], net.bn.running_var, TOL.float32, file)
      -- as PyTorch, a module that counted already keeps its counter
      local trained = Net()
      trained(lunet.randn(2, 3, 2, 2))
      trained:load_state_dict(sd)
      assert.are.equal(1, trained.bn.num_batches_tracked:item(), file)
    end
    -- the migration only applies when the module tracks statistics
    local sd = fixture("sd_v1")
    local plain = Net()
    plain.bn = nn.BatchNorm2d(3, { track_running_stats = false })
    local r = plain:load_state_dict(sd, { strict = false })
    assert.are.same({ "bn.running_mean", "bn.running_var" }, r.unexpected_keys)
    -- keys are listed in the state dict's order (a module's), as PyTorch;
    -- keys added to it by hand come after them, sorted
    sd = nn.BatchNorm1d(2):state_dict()
    sd.zeta, sd.alpha = lunet.ones(1), lunet.ones(1)
    local msg = err(function()
      nn.BatchNorm1d(2, { track_running_stats = false }):load_state_dict(sd)
    end)
    assert.matches('Unexpected key%(s%) in state_dict: "running_mean", "running_var", '
                   .. '"num_batches_tracked", "alpha", "zeta"%.', msg)
  end)

  it("report a version-2 state dict without num_batches_tracked", function()
    local sd = fixture("sd_v2")
    sd["bn.num_batches_tracked"] = nil
    local msg = err(function() Net():load_state_dict(sd) end)
    assert.matches('Missing key%(s%) in state_dict: "bn.num_batches_tracked"', msg)
    local r = Net():load_state_dict(sd, { strict = false })
    assert.are.same({ "bn.num_batches_tracked" }, r.missing_keys)
  end)

  it("round-trip through lunet.save and lunet.load", function()
    local bn = nn.BatchNorm1d(3, { momentum = false })
    bn(lunet.randn(4, 3))
    bn(lunet.randn(4, 3))
    local path = os.tmpname()
    assert(lunet.save(path, bn:state_dict()))
    local sd = lunet.load(path)
    os.remove(path)
    assert.are.equal(2, sd._metadata[""].version)
    local other = nn.BatchNorm1d(3)
    other:load_state_dict(sd)
    assert.are.equal(2, other.num_batches_tracked:item())
    assert.are.same(bn.running_mean:tolist(), other.running_mean:tolist())
  end)

  it("give a lazy module its num_features and final type", function()
    local sd = fixture("sd_v2")
    local net = Net(true)
    assert.are.equal("LazyBatchNorm2d", net.bn:type_name())
    net:load_state_dict(sd)
    assert.are.equal("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true)", tostring(net.bn))
    assert.are.equal("BatchNorm2d", net.bn.__name)
    assert.are.equal(3, net.bn.num_features)
    assert_close(sd["bn.weight"], net.bn.weight, TOL.float32, "weight")
    assert_close(sd["bn.running_mean"], net.bn.running_mean, TOL.float32, "running_mean")
    assert.are.equal(2, net.bn.num_batches_tracked:item())
    net:eval()
    assert.are.same({ 2, 3, 2, 2 }, net(lunet.randn(2, 3, 2, 2)):size())
  end)

  it("refuse per-channel values of different lengths for a lazy module", function()
    local sd = fixture("sd_v2")
    sd["bn.bias"] = lunet.zeros(4)
    local net = Net(true)
    assert.matches("size mismatch for bn.bias: 4 elements, but bn.weight has 3",
                   err(function() net:load_state_dict(sd) end))
    sd["bn.bias"] = lunet.zeros(3, 1)
    assert.matches("size mismatch for bn.bias: LazyBatchNorm2d needs a 1%-D tensor, got 2 dims",
                   err(function() net:load_state_dict(sd) end))
    assert.are.equal("LazyBatchNorm2d", net.bn:type_name())
    assert.is_nil(net.bn.weight)
  end)

  it("let a partly loaded lazy module initialise the rest from its input", function()
    local sd = fixture("sd_v2")
    sd["bn.weight"], sd["bn.bias"] = nil, nil
    local net = Net(true)
    local r = net:load_state_dict(sd, { strict = false })
    assert.are.same({ "bn.weight", "bn.bias" }, r.missing_keys)
    assert.are.equal("LazyBatchNorm2d", net.bn:type_name())
    assert.matches("running_mean should contain 4 elements not 3",
                   err(function() return net(lunet.randn(2, 4, 2, 2)) end))
    net:eval()
    net(lunet.randn(2, 3, 2, 2))
    assert.are.equal("BatchNorm2d", net.bn:type_name())
    assert.are.same({ 1, 1, 1 }, net.bn.weight:tolist())
    assert.are.same({ 0, 0, 0 }, net.bn.bias:tolist())
    assert_close(sd["bn.running_mean"], net.bn.running_mean, TOL.float32, "running_mean kept")
    assert.are.equal(2, net.bn.num_batches_tracked:item())
  end)
end)

-- ---- the Lua API ----

describe("BatchNorm construction", function()
  it("has PyTorch's defaults", function()
    local bn = nn.BatchNorm2d(5)
    assert.are.same({ 1, 1, 1, 1, 1 }, bn.weight:tolist())
    assert.are.same({ 0, 0, 0, 0, 0 }, bn.bias:tolist())
    assert.are.same({ 0, 0, 0, 0, 0 }, bn.running_mean:tolist())
    assert.are.same({ 1, 1, 1, 1, 1 }, bn.running_var:tolist())
    assert.are.equal(0, bn.num_batches_tracked:item())
    assert.are.equal("int64", bn.num_batches_tracked.dtype)
    assert.are.equal(0, bn.num_batches_tracked:dim())
    assert.is_true(bn.weight.requires_grad and bn.bias.requires_grad)
    assert.is_false(bn.running_mean.requires_grad)
    assert.are.equal("float32", bn.weight.dtype)
    assert.are.equal(5, bn.num_features)
    assert.are.equal(1e-5, bn.eps)
    assert.are.equal(0.1, bn.momentum)
    assert.is_true(bn.affine and bn.track_running_stats and bn.training)
    assert.are.equal(2, #bn:parameters())
    assert.are.equal(3, #bn:buffers())
  end)

  it("takes options", function()
    local bn = nn.BatchNorm1d(3, { eps = 1e-3, momentum = false, affine = false,
                                   track_running_stats = false, dtype = "float64",
                                   device = "cpu" })
    assert.are.equal(1e-3, bn.eps)
    assert.is_false(bn.momentum)
    assert.is_false(bn.affine)
    assert.is_false(bn.track_running_stats)
    assert.is_nil(bn.weight)
    assert.is_nil(bn.running_mean)
    assert.is_nil(bn.num_batches_tracked)
    local d = nn.BatchNorm3d(2, { dtype = "float64" })
    assert.are.equal("float64", d.weight.dtype)
    assert.are.equal("float64", d.running_var.dtype)
    assert.are.equal("int64", d.num_batches_tracked.dtype)
    local h = nn.LazyBatchNorm2d({ dtype = "float64", momentum = 0.3 })
    h(lunet.randn(2, 3, 2, 2, { dtype = "float64" }))
    assert.are.equal("float64", h.weight.dtype)
    assert.are.equal(0.3, h.momentum)
  end)

  it("rejects bad arguments, naming the argument or the option", function()
    assert.matches("bad argument #1 to 'BatchNorm2d' %(number expected, got no value%)",
                   err(function() return nn.BatchNorm2d() end))
    assert.matches("bad argument #2 to 'BatchNorm2d' %(unknown option 'momentom'%)",
                   err(function() return nn.BatchNorm2d(3, { momentom = 0.1 }) end))
    assert.matches("option 'momentum': number or false expected, got boolean",
                   err(function() return nn.BatchNorm2d(3, { momentum = true }) end))
    assert.matches("option 'eps': number expected, got string",
                   err(function() return nn.BatchNorm1d(3, { eps = "1" }) end))
    assert.matches("option 'affine': boolean expected, got number",
                   err(function() return nn.BatchNorm3d(3, { affine = 1 }) end))
    assert.matches("bad argument #2 to 'BatchNorm2d' %(options table expected, got number%)",
                   err(function() return nn.BatchNorm2d(3, 4) end))
    assert.matches("bad argument #1 to 'LazyBatchNorm2d' %(options table expected",
                   err(function() return nn.LazyBatchNorm2d(3) end))
    assert.matches("number has no integer representation",
                   err(function() return nn.BatchNorm2d(2.5) end))
    assert.matches("Trying to create tensor with negative dimension %-1: %[%-1%]",
                   err(function() return nn.BatchNorm2d(-1) end))
    assert.matches("dtype must be a floating point type, got int64",
                   err(function() return nn.BatchNorm2d(3, { dtype = "int64" }) end))
    assert.matches("BatchNorm2d is defined in C and cannot be extended from Lua: hold one in a "
                   .. "nn.Module:extend class instead",
                   err(function() return nn.BatchNorm2d:extend("MyBN") end), 1, true)
    assert.matches("bad argument #6 to 'batch_norm' %(boolean expected, got number%)",
                   err(function() return nn.functional.batch_norm(lunet.randn(2, 3), nil, nil,
                                                                  nil, nil, 1) end))
  end)
end)

describe("BatchNorm printing", function()
  it("prints as PyTorch with Lua's booleans", function()
    assert.are.equal("BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true)", tostring(nn.BatchNorm2d(64)))
    assert.are.equal("BatchNorm1d(3, eps=0.001, momentum=false, affine=false, "
                     .. "track_running_stats=false)",
                     tostring(nn.BatchNorm1d(3, { eps = 1e-3, momentum = false, affine = false,
                                                  track_running_stats = false })))
    assert.are.equal("BatchNorm3d(0, eps=1e-15, momentum=0.01, affine=true, "
                     .. "track_running_stats=true)",
                     tostring(nn.BatchNorm3d(0, { eps = 1e-15, momentum = 0.01 })))
    assert.are.equal("BatchNorm2d(2, eps=0.5, momentum=1.0, affine=true, "
                     .. "track_running_stats=true)",
                     tostring(nn.BatchNorm2d(2, { eps = 0.5, momentum = 1 })))
    assert.are.equal("BatchNorm2d(2, eps=0.0001, momentum=1e+16, affine=true, "
                     .. "track_running_stats=true)",
                     tostring(nn.BatchNorm2d(2, { eps = 1e-4, momentum = 1e16 })))
    assert.are.equal("BatchNorm2d(2, eps=1.5e-07, momentum=123.25, affine=true, "
                     .. "track_running_stats=true)",
                     tostring(nn.BatchNorm2d(2, { eps = 1.5e-7, momentum = 123.25 })))
    assert.are.equal("Sequential(\n  (1): BatchNorm2d(3, eps=1e-05, momentum=0.1, "
                     .. "affine=true, track_running_stats=true)\n)",
                     tostring(nn.Sequential(nn.BatchNorm2d(3))))
    assert.are.equal("LazyBatchNorm3d(0, eps=1e-05, momentum=false, affine=true, "
                     .. "track_running_stats=true)",
                     tostring(nn.LazyBatchNorm3d({ momentum = false })))
  end)

  it("follows attribute changes", function()
    local bn = nn.BatchNorm2d(3)
    bn.momentum = false
    bn.eps = 0.001
    assert.are.equal("BatchNorm2d(3, eps=0.001, momentum=false, affine=true, "
                     .. "track_running_stats=true)", tostring(bn))
  end)
end)

describe("BatchNorm errors", function()
  it("checks the input's rank with PyTorch's messages", function()
    assert.matches("expected 2D or 3D input %(got 4D input%)",
                   err(function() return nn.BatchNorm1d(3)(lunet.randn(2, 3, 4, 5)) end))
    assert.matches("expected 2D or 3D input %(got 1D input%)",
                   err(function() return nn.BatchNorm1d(3)(lunet.randn(3)) end))
    assert.matches("expected 4D input %(got 3D input%)",
                   err(function() return nn.BatchNorm2d(3)(lunet.randn(2, 3, 4)) end))
    assert.matches("expected 5D input %(got 4D input%)",
                   err(function() return nn.BatchNorm3d(3)(lunet.randn(2, 3, 4, 5)) end))
    local lazy = nn.LazyBatchNorm2d()
    assert.matches("expected 4D input %(got 3D input%)",
                   err(function() return lazy(lunet.randn(2, 3, 4)) end))
    assert.are.equal("LazyBatchNorm2d", lazy:type_name())
    assert.is_nil(lazy.weight)
  end)

  it("needs more than one value per channel when training", function()
    local bn = nn.BatchNorm1d(4)
    assert.matches("Expected more than 1 value per channel when training, got input size {1, 4}",
                   err(function() return bn(lunet.randn(1, 4)) end))
    assert.are.equal(0, bn.num_batches_tracked:item(), "a failed forward counts nothing")
    assert.matches("got input size {1, 4, 1}",
                   err(function() return bn(lunet.randn(1, 4, 1)) end))
    bn:eval()
    assert.are.same({ 1, 4 }, bn(lunet.randn(1, 4)):size())
  end)

  it("checks the channel count as PyTorch does", function()
    local x = lunet.randn(2, 4, 3, 3)
    assert.matches("running_mean should contain 4 elements not 3",
                   err(function() return nn.BatchNorm2d(3)(x) end))
    assert.matches("running_mean should contain 4 elements not 3",
                   err(function() return nn.BatchNorm2d(3):eval()(x) end))
    assert.matches("running_mean should contain 4 elements not 3",
                   err(function() return nn.BatchNorm2d(3, { affine = false })(x) end))
    assert.matches("weight should contain 4 elements not 3",
                   err(function() return nn.BatchNorm2d(3, { track_running_stats = false })(x) end))
    -- no per-channel tensor, nothing to check: PyTorch normalizes any C
    local bare = nn.BatchNorm2d(3, { affine = false, track_running_stats = false })
    assert.are.same({ 2, 4, 3, 3 }, bare(x):size())
  end)

  it("takes one input tensor", function()
    local bn = nn.BatchNorm1d(2)
    assert.matches("tensor expected", err(function() return bn(nil) end))
    assert.matches("expects 1 input, got 2",
                   err(function() return bn(lunet.randn(3, 2), lunet.randn(3, 2)) end))
  end)

  it("reset methods refuse other modules", function()
    assert.matches("BatchNorm module expected, got Sequential",
                   err(nn._BatchNorm.reset_parameters, nn.Sequential()))
  end)
end)

describe("BatchNorm semantics", function()
  local function batch_stats(x)
    -- per-channel mean and biased/unbiased variance of an (N, C, L) float64 tensor
    local xt = x:transpose(1, 2):reshape(x:size(2), -1)
    return xt:mean(2), xt:var(2, { unbiased = false }), xt:var(2, { unbiased = true })
  end

  it("normalizes with the biased variance and tracks the unbiased one", function()
    local x = lunet.randn(5, 3, 4, { dtype = "float64" })
    local bn = nn.BatchNorm1d(3, { dtype = "float64", momentum = 0.25 })
    local y = bn(x)
    local mean, var_b, var_u = batch_stats(x)
    local want = (x - mean:view(1, 3, 1)) / (var_b:view(1, 3, 1) + 1e-5):sqrt()
    assert(max_diff(want, y) < 1e-12)
    assert(max_diff(mean * 0.25, bn.running_mean) < 1e-12)
    assert(max_diff(var_u * 0.25 + 0.75, bn.running_var) < 1e-12)
  end)

  it("counts training forwards only, and uses a cumulative average with momentum=false", function()
    local bn = nn.BatchNorm1d(2, { dtype = "float64", momentum = false })
    local xs, sum = {}, lunet.zeros(2, { dtype = "float64" })
    for i = 1, 3 do
      xs[i] = lunet.randn(6, 2, { dtype = "float64" }) + i
      bn(xs[i])
      sum = sum + xs[i]:mean(1)
    end
    assert.are.equal(3, bn.num_batches_tracked:item())
    assert(max_diff(sum / 3, bn.running_mean) < 1e-12)
    bn:eval()
    bn(xs[1])
    assert.are.equal(3, bn.num_batches_tracked:item())
    -- momentum is read at each forward, as PyTorch's attribute
    bn:train()
    bn.momentum = 1
    bn(xs[2])
    assert(max_diff(xs[2]:mean(1), bn.running_mean) < 1e-12)
  end)

  it("takes a failed step's count back; the counter wraps at the int64 maximum", function()
    local x = lunet.randn(4, 3)
    local bn = nn.BatchNorm1d(3, { momentum = false })
    bn.num_batches_tracked = lunet.tensor({ 1, 2, 3 })
    assert.matches("a Tensor with 3 elements cannot be converted to Scalar", err(bn, x))
    assert.are.same({ 1, 2, 3 }, bn.num_batches_tracked:tolist())
    bn.num_batches_tracked = lunet.tensor(-1)
    assert.matches("float division by zero", err(bn, x))   -- PyTorch's ZeroDivisionError
    assert.are.equal(-1, bn.num_batches_tracked:item())
    assert.are.same({ 0, 0, 0 }, bn.running_mean:tolist())
    local wraps = nn.BatchNorm1d(3)
    wraps.num_batches_tracked:fill_(math.maxinteger)
    wraps(x)
    assert.are.equal(math.mininteger, wraps.num_batches_tracked:item())
  end)

  it("uses the running statistics in eval mode", function()
    local bn = nn.BatchNorm2d(2, { dtype = "float64" }):eval()
    bn.running_mean:copy_(f64({ 1, -2 }))
    bn.running_var:copy_(f64({ 4, 0.25 }))
    set_affine(bn, f64({ 2, 3 }), f64({ 0.5, -1 }))
    local x = lunet.randn(2, 2, 3, 3, { dtype = "float64" })
    local rm, rv = bn.running_mean:view(1, 2, 1, 1), bn.running_var:view(1, 2, 1, 1)
    local want = (x - rm) / (rv + 1e-5):sqrt() * bn.weight:view(1, 2, 1, 1)
                 + bn.bias:view(1, 2, 1, 1)
    assert(max_diff(want, bn(x)) < 1e-12)
    assert.are.equal(0, bn.num_batches_tracked:item())
  end)

  it("uses batch statistics in eval mode without running statistics", function()
    local x = lunet.randn(4, 3, { dtype = "float64" })
    local bn = nn.BatchNorm1d(3, { dtype = "float64", track_running_stats = false })
    local yt = bn(x)
    bn:eval()
    assert(max_diff(yt, bn(x)) < 1e-12)
    -- track_running_stats switched off later: no update, no count, batch stats in training
    local t = nn.BatchNorm1d(3, { dtype = "float64" })
    t.track_running_stats = false
    t(x)
    assert.are.equal(0, t.num_batches_tracked:item())
    assert.are.same({ 0, 0, 0 }, t.running_mean:tolist())
  end)

  it("updates the buffers in place, without autograd", function()
    local bn = nn.BatchNorm2d(3)
    local rm, rv, nbt = bn.running_mean, bn.running_var, bn.num_batches_tracked
    local y = bn(lunet.randn(4, 3, 2, 2):requires_grad_(true) * 3 + 1)
    assert.is_true(y.requires_grad)
    assert.are.equal("NativeBatchNormBackward0", y.grad_fn)   -- one node, its own kernel
    assert.are_not.same({ 0, 0, 0 }, rm:tolist())
    assert.are_not.same({ 1, 1, 1 }, rv:tolist())
    assert.are.equal(1, nbt:item())
    assert.is_false(bn.running_mean.requires_grad)
    assert.is_nil(bn.running_mean.grad_fn)
  end)

  it("reset_running_stats and reset_parameters", function()
    local bn = nn.BatchNorm2d(2)
    set_affine(bn, f32({ 3, 4 }), f32({ 5, 6 }))
    bn(lunet.randn(3, 2, 2, 2) * 2 + 3)
    assert.are.equal(bn, bn:reset_running_stats())
    assert.are.same({ 0, 0 }, bn.running_mean:tolist())
    assert.are.same({ 1, 1 }, bn.running_var:tolist())
    assert.are.equal(0, bn.num_batches_tracked:item())
    assert.are.same({ 3, 4 }, bn.weight:tolist())
    bn(lunet.randn(3, 2, 2, 2) + 3)
    assert.are.equal(bn, bn:reset_parameters())
    assert.are.same({ 1, 1 }, bn.weight:tolist())
    assert.are.same({ 0, 0 }, bn.bias:tolist())
    assert.are.same({ 0, 0 }, bn.running_mean:tolist())
    assert.are.equal(0, bn.num_batches_tracked:item())
    assert.is_true(bn.weight.requires_grad)
    -- nothing to reset: no error
    nn.BatchNorm2d(2, { affine = false, track_running_stats = false }):reset_parameters()
    nn.LazyBatchNorm2d():reset_parameters()
    nn.LazyBatchNorm2d():reset_running_stats()
  end)

  it("converts with to() and keeps the counter an int64", function()
    local bn = nn.BatchNorm2d(2):double()
    assert.are.equal("float64", bn.weight.dtype)
    assert.are.equal("float64", bn.running_mean.dtype)
    assert.are.equal("int64", bn.num_batches_tracked.dtype)
    assert.are.equal("float64", bn(lunet.randn(2, 2, 2, 2, { dtype = "float64" })).dtype)
  end)

  it("lazy modules without per-channel tensors still become BatchNorm", function()
    local bn = nn.LazyBatchNorm1d({ affine = false, track_running_stats = false })
    local y = bn(lunet.randn(4, 6))
    assert.are.same({ 4, 6 }, y:size())
    assert.are.equal("BatchNorm1d(6, eps=1e-05, momentum=0.1, affine=false, "
                     .. "track_running_stats=false)", tostring(bn))
  end)
end)

describe("BatchNorm memory formats", function()
  local function bytes_during(fn)
    lunet.reset_peak_memory_stats()
    local before = lunet.memory_stats().cpu.in_use
    local out = fn()
    return lunet.memory_stats().cpu.peak - before, out
  end

  it("keeps channels-last (NHWC and NDHWC) inputs in their layout", function()
    local bn = nn.BatchNorm2d(3)
    local x = lunet.randn(2, 3, 4, 5)
    local xc = x:contiguous("channels_last")
    local y, yc = bn(x), bn(xc)
    assert.is_true(yc:is_contiguous("channels_last"))
    assert.are.same(xc:stride(), yc:stride())
    assert(max_diff(y, yc) < 1e-5)
    local bn3 = nn.BatchNorm3d(3)
    local x3 = lunet.randn(2, 3, 2, 3, 4):contiguous("channels_last")
    assert.is_true(bn3(x3):is_contiguous("channels_last"))
    bn3:eval()
    assert.is_true(bn3(x3):is_contiguous("channels_last"))
  end)

  it("normalizes a permuted NHWC view as channels-last", function()
    local nhwc = lunet.randn(2, 4, 5, 3)       -- (N, H, W, C)
    local x = nhwc:permute(1, 4, 2, 3)          -- (N, C, H, W) view of the same data
    assert.is_true(x:is_contiguous("channels_last"))
    local bn = nn.BatchNorm2d(3)
    local y = bn(x)
    assert.is_true(y:is_contiguous("channels_last"))
    assert.are.same({ 2, 3, 4, 5 }, y:size())
    local ref = nn.BatchNorm2d(3)(x:contiguous())
    assert(max_diff(ref, y) < 1e-5)
  end)

  it("keeps other dense layouts (a departure), and makes gapped ones contiguous", function()
    -- PyTorch returns these three contiguous (docs/BATCHNORM.md)
    local cases = {
      { nn.BatchNorm1d(5), lunet.randn(5, 4):t(), { 1, 4 } },
      { nn.BatchNorm1d(3), lunet.randn(2, 7, 3):permute(1, 3, 2), { 21, 1, 3 } },
      { nn.BatchNorm2d(3), lunet.randn(2, 3, 5, 4):transpose(3, 4), { 60, 20, 1, 4 } },
      { nn.BatchNorm2d(3), lunet.randn(2, 3, 5, 8):narrow(4, 1, 4), { 60, 20, 4, 1 } },
      { nn.BatchNorm2d(3), lunet.randn(2, 3, 1, 4):expand(2, 3, 5, 4), { 60, 20, 4, 1 } },
    }
    for i, c in ipairs(cases) do
      local bn, x, strides = c[1], c[2], c[3]
      local y = bn(x)
      assert.are.same(strides, y:stride(), "case " .. i)
      local ref = bn(x:contiguous())
      assert(max_diff(ref, y) < 1e-5, "case " .. i)
    end
  end)

  it("allocates only the output and per-channel statistics (no copy of the input)", function()
    local x = lunet.randn(8, 16, 16, 16):contiguous("channels_last")
    local out_bytes = x:numel() * 4
    local bn = nn.BatchNorm2d(16)
    local train_bytes = bytes_during(function() return bn(x) end)
    bn:eval()
    local eval_bytes = bytes_during(function() return bn(x) end)
    local strided = lunet.randn(8, 16, 16, 16):contiguous()
    local nchw_bytes = bytes_during(function() return bn(strided) end)
    for what, b in pairs({ train = train_bytes, eval = eval_bytes, nchw = nchw_bytes }) do
      assert(b <= out_bytes + 64 * 1024,
             ("%s forward allocated %d bytes for a %d-byte output"):format(what, b, out_bytes))
    end
  end)
end)

describe("BatchNorm gradients", function()
  local function check(fn, inputs)
    local ok, msg = lunet.gradcheck(fn, inputs)
    assert(ok, msg)
  end

  it("pass gradcheck in float64 through the modules, in training and eval", function()
    for _, shape in ipairs({ { 4, 3 }, { 3, 2, 4 } }) do
      local bn = nn.BatchNorm1d(shape[2], { dtype = "float64" })
      set_affine(bn, lunet.randn(shape[2], { dtype = "float64" }),
                 lunet.randn(shape[2], { dtype = "float64" }))
      local x = lunet.randn(shape, { dtype = "float64" }):requires_grad_(true)
      check(function(a) return bn(a) end, { x, bn.weight, bn.bias })
      bn:eval()
      bn.running_var:fill_(0.7)
      check(function(a) return bn(a) end, { x, bn.weight, bn.bias })
    end
    local bn2 = nn.BatchNorm2d(3, { dtype = "float64" })
    local x2 = lunet.randn(2, 3, 2, 3, { dtype = "float64" }):contiguous("channels_last")
    x2:requires_grad_(true)
    check(function(a) return bn2(a) end, { x2, bn2.weight, bn2.bias })
    local bn3 = nn.BatchNorm3d(2, { dtype = "float64", affine = false })
    local x3 = lunet.randn(2, 2, 2, 2, 2, { dtype = "float64" }):requires_grad_(true)
    check(function(a) return bn3(a) end, { x3 })
    local f = nn.functional.batch_norm
    check(function(a, w, b) return f(a, nil, nil, w, b, true) end,
          { lunet.randn(3, 2, 3, { dtype = "float64" }):requires_grad_(true),
            lunet.randn(2, { dtype = "float64" }):requires_grad_(true),
            lunet.randn(2, { dtype = "float64" }):requires_grad_(true) })
  end)

  it("bn:eval() inside a training model freezes the statistics, gradients still flow", function()
    local model = nn.Sequential(nn.BatchNorm2d(3, { dtype = "float64" }),
                                nn.BatchNorm2d(3, { dtype = "float64" }))
    local frozen = model[1]
    frozen.running_mean:copy_(f64({ 0.5, -1, 2 }))
    frozen.running_var:copy_(f64({ 2, 0.5, 1 }))
    set_affine(frozen, f64({ 1.5, 2, 0.5 }), f64({ 0, 1, -1 }))
    model:train()
    frozen:eval()
    assert.is_true(model.training and model[2].training)
    assert.is_false(frozen.training)
    local x = lunet.randn(4, 3, 2, 2, { dtype = "float64" }):requires_grad_(true)
    local y1 = frozen(x)
    local want = (x:detach() - frozen.running_mean:view(1, 3, 1, 1))
                 / (frozen.running_var:view(1, 3, 1, 1) + 1e-5):sqrt()
                 * frozen.weight:detach():view(1, 3, 1, 1) + frozen.bias:detach():view(1, 3, 1, 1)
    assert(max_diff(want, y1) < 1e-12)
    local out = model(x)
    out:sum():backward()
    assert.are.same({ 0.5, -1, 2 }, frozen.running_mean:tolist())
    assert.are.equal(0, frozen.num_batches_tracked:item())
    assert.are.equal(1, model[2].num_batches_tracked:item())
    assert.is_not_nil(frozen.weight.grad)
    assert.is_not_nil(frozen.bias.grad)
    assert.is_not_nil(x.grad)
    check(function(a) return model(a) end, { x, frozen.weight, frozen.bias })
  end)
end)
