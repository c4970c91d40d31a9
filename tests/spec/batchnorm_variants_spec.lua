-- The BatchNorm variants from Lua: FusedBatchNorm2d, ghost BN
-- (virtual_batch_size), ema_update and BatchRenorm1d/2d/3d against
-- PyTorch compositions (tests/fixtures/batchnorm_variants, written by
-- scripts/gen_bn_variant_fixtures.py, which says what each case holds),
-- then their semantics, errors, printing, state dicts, memory, gradcheck,
-- frozen BN and logical NHWC inputs.
local lunet = require("lunet")
local nn = require("lunet.nn")

local helpers = require("tests.spec.helpers")
local err, f64, max_diff = helpers.err, helpers.f64, helpers.max_diff
local fixture = helpers.fixtures("tests/fixtures/batchnorm_variants/")

local parse, TOL = helpers.parse_case, helpers.bn_tol
local set_affine, case_names = helpers.set_affine, helpers.case_names

-- NaN must be where the reference has NaN, and the rest close (helpers'
-- assert_close has no equal_nan).
local function assert_close(expected, got, tol, what)
  assert.are.same(expected:size(), got:size(), what .. ": sizes")
  assert.are.equal(expected.dtype, got.dtype, what .. ": dtype")
  local opts = { rtol = tol.rtol, atol = tol.atol, equal_nan = true }
  assert(lunet.allclose(got:double(), expected:double(), opts),
         ("%s: max abs difference %g"):format(what, max_diff(expected, got)))
end

-- Every element equal (so NaN fails).
local function same(a, b)
  return a.dtype == b.dtype and a:eq(b):double():sum():item() == a:numel()
end

local function module_for(c, C)
  local opts = { eps = c.eps, momentum = c.momentum ~= "none" and c.momentum,
                 affine = c.affine, track_running_stats = c.track, dtype = c.dtype,
                 virtual_batch_size = c.vb > 0 and c.vb or nil, ema_update = c.ema }
  if c.kind == "fused" then return nn.FusedBatchNorm2d(C, opts) end
  if c.kind == "renorm" then
    opts.rmax, opts.dmax = c.rmax, c.dmax
    return nn["BatchRenorm" .. c.dims .. "d"](C, opts)
  end
  return nn["BatchNorm" .. c.dims .. "d"](C, opts)
end

-- x in the case's memory format (nhwc_view: a permuted (N, H, W, C) tensor).
local function formatted(x, format)
  if format == "channels_last" then return x:contiguous("channels_last") end
  if format == "nhwc_view" then return x:permute(1, 3, 4, 2):contiguous():permute(1, 4, 2, 3) end
  return x
end

-- ---- against PyTorch ----

describe("BatchNorm variants against PyTorch compositions", function()
  local T, meta = fixture("variants")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      local tol = TOL[c.dtype]
      local bn = module_for(c, T[name .. ".x.1"]:size(2))
      if c.affine then set_affine(bn, T[name .. ".weight"], T[name .. ".bias"]) end
      local steps = {}
      for k = 1, c.steps do steps[#steps + 1] = tostring(k) end
      steps[#steps + 1] = "e"
      for _, k in ipairs(steps) do
        local at = name .. " step " .. k
        local key = function(what) return name .. "." .. what .. "." .. k end
        bn:train(k ~= "e")
        bn:zero_grad()
        local x = formatted(T[key("x")], c.format):requires_grad_(true)
        local a = c.addend and formatted(T[key("a")], c.format):requires_grad_(true) or nil
        local y = a and bn(x, a) or bn(x)
        local cl = c.format ~= "contiguous" and x:dim() > 3
        assert.is_true(cl and y:is_contiguous("channels_last") or (not cl and y:is_contiguous()),
                       at .. ": output format")
        y:backward(T[key("gy")])
        assert_close(T[key("y")], y:detach(), tol, at .. ": output")
        assert_close(T[key("gx")], x.grad, tol, at .. ": input gradient")
        if a then assert_close(T[key("ga")], a.grad, tol, at .. ": addend gradient") end
        if c.affine then
          assert_close(T[key("gw")], bn.weight.grad, tol, at .. ": weight gradient")
          assert_close(T[key("gb")], bn.bias.grad, tol, at .. ": bias gradient")
        end
        if c.track then
          assert_close(T[key("rm")], bn.running_mean, tol, at .. ": running_mean")
          assert_close(T[key("rv")], bn.running_var, tol, at .. ": running_var")
          assert.are.equal(T[key("nbt")]:item(), bn.num_batches_tracked:item(), at)
        end
      end
    end)
  end
end)

-- ---- FusedBatchNorm2d ----

local function bytes_during(fn)
  lunet.reset_peak_memory_stats()
  local before = lunet.memory_stats().cpu.in_use
  local out = fn()
  return lunet.memory_stats().cpu.peak - before, out, lunet.memory_stats().cpu.in_use - before
end

describe("FusedBatchNorm2d", function()
  it("is relu(BatchNorm2d(x) + addend), to the bit in float32", function()
    local fused, bn = nn.FusedBatchNorm2d(4), nn.BatchNorm2d(4)
    local w, b = lunet.randn(4), lunet.randn(4)
    set_affine(fused, w, b)
    set_affine(bn, w, b)
    for _, format in ipairs({ "contiguous", "channels_last" }) do
      local x = lunet.randn(3, 4, 5, 6):contiguous(format)
      local a = lunet.randn(3, 4, 5, 6):contiguous(format)
      assert.is_true(same(fused(x, a), (bn(x) + a):relu()), format)
      assert.is_true(same(fused(x), bn(x):relu()), format)
      assert.is_true(same(fused.running_mean, bn.running_mean))
      assert.is_true(same(fused.running_var, bn.running_var))
      fused:eval()
      bn:eval()
      assert.is_true(same(fused(x, a), (bn(x) + a):relu()), format .. " eval")
      fused:train()
      bn:train()
    end
    assert.are.equal(4, fused.num_batches_tracked:item())
  end)

  it("passes gradcheck for input, addend, weight and bias, in training and eval", function()
    local m = nn.FusedBatchNorm2d(3, { dtype = "float64" })
    set_affine(m, lunet.randn(3, { dtype = "float64" }), lunet.randn(3, { dtype = "float64" }))
    for _, format in ipairs({ "contiguous", "channels_last" }) do
      local x = lunet.randn(3, 3, 2, 3, { dtype = "float64" }):contiguous(format)
      local a = lunet.randn(3, 3, 2, 3, { dtype = "float64" }):contiguous(format)
      x:requires_grad_(true)
      a:requires_grad_(true)
      for _, training in ipairs({ true, false }) do
        m:train(training)
        local ok, msg = lunet.gradcheck(function(xx, aa) return m(xx, aa) end,
                                        { x, a, m.weight, m.bias })
        assert(ok, msg)
      end
      m:train()
      local ok, msg = lunet.gradcheck(function(xx) return m(xx) end, { x, m.weight, m.bias })
      assert(ok, msg)
    end
  end)

  it("saves a bit per element, not a full-size tensor", function()
    local x = lunet.randn(8, 16, 16, 16):requires_grad_(true)
    local a = lunet.randn(8, 16, 16, 16):requires_grad_(true)
    local out_bytes, mask_bytes = x:numel() * 4, x:numel() / 8
    local m = nn.FusedBatchNorm2d(16)
    local peak, y, kept = bytes_during(function() return m(x, a) end)
    assert(peak <= out_bytes + mask_bytes + 64 * 1024,
           ("forward allocated %d bytes for a %d-byte output"):format(peak, out_bytes))
    assert(kept <= out_bytes + mask_bytes + 64 * 1024,
           ("forward kept %d bytes for a %d-byte output"):format(kept, out_bytes))
    assert.are.equal("FusedBatchNormBackward0", y.grad_fn)
    y:sum():backward()
    assert.are.same(x:size(), a.grad:size())
  end)

  it("has BatchNorm2d's state dict, so checkpoints move both ways", function()
    local fused = nn.FusedBatchNorm2d(3)
    set_affine(fused, lunet.randn(3), lunet.randn(3))
    fused(lunet.randn(4, 3, 2, 2) * 2 + 1)
    local sd = fused:state_dict()
    local bnsd = nn.BatchNorm2d(3):state_dict()
    local keys, bnkeys = {}, {}
    for k in pairs(sd) do keys[#keys + 1] = k end
    for k in pairs(bnsd) do bnkeys[#bnkeys + 1] = k end
    table.sort(keys)
    table.sort(bnkeys)
    assert.are.same(bnkeys, keys)
    assert.are.equal(2, sd._metadata[""].version)
    local bn = nn.BatchNorm2d(3)
    bn:load_state_dict(sd)
    local back = nn.FusedBatchNorm2d(3)
    back:load_state_dict(bn:state_dict())
    assert.are.equal(1, back.num_batches_tracked:item())
    bn:eval()
    back:eval()
    local x = lunet.randn(2, 3, 4, 4)
    assert.is_true(same(back(x), bn(x):relu()))
    -- and PyTorch's BatchNorm2d checkpoint (tests/fixtures/batchnorm)
    local torch_sd = lunet.load("tests/fixtures/batchnorm/sd_v2.safetensors")
    local sub = { _metadata = { [""] = torch_sd._metadata.bn } }
    for k, v in pairs(torch_sd) do
      if k:match("^bn%.") then sub[k:sub(4)] = v end
    end
    local loaded = nn.FusedBatchNorm2d(3)
    loaded:load_state_dict(sub)
    assert.are.same(sub.running_mean:tolist(), loaded.running_mean:tolist())
    assert.are.equal(2, loaded.num_batches_tracked:item())
  end)

  it("prints and checks its inputs", function()
    assert.are.equal("FusedBatchNorm2d(8, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true)", tostring(nn.FusedBatchNorm2d(8)))
    local m = nn.FusedBatchNorm2d(3)
    local x = lunet.randn(2, 3, 2, 2)
    assert.matches("expected 4D input %(got 3D input%)",
                   err(function() return m(lunet.randn(2, 3, 4)) end))
    assert.matches("addend must have the input's shape {2, 3, 2, 2}, got {2, 3, 2, 1}",
                   err(function() return m(x, lunet.randn(2, 3, 2, 1)) end))
    assert.matches("addend must have the input's dtype float32, got float64",
                   err(function() return m(x, lunet.randn(2, 3, 2, 2, { dtype = "float64" })) end))
    assert.matches("expects 1 or 2 inputs %(x, addend%), got 3",
                   err(function() return m(x, x, x) end))
    assert.are.equal(0, m.num_batches_tracked:item(), "failed forwards count nothing")
    assert.matches("bad argument #2 to 'FusedBatchNorm2d' %(unknown option 'rmax'%)",
                   err(function() return nn.FusedBatchNorm2d(3, { rmax = 2 }) end))
  end)

  it("gives the addend alone its gradient (dy where the output passes it)", function()
    for _, training in ipairs({ true, false }) do
      local m = nn.FusedBatchNorm2d(3, { affine = false }):train(training)
      local x = lunet.randn(4, 3, 5, 5)
      local a = lunet.randn(4, 3, 5, 5):contiguous("channels_last"):requires_grad_(true)
      local dy = lunet.randn(4, 3, 5, 5)
      local y = m(x, a)
      y:backward(dy)
      assert.is_true(same(a.grad, dy * y:detach():gt(0):float()))
      assert.is_nil(x.grad)
    end
  end)

  it("keeps NaN through the ReLU and passes its gradient, as PyTorch", function()
    local m = nn.FusedBatchNorm2d(2, { affine = false })
    local x = lunet.randn(2, 2, 2, 2)
    local a = lunet.zeros(2, 2, 2, 2)
    a[1][1][1][1] = 0 / 0
    a:requires_grad_(true)
    local y = m(x, a)
    local v = y[1][1][1][1]:item()
    assert.is_true(v ~= v)
    y:backward(lunet.ones(2, 2, 2, 2))
    assert.are.equal(1, a.grad[1][1][1][1]:item())
  end)
end)

-- ---- ghost BN and ema_update ----

describe("virtual_batch_size (ghost BN)", function()
  it("normalizes each block of V samples on its own, as BatchNorm on each block", function()
    local x = lunet.randn(6, 3, 2, 2, { dtype = "float64" })
    local ghost = nn.BatchNorm2d(3, { dtype = "float64", virtual_batch_size = 2 })
    local y = ghost(x)
    for blk = 0, 2 do
      local xb = x:narrow(1, 1 + 2 * blk, 2)
      local yb = nn.functional.batch_norm(xb, nil, nil, nil, nil, true)
      assert(max_diff(yb, y:narrow(1, 1 + 2 * blk, 2)) < 1e-12)
    end
    assert.are.equal(1, ghost.num_batches_tracked:item(), "one update per forward")
  end)

  it("with V = N is BatchNorm to the bit, and eval is unchanged", function()
    local ghost = nn.BatchNorm2d(3, { virtual_batch_size = 4 })
    local bn = nn.BatchNorm2d(3)
    local x = lunet.randn(4, 3, 3, 3):requires_grad_(true)
    local y1, y2 = ghost(x), bn(x)
    assert.is_true(same(y1, y2))
    assert.is_true(same(ghost.running_mean, bn.running_mean))
    ghost:eval()
    bn:eval()
    local x8 = lunet.randn(8, 3, 3, 3)
    assert.is_true(same(ghost(x8), bn(x8)), "eval ignores virtual_batch_size")
    assert.are.same({ 8, 3, 3, 3 }, ghost(lunet.randn(8, 3, 3, 3)):size())
    ghost(lunet.randn(3, 3, 3, 3))   -- eval: any N
  end)

  it("works on every BatchNorm module, the lazy ones too", function()
    for _, m in ipairs({ nn.BatchNorm1d(3, { virtual_batch_size = 2 }),
                         nn.LazyBatchNorm1d({ virtual_batch_size = 2 }),
                         nn.FusedBatchNorm2d(3, { virtual_batch_size = 2 }),
                         nn.BatchRenorm1d(3, { virtual_batch_size = 2 }) }) do
      local x = m.__name == "FusedBatchNorm2d" and lunet.randn(4, 3, 2, 2) or lunet.randn(4, 3)
      assert.are.same(x:size(), m(x):size())
      assert.are.equal(2, m.virtual_batch_size)
      assert.matches("virtual_batch_size 2 does not divide the batch size 3",
                     err(function() return m(x:narrow(1, 1, 3)) end))
      assert.are.equal(1, m.num_batches_tracked:item(), "a failed forward counts nothing")
    end
  end)

  it("is checked, shown in tostring only when set, and leaves the state dict alone", function()
    local bn = nn.BatchNorm2d(3)
    assert.is_false(bn.virtual_batch_size)
    assert.are.equal("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true)", tostring(bn))
    bn.virtual_batch_size = 2
    assert.are.equal("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true, virtual_batch_size=2)", tostring(bn))
    local keys = {}
    for k in pairs(bn:state_dict()) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "_metadata", "bias", "num_batches_tracked", "running_mean",
                      "running_var", "weight" }, keys)
    assert.matches("Expected more than 1 value per channel when training, got input size "
                   .. "{4, 3} with virtual_batch_size 1",
                   err(function() return nn.BatchNorm1d(3, { virtual_batch_size = 1 })(
                     lunet.randn(4, 3)) end))
    bn.virtual_batch_size = 1.5
    assert.matches("virtual_batch_size must be a positive integer, got 1.5",
                   err(function() return bn(lunet.randn(4, 3, 2, 2)) end))
    local huge = nn.BatchNorm2d(3, { virtual_batch_size = math.maxinteger })   -- as it is
    assert.matches("virtual_batch_size " .. math.maxinteger .. " does not divide the batch size 4",
                   err(function() return huge(lunet.randn(4, 3, 2, 2)) end))
    bn.virtual_batch_size = false
    assert.are.same({ 3, 3, 2, 2 }, bn(lunet.randn(3, 3, 2, 2)):size())
    assert.matches("option 'virtual_batch_size': positive integer or false expected, got 0",
                   err(function() return nn.BatchNorm2d(3, { virtual_batch_size = 0 }) end))
    assert.matches("option 'virtual_batch_size': positive integer or false expected, got 2.5",
                   err(function() return nn.BatchNorm2d(3, { virtual_batch_size = 2.5 }) end))
  end)
end)

describe("ema_update", function()
  it("'skip' trains with batch statistics and leaves the running ones and the counter", function()
    local skip = nn.BatchNorm2d(3, { ema_update = "skip" })
    local bn = nn.BatchNorm2d(3, { track_running_stats = false })
    local x = lunet.randn(4, 3, 2, 2) * 3 + 1
    assert.is_true(same(skip(x), bn(x)))
    assert.are.same({ 0, 0, 0 }, skip.running_mean:tolist())
    assert.are.same({ 1, 1, 1 }, skip.running_var:tolist())
    assert.are.equal(0, skip.num_batches_tracked:item())
    assert.are.equal("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true, ema_update=skip)", tostring(skip))
    -- switched per call, as a GAN reuses a layer: one update for the step
    skip.ema_update = "internal"
    skip(x)
    assert.are.equal(1, skip.num_batches_tracked:item())
    skip.ema_update = "skip"
    skip(x)
    assert.are.equal(1, skip.num_batches_tracked:item())
    skip:eval()
    assert.are.same({ 4, 3, 2, 2 }, skip(x):size())
  end)

  it("rejects unknown values", function()
    assert.are.equal("internal", nn.BatchNorm1d(2).ema_update)
    assert.matches("option 'ema_update': \"internal\" or \"skip\" expected, got collection",
                   err(function() return nn.BatchNorm1d(2, { ema_update = "collection" }) end))
    local bn = nn.BatchNorm1d(2)
    bn.ema_update = "Skip"
    assert.matches('BatchNorm1d: ema_update must be "internal" or "skip", got "Skip"',
                   err(function() return bn(lunet.randn(3, 2)) end))
  end)
end)

-- ---- BatchRenorm ----

describe("BatchRenorm", function()
  it("with rmax=1 and dmax=0 is BatchNorm to the bit", function()
    for _, spec in ipairs({ { 1, { 6, 4 }, "contiguous" }, { 2, { 3, 4, 3, 5 }, "contiguous" },
                            { 2, { 3, 4, 3, 5 }, "channels_last" },
                            { 3, { 2, 4, 2, 3, 2 }, "contiguous" } }) do
      local d, shape, format = spec[1], spec[2], spec[3]
      local re = nn["BatchRenorm" .. d .. "d"](4, { rmax = 1, dmax = 0 })
      local bn = nn["BatchNorm" .. d .. "d"](4)
      local w, b = lunet.randn(4), lunet.randn(4)
      set_affine(re, w, b)
      set_affine(bn, w, b)
      for step = 1, 3 do
        local x = (lunet.randn(shape) * 2 + 1):contiguous(format)
        local gy = lunet.randn(shape)
        local x1, x2 = x:clone():requires_grad_(true), x:clone():requires_grad_(true)
        re:zero_grad()
        bn:zero_grad()
        local y1, y2 = re(x1), bn(x2)
        y1:backward(gy)
        y2:backward(gy)
        local at = ("%dd %s step %d"):format(d, format, step)
        assert.is_true(same(y1, y2), at .. ": output")
        assert.is_true(same(x1.grad, x2.grad), at .. ": input gradient")
        assert.is_true(same(re.weight.grad, bn.weight.grad), at .. ": weight gradient")
        assert.is_true(same(re.bias.grad, bn.bias.grad), at .. ": bias gradient")
        assert.is_true(same(re.running_mean, bn.running_mean), at .. ": running_mean")
        assert.is_true(same(re.running_var, bn.running_var), at .. ": running_var")
      end
      re:eval()
      bn:eval()
      local x = lunet.randn(shape)
      assert.is_true(same(re(x), bn(x)), d .. "d eval")
    end
  end)

  it("passes gradcheck with r and d clipped (constants, no gradient through them)", function()
    local re = nn.BatchRenorm2d(3, { dtype = "float64", rmax = 1.5, dmax = 0.5 })
    set_affine(re, lunet.randn(3, { dtype = "float64" }), lunet.randn(3, { dtype = "float64" }))
    lunet.no_grad(function()
      re.running_mean:fill_(10)
      re.running_var:fill_(100)
    end)
    re.momentum = 0   -- keep the running statistics for every gradcheck call
    local x = lunet.randn(4, 3, 2, 2, { dtype = "float64" }):requires_grad_(true)
    local ok, msg = lunet.gradcheck(function(a) return re(a) end, { x, re.weight, re.bias })
    assert(ok, msg)
  end)

  it("prints rmax and dmax, and checks its options", function()
    assert.are.equal("BatchRenorm2d(4, eps=1e-05, momentum=0.1, affine=true, "
                     .. "track_running_stats=true, rmax=3.0, dmax=5.0)",
                     tostring(nn.BatchRenorm2d(4)))
    local re = nn.BatchRenorm1d(2, { rmax = 1.5, dmax = 0.25 })
    assert.are.equal(1.5, re.rmax)
    assert.are.equal(0.25, re.dmax)
    assert.matches("BatchRenorm2d needs track_running_stats=true: r and d compare the batch "
                   .. "statistics with the running ones",
                   err(function() return nn.BatchRenorm2d(3, { track_running_stats = false }) end))
    assert.matches("BatchRenorm2d: rmax must be at least 1, got 0.5",
                   err(function() return nn.BatchRenorm2d(3, { rmax = 0.5 }) end))
    assert.matches("BatchRenorm3d: dmax must be at least 0, got %-1",
                   err(function() return nn.BatchRenorm3d(3, { dmax = -1 }) end))
    re.track_running_stats = false
    assert.matches("BatchRenorm1d needs track_running_stats=true",
                   err(function() return re(lunet.randn(3, 2)) end))
    re.track_running_stats = true
    re.rmax = 0.9
    assert.matches("rmax must be at least 1, got 0.9", err(function() return re(lunet.randn(3, 2)) end))
    assert.are.equal(0, re.num_batches_tracked:item())
    assert.matches("expected 2D or 3D input %(got 4D input%)",
                   err(function() return nn.BatchRenorm1d(2)(lunet.randn(2, 2, 2, 2)) end))
  end)

  it("has BatchNorm's state dict", function()
    local re = nn.BatchRenorm2d(3)
    re(lunet.randn(4, 3, 2, 2))
    local bn = nn.BatchNorm2d(3)
    bn:load_state_dict(re:state_dict())
    assert.are.same(re.running_var:tolist(), bn.running_var:tolist())
    assert.are.equal(2, re:state_dict()._metadata[""].version)
  end)
end)

-- ---- frozen BN and logical NHWC ----

describe("frozen BN (bn:eval() inside a training model)", function()
  it("uses the running statistics and still gives gradients, for every variant", function()
    for _, make in ipairs({ function() return nn.BatchNorm2d(3, { dtype = "float64" }) end,
                            function() return nn.FusedBatchNorm2d(3, { dtype = "float64" }) end,
                            function() return nn.BatchRenorm2d(3, { dtype = "float64" }) end }) do
      local frozen = make()
      local model = nn.Sequential(frozen, nn.BatchNorm2d(3, { dtype = "float64" }))
      lunet.no_grad(function()
        frozen.running_mean:copy_(f64({ 0.5, -1, 2 }))
        frozen.running_var:copy_(f64({ 2, 0.5, 1 }))
      end)
      set_affine(frozen, f64({ 1.5, 2, 0.5 }), f64({ 0, 1, -1 }))
      model:train()
      frozen:eval()
      local x = lunet.randn(4, 3, 2, 2, { dtype = "float64" }):requires_grad_(true)
      local want = (x:detach() - frozen.running_mean:view(1, 3, 1, 1))
                   / (frozen.running_var:view(1, 3, 1, 1) + 1e-5):sqrt()
                   * frozen.weight:detach():view(1, 3, 1, 1) + frozen.bias:detach():view(1, 3, 1, 1)
      if frozen.__name == "FusedBatchNorm2d" then want = want:relu() end
      assert(max_diff(want, frozen(x)) < 1e-12, frozen.__name)
      model(x):sum():backward()
      assert.are.same({ 0.5, -1, 2 }, frozen.running_mean:tolist())
      assert.are.equal(0, frozen.num_batches_tracked:item())
      assert.are.equal(1, model[2].num_batches_tracked:item())
      assert.is_not_nil(frozen.weight.grad)
      assert.is_not_nil(frozen.bias.grad)
      assert.is_not_nil(x.grad)
      local ok, msg = lunet.gradcheck(function(a) return model(a) end,
                                      { x, frozen.weight, frozen.bias })
      assert(ok, msg)
    end
  end)
end)

describe("logical NHWC (x:permute(1, 4, 2, 3) of an (N, H, W, C) tensor)", function()
  it("runs the channels-last kernels on the data in place, for every module", function()
    local B = lunet._batchnorm
    for _, make in ipairs({ function() return nn.BatchNorm2d(5) end,
                            function() return nn.FusedBatchNorm2d(5) end,
                            function() return nn.BatchRenorm2d(5) end,
                            function() return nn.BatchNorm2d(5, { virtual_batch_size = 2 }) end }) do
      local m = make()
      local nhwc = lunet.randn(4, 6, 7, 5)
      local x = nhwc:permute(1, 4, 2, 3)
      for _, training in ipairs({ true, false }) do
        m:train(training)
        local before = B.kernel_counts()
        local bytes, y = bytes_during(function() return m(x) end)
        local after = B.kernel_counts()
        local at = tostring(m) .. (training and " training" or " eval")
        assert.are.equal(before.rows + 1, after.rows, at .. ": rows kernels")
        assert.are.equal(before.copied, after.copied, at .. ": no copy")
        assert(bytes <= x:numel() * 4 + 64 * 1024, at .. (": %d bytes"):format(bytes))
        assert.is_true(y:is_contiguous("channels_last"), at)
        local ref = make()
        ref:load_state_dict(m:state_dict())
        ref:train(training)
        -- the same module on an NCHW copy: the same values
        if not training then assert(max_diff(ref(x:contiguous()), y) < 1e-5, at) end
      end
    end
    -- and a layout no kernel reads is copied, and counted
    local before = B.kernel_counts()
    nn.BatchNorm2d(5)(lunet.randn(4, 5, 6, 9):narrow(4, 2, 7))
    assert.are.equal(before.copied + 1, B.kernel_counts().copied)
  end)
end)
