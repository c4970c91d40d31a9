-- The layers and losses from Lua against PyTorch's own results
-- (tests/fixtures/layers, written by scripts/gen_layer_fixtures.py; the
-- script's docstring says what each file holds): conv2d (stride, padding,
-- "same"/"valid", dilation, groups, channels-last, unbatched), linear,
-- max and adaptive pooling, cross entropy with every reduction, weights
-- and ignored targets, mse, (log_)softmax, a small CNN's state dict and
-- logits, and the modules' text. Then errors, gradcheck in float64,
-- dropout, in-place ops, initialisation, 16-bit inputs and empty batches.
local lunet = require("lunet")
local nn = require("lunet.nn")
local F = nn.functional

local helpers = require("tests.spec.helpers")
local err, f64 = helpers.err, helpers.f64
local assert_close, case_names, max_diff = helpers.assert_close, helpers.case_names,
                                           helpers.max_diff

local fixture = helpers.fixtures("tests/fixtures/layers/")

local parse = helpers.parse_case

local TOL = {
  float64 = { rtol = 1e-10, atol = 1e-10 },
  float32 = { rtol = 1e-4, atol = 1e-4 },
}

local function leaf(t) return t:detach():clone():requires_grad_(true) end

local function set_params(m, w, b)
  lunet.no_grad(function()
    m.weight:copy_(w)
    if b then m.bias:copy_(b) end
  end)
end

-- ---- against PyTorch ----

describe("conv2d against PyTorch", function()
  local T, meta = fixture("conv")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    local tol = TOL[c.dtype]
    local opts = { stride = c.stride, padding = c.padding, dilation = c.dilation,
                   groups = c.groups }
    local function input()
      local x = T[name .. ".x"]
      if c.format == "channels_last" then x = x:contiguous("channels_last") end
      return leaf(x)
    end
    local function check(y, x, w, b, at)
      if c.out_format == "channels_last" then
        assert.is_true(y:is_contiguous("channels_last"), at .. ": output format")
      else
        assert.is_true(y:is_contiguous(), at .. ": output format")
      end
      assert_close(T[name .. ".y"], y:detach(), tol, at .. ": output")
      y:backward(T[name .. ".gy"])
      assert_close(T[name .. ".gx"], x.grad, tol, at .. ": input gradient")
      assert_close(T[name .. ".gw"], w.grad, tol, at .. ": weight gradient")
      if c.bias then assert_close(T[name .. ".gb"], b.grad, tol, at .. ": bias gradient") end
    end

    it(name .. " (" .. meta["case." .. name] .. ")", function()
      local x, w = input(), leaf(T[name .. ".w"])
      local b = c.bias and leaf(T[name .. ".b"]) or nil
      check(F.conv2d(x, w, b, opts), x, w, b, "functional")
      local wt = T[name .. ".w"]
      local m = nn.Conv2d(wt:size(2) * c.groups, wt:size(1), { wt:size(3), wt:size(4) },
                          { stride = c.stride, padding = c.padding, dilation = c.dilation,
                            groups = c.groups, bias = c.bias, dtype = c.dtype })
      set_params(m, wt, T[name .. ".b"])
      local x2 = input()
      check(m(x2), x2, m.weight, m.bias, "module")
    end)
  end
end)

describe("linear against PyTorch", function()
  local T, meta = fixture("linear")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    local tol = TOL[c.dtype]
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      local x, w = leaf(T[name .. ".x"]), leaf(T[name .. ".w"])
      local b = c.bias and leaf(T[name .. ".b"]) or nil
      local y = F.linear(x, w, b)
      assert_close(T[name .. ".y"], y:detach(), tol, "output")
      y:backward(T[name .. ".gy"])
      assert_close(T[name .. ".gx"], x.grad, tol, "input gradient")
      assert_close(T[name .. ".gw"], w.grad, tol, "weight gradient")
      if b then assert_close(T[name .. ".gb"], b.grad, tol, "bias gradient") end
      local m = nn.Linear(w:size(2), w:size(1), { bias = c.bias, dtype = c.dtype })
      set_params(m, T[name .. ".w"], T[name .. ".b"])
      local x2 = leaf(T[name .. ".x"])
      local y2 = m(x2)
      assert_close(T[name .. ".y"], y2:detach(), tol, "module output")
      y2:backward(T[name .. ".gy"])
      assert_close(T[name .. ".gw"], m.weight.grad, tol, "module weight gradient")
      assert_close(T[name .. ".gx"], x2.grad, tol, "module input gradient")
    end)
  end
end)

describe("pooling against PyTorch", function()
  local T, meta = fixture("pool")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    local tol = TOL[c.dtype]
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      for _, form in ipairs({ "functional", "module" }) do
        local x = T[name .. ".x"]
        if c.format == "channels_last" then x = x:contiguous("channels_last") end
        x = leaf(x)
        local y
        if c.op == "max" then
          local o = { stride = c.stride, padding = c.padding, dilation = c.dilation,
                      ceil_mode = c.ceil_mode }
          y = form == "module" and nn.MaxPool2d(c.kernel, o)(x) or F.max_pool2d(x, c.kernel, o)
        else
          local size = { c.size[1] >= 0 and c.size[1] or false,
                         c.size[2] >= 0 and c.size[2] or false }
          y = form == "module" and nn.AdaptiveAvgPool2d(size)(x)
              or F.adaptive_avg_pool2d(x, size)
        end
        if c.format == "channels_last" then
          assert.is_true(y:is_contiguous("channels_last"), form .. ": output format")
        end
        assert_close(T[name .. ".y"], y:detach(), tol, form .. ": output")
        y:backward(T[name .. ".gy"])
        assert_close(T[name .. ".gx"], x.grad, tol, form .. ": input gradient")
      end
    end)
  end
end)

describe("losses and softmax against PyTorch", function()
  local T, meta = fixture("loss")
  for _, name in ipairs(case_names(meta)) do
    local c = parse(meta["case." .. name])
    local tol = TOL[c.dtype]
    it(name .. " (" .. meta["case." .. name] .. ")", function()
      if c.op == "cross_entropy" then
        local o = { reduction = c.reduction, ignore_index = c.ignore_index,
                    weight = T[name .. ".weight"] }
        for _, form in ipairs({ "functional", "module" }) do
          local x = leaf(T[name .. ".x"])
          local y = form == "module" and nn.CrossEntropyLoss(o)(x, T[name .. ".target"])
                    or F.cross_entropy(x, T[name .. ".target"], o)
          assert_close(T[name .. ".y"], y:detach(), tol, form .. ": loss")
          y:backward(T[name .. ".gy"])
          assert_close(T[name .. ".gx"], x.grad, tol, form .. ": input gradient")
        end
      elseif c.op == "mse" then
        for _, form in ipairs({ "functional", "module" }) do
          local a, b = leaf(T[name .. ".a"]), leaf(T[name .. ".b"])
          local o = { reduction = c.reduction }
          local y = form == "module" and nn.MSELoss(o)(a, b) or F.mse_loss(a, b, o)
          assert_close(T[name .. ".y"], y:detach(), tol, form .. ": loss")
          y:backward(T[name .. ".gy"])
          assert_close(T[name .. ".ga"], a.grad, tol, form .. ": input gradient")
          assert_close(T[name .. ".gb"], b.grad, tol, form .. ": target gradient")
        end
      else
        local x = leaf(T[name .. ".x"])
        local y = F[c.op](x, c.dim)
        assert_close(T[name .. ".y"], y:detach(), tol, "output")
        y:backward(T[name .. ".gy"])
        assert_close(T[name .. ".gx"], x.grad, tol, "input gradient")
      end
    end)
  end
end)

describe("a small CNN with PyTorch's weights", function()
  local T, meta = fixture("model")
  local Net = nn.Module:extend("Net")
  function Net:__init()
    self.features = nn.Sequential(nn.Conv2d(1, 4, 3, { padding = 1 }), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, { groups = 2 }),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(2))
    self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(24, 10))
  end
  function Net:forward(x) return self.head(self.features(x)) end

  it("has PyTorch's state dict keys, in its order", function()
    local keys = {}
    for k in pairs(Net():state_dict()) do
      if k ~= "_metadata" then keys[#keys + 1] = k end
    end
    local want = {}
    for k in meta.keys:gmatch("[^,]+") do
      want[#want + 1] = k:gsub("%.(%d+)%.", function(i) return "." .. (i + 1) .. "." end)
    end
    assert.are.same(want, keys)
  end)

  it("loads PyTorch's state dict and gives its logits in eval mode", function()
    local net = Net()
    local sd = {}
    for k, v in pairs(T) do
      if k ~= "input" and k ~= "logits" then
        sd[(k:gsub("%.(%d+)%.", function(i) return "." .. (i + 1) .. "." end))] = v
      end
    end
    local r = net:load_state_dict(sd)
    assert.are.same({}, r.missing_keys)
    assert.are.same({}, r.unexpected_keys)
    net:eval()
    assert_close(T.logits, net(T.input), TOL.float32, "logits")
  end)
end)

describe("module text", function()
  local _, meta = fixture("repr")
  local names = {}
  for k in pairs(meta) do
    local n = k:match("^repr%.(.+)$")
    if n then names[#names + 1] = n end
  end
  table.sort(names)

  -- "Conv2d 4 8 3,5 stride=2 bias=false" -> nn.Conv2d(4, 8, {3, 5}, {stride=2, bias=false})
  local function build(args)
    local words = {}
    for w in args:gmatch("%S+") do words[#words + 1] = w end
    local pos, opts = {}, {}
    for i = 2, #words do
      local k, v = words[i]:match("^([%w_]+)=(.+)$")
      local function value(s)
        local a, b = s:match("^(%d+),(%d+)$")
        if a then return { tonumber(a), tonumber(b) } end
        if s == "true" or s == "false" then return s == "true" end
        return tonumber(s) or s
      end
      if k then opts[k] = value(v) else pos[#pos + 1] = value(words[i]) end
    end
    if next(opts) then pos[#pos + 1] = opts end
    return nn[words[1]](table.unpack(pos))
  end

  for _, name in ipairs(names) do
    it(name .. " prints as PyTorch", function()
      local want = meta["repr." .. name]:gsub("True", "true"):gsub("False", "false")
      -- our dims are 1-based: PyTorch's Flatten(start_dim=1) is lunet's start_dim=2
      want = want:gsub("start_dim=(%d+)", function(d) return "start_dim=" .. (d + 1) end)
      assert.are.equal(want, tostring(build(meta["args." .. name])))
    end)
  end

  it("keeps the geometry as fields, in the form given", function()
    local c = nn.Conv2d(3, 8, 3, { stride = { 2, 1 }, padding = 1 })
    assert.are.same({ 3, 3 }, c.kernel_size)
    assert.are.same({ 2, 1 }, c.stride)
    assert.are.same({ 1, 1 }, c.padding)
    assert.are.same({ 1, 1 }, c.dilation)
    assert.are.same({ 3, 8, 1, "zeros" }, { c.in_channels, c.out_channels, c.groups,
                                            c.padding_mode })
    assert.are.equal("same", nn.Conv2d(3, 8, 3, { padding = "same" }).padding)
    local p = nn.MaxPool2d(2)
    assert.are.same({ 2, 2, 0, 1, false }, { p.kernel_size, p.stride, p.padding, p.dilation,
                                             p.ceil_mode })
    assert.are.same({ 2, 3 }, nn.MaxPool2d({ 2, 3 }).stride)
    assert.are.same({ false, 7 }, nn.AdaptiveAvgPool2d({ false, 7 }).output_size)
    local f = nn.Flatten()
    assert.are.same({ 2, -1 }, { f.start_dim, f.end_dim })
    local l = nn.Linear(2, 3)
    assert.are.same({ 2, 3 }, { l.in_features, l.out_features })
    local d = nn.Dropout(0.25)
    assert.are.same({ 0.25, false }, { d.p, d.inplace })
  end)
end)

-- ---- errors ----

describe("layer errors", function()
  local w = lunet.randn(8, 3, 3, 3)

  it("conv2d says what is wrong as PyTorch does", function()
    assert.matches("Given groups=1, weight of size %[8, 3, 3, 3%], expected input%[2, 4, 5, 5%] "
                   .. "to have 3 channels, but got 4 channels instead",
                   err(F.conv2d, lunet.randn(2, 4, 5, 5), w))
    assert.matches("Calculated padded input size per channel: %(2 x 2%)%. Kernel size: %(3 x 3%)%. "
                   .. "Kernel size can't be greater than actual input size",
                   err(F.conv2d, lunet.randn(2, 3, 2, 2), w))
    assert.matches("Kernel size: %(5 x 5%)", err(F.conv2d, lunet.randn(2, 3, 2, 2), w,
                                                 nil, { dilation = 2 }))
    assert.matches("Expected 3D %(unbatched%) or 4D %(batched%) input to conv2d, but got input "
                   .. "of size: %[5, 5%]", err(F.conv2d, lunet.randn(5, 5), w))
    assert.matches("non%-positive stride is not supported",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { stride = 0 }))
    assert.matches("negative padding is not supported",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { padding = -1 }))
    assert.matches("non%-positive dilation is not supported",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { dilation = 0 }))
    assert.matches("non%-positive groups is not supported",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { groups = 0 }))
    assert.matches("Given groups=3, expected weight to be divisible by 3 at dimension 0",
                   err(F.conv2d, lunet.randn(2, 6, 5, 5), lunet.randn(8, 2, 3, 3), nil,
                       { groups = 3 }))
    assert.matches("expected bias to be 1%-dimensional with 8 elements, but got bias of size %[7%]",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, lunet.randn(7)))
    assert.matches("padding='same' is not supported for strided convolutions",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { padding = "same", stride = 2 }))
    assert.matches("Invalid padding string: 'foo'",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { padding = "foo" }))
    assert.matches("Input type %(torch.FloatTensor%) and weight type %(torch.DoubleTensor%) "
                   .. "should be the same", err(F.conv2d, lunet.randn(2, 3, 5, 5), w:double()))
    assert.matches("unknown option 'strides'",
                   err(F.conv2d, lunet.randn(2, 3, 5, 5), w, nil, { strides = 2 }))
  end)

  it("Conv2d checks its arguments as PyTorch does", function()
    assert.matches("in_channels must be divisible by groups", err(nn.Conv2d, 3, 8, 3, { groups = 2 }))
    assert.matches("out_channels must be divisible by groups", err(nn.Conv2d, 4, 6, 3, { groups = 4 }))
    assert.matches("padding='same' is not supported for strided convolutions",
                   err(nn.Conv2d, 4, 8, 3, { padding = "same", stride = 2 }))
    assert.matches("padding_mode 'reflect' is not supported",
                   err(nn.Conv2d, 4, 8, 3, { padding_mode = "reflect" }))
    assert.matches("kernel_size: integer or {h, w} expected", err(nn.Conv2d, 4, 8, "3"))
    assert.matches("Trying to create tensor with negative dimension", err(nn.Linear, -1, 3))
    assert.matches("dtype must be a floating point type", err(nn.Linear, 2, 3, { dtype = "int64" }))
  end)

  it("pooling says what is wrong as PyTorch does", function()
    local x = lunet.randn(2, 3, 5, 5)
    assert.matches("pad should be at most half of effective kernel size, but got pad=2, "
                   .. "kernel_size=3 and dilation=1", err(F.max_pool2d, x, 3, { padding = 2 }))
    assert.matches("Given input size: %(3x2x2%)%. Calculated output size: %(3x0x0%)%. Output "
                   .. "size is too small", err(F.max_pool2d, lunet.randn(2, 3, 2, 2), 3))
    assert.matches("non%-empty 3D or 4D %(batch mode%) tensor expected for input",
                   err(F.max_pool2d, lunet.randn(5, 5), 2))
    assert.matches("stride should not be zero", err(F.max_pool2d, x, 2, { stride = 0 }))
    assert.matches("kernel size should be greater than zero", err(F.max_pool2d, x, 0))
    assert.matches("dilation should be greater than zero", err(F.max_pool2d, x, 2, { dilation = 0 }))
    assert.matches("pad must be non%-negative", err(F.max_pool2d, x, 2, { padding = -1 }))
    assert.matches("adaptive_avg_pool2d%(%): Expected 3D or 4D tensor, but got %[5, 5%]",
                   err(F.adaptive_avg_pool2d, lunet.randn(5, 5), 2))
    assert.matches("elements of output_size must be greater than or equal to 0",
                   err(F.adaptive_avg_pool2d, x, -1))
    assert.matches("\"max_pool2d\" not implemented for 'Long'",
                   err(F.max_pool2d, lunet.ones(1, 2, 2, { dtype = "int64" }), 2))
  end)

  it("losses say what is wrong as PyTorch does", function()
    local logits = lunet.randn(3, 10)
    local t = lunet.tensor({ 1, 2, 11 }, { dtype = "int64" })
    assert.matches("Target 11 is out of bounds%.", err(F.cross_entropy, logits, t))
    assert.matches("Target 0 is out of bounds%.",
                   err(F.cross_entropy, logits, lunet.tensor({ 1, 0, 3 }, { dtype = "int64" })))
    assert.matches("Expected input batch_size %(3%) to match target batch_size %(2%)%.",
                   err(F.cross_entropy, logits, lunet.tensor({ 1, 2 }, { dtype = "int64" })))
    assert.matches("expected target dtype to be Long, but got Float",
                   err(F.cross_entropy, logits, helpers.f32({ 1, 2, 3 })))
    assert.matches("foo is not a valid value for reduction",
                   err(F.cross_entropy, logits, t, { reduction = "foo" }))
    assert.matches("weight tensor should be defined either for all 10 classes or no classes but "
                   .. "got weight tensor of shape: %[9%]",
                   err(F.cross_entropy, logits, t, { weight = lunet.ones(9) }))
    assert.matches("Expected target size %[3, 4%], got %[3, 5%]",
                   err(F.cross_entropy, lunet.randn(3, 10, 4),
                       lunet.ones(3, 5, { dtype = "int64" })))
    assert.matches("bar is not a valid value for reduction",
                   err(F.mse_loss, lunet.randn(3), lunet.randn(3), { reduction = "bar" }))
    assert.matches("bar is not a valid value for reduction", err(nn.MSELoss, { reduction = "bar" }))
  end)

  it("dropout, linear and flatten say what is wrong", function()
    assert.matches("dropout probability has to be between 0 and 1, but got 1.5", err(nn.Dropout, 1.5))
    assert.matches("dropout probability has to be between 0 and 1, but got %-0.5",
                   err(F.dropout, lunet.randn(3), -0.5))
    local d = nn.Dropout()
    d.p = 2
    assert.matches("dropout probability has to be between 0 and 1, but got 2.0",
                   err(d, lunet.randn(3)))
    assert.matches("mat1 and mat2 shapes cannot be multiplied %(3x4 and 3x5%)",
                   err(F.linear, lunet.randn(3, 4), lunet.randn(5, 3)))
    assert.matches("expected m1 and m2 to have the same dtype, but got: float32 != float64",
                   err(F.linear, lunet.randn(2, 4), lunet.randn(5, 4, { dtype = "float64" })))
    assert.matches("Dimension out of range %(expected to be in range of %[%-1, 1%], but got 2%)",
                   err(nn.Flatten(), lunet.randn(2)))
    assert.matches("dims are 1%-based", err(nn.Flatten, { start_dim = 0 }))
    assert.matches("Linear.forward expects 1 input, got 2", err(nn.Linear(2, 3), lunet.randn(2),
                                                                lunet.randn(2)))
  end)
end)

-- ---- gradients ----

describe("layer gradients", function()
  local function check(fn, inputs)
    local ok, msg = lunet.gradcheck(fn, inputs)
    assert(ok, msg)
  end
  local function r(...)
    local sizes = { ... }
    return lunet.randn(sizes, { dtype = "float64" }):requires_grad_(true)
  end

  it("pass gradcheck in float64: conv2d in every geometry and layout", function()
    local cases = {
      { { 2, 3, 5, 5 }, { 4, 3, 3, 3 }, {} },
      { { 2, 4, 6, 5 }, { 6, 2, 3, 2 }, { stride = { 2, 1 }, padding = { 1, 0 }, groups = 2 } },
      { { 1, 2, 7, 7 }, { 2, 2, 2, 3 }, { dilation = { 2, 3 }, padding = "same" } },
      { { 2, 3, 4, 5 }, { 3, 1, 3, 3 }, { groups = 3, padding = 1, stride = 2 } },
    }
    for _, c in ipairs(cases) do
      local x, w, b = r(table.unpack(c[1])), r(table.unpack(c[2])), r(c[2][1])
      check(function(a, ww, bb) return F.conv2d(a, ww, bb, c[3]) end, { x, w, b })
    end
    local xcl = lunet.randn(2, 4, 5, 4, { dtype = "float64" }):contiguous("channels_last")
    xcl:requires_grad_(true)
    check(function(a, ww) return F.conv2d(a, ww, nil, { padding = 1, groups = 2 }) end,
          { xcl, r(4, 2, 3, 3) })
    local m = nn.Conv2d(2, 3, 3, { dtype = "float64", stride = 2 })
    check(function(a) return m(a) end, { r(2, 2, 5, 5), m.weight, m.bias })
    check(function(a) return F.conv2d(a, m.weight, m.bias) end, { r(2, 5, 5) })
  end)

  it("pass gradcheck in float64: linear, pools, relu, losses, softmax", function()
    local l = nn.Linear(4, 3, { dtype = "float64" })
    check(function(a) return l(a) end, { r(2, 5, 4), l.weight, l.bias })
    check(function(a) return F.max_pool2d(a, 3, { stride = 2, padding = 1, ceil_mode = true }) end,
          { r(2, 2, 6, 7) })
    check(function(a) return F.max_pool2d(a, { 2, 3 }, { dilation = { 2, 1 } }) end,
          { r(1, 2, 7, 7) })
    check(function(a) return F.adaptive_avg_pool2d(a, { 3, false }) end, { r(2, 2, 5, 7) })
    check(function(a) return F.adaptive_avg_pool2d(a, 4) end, { r(1, 3, 3, 2) })
    local x = r(3, 4)
    lunet.no_grad(function() x:add_(x:sign() * 0.1) end)   -- away from the kink
    check(function(a) return F.relu(a) end, { x })
    check(function(a) return nn.ReLU()(a) end, { x })
    local t = lunet.tensor({ 1, 3, 4, 2, 3 }, { dtype = "int64" })
    local wt = lunet.rand(4, { dtype = "float64" }) + 0.5
    for _, red in ipairs({ "mean", "sum", "none" }) do
      check(function(a) return F.cross_entropy(a, t, { reduction = red, weight = wt,
                                                       ignore_index = 2 }) end, { r(5, 4) })
      check(function(a, b) return F.mse_loss(a, b, { reduction = red }) end, { r(3, 2), r(3, 2) })
    end
    check(function(a) return F.cross_entropy(a, lunet.ones(2, 3, { dtype = "int64" })) end,
          { r(2, 4, 3) })
    check(function(a) return F.log_softmax(a, 2) end, { r(3, 4, 2) })
    check(function(a) return F.softmax(a, -1) end, { r(3, 4) })
    check(function(a) return F.softmax(a, 1) end, { r(3, 4) })
    local d = nn.Dropout(0.4)
    lunet.manual_seed(3)
    local dx = r(4, 5)
    check(function(a)
      lunet.manual_seed(3)
      return d(a)
    end, { dx })
  end)
end)

-- ---- behaviour ----

describe("dropout", function()
  it("zeroes about p of the elements and scales the others by 1/(1-p)", function()
    lunet.manual_seed(0)
    local x = lunet.ones(100000)
    local y = F.dropout(x, 0.3)
    local kept = (y:ne(0)):sum():item()
    assert(math.abs(kept / 100000 - 0.7) < 0.01, "kept fraction " .. kept / 100000)
    assert(math.abs(y:max():item() - 1 / 0.7) < 1e-6)
    assert(math.abs(y:sum():item() / 100000 - 1) < 0.02)
  end)

  it("is the identity in eval mode and depends only on the seed", function()
    local d = nn.Dropout(0.5)
    local x = lunet.randn(4, 6)
    d:eval()
    assert.are.equal(x, d(x))
    d:train()
    lunet.manual_seed(7)
    local a = d(x)
    lunet.manual_seed(7)
    local b = d(x)
    assert.are.same(a:tolist(), b:tolist())
    assert.are.same(x:tolist(), F.dropout(x, 0):tolist())
    assert.are.same(lunet.zeros(4, 6):tolist(), F.dropout(x, 1):tolist())
    assert.are.equal(x, F.dropout(x, { training = false }))
  end)

  it("the gradient is the mask", function()
    lunet.manual_seed(1)
    local x = lunet.randn(50):requires_grad_(true)
    local y = F.dropout(x, 0.5)
    y:sum():backward()
    for i, g in ipairs(x.grad:tolist()) do
      local v = y:detach()[i]:item()
      assert(g == (v == 0 and 0 or 2), "element " .. i)
    end
  end)

  it("keeps channels-last inputs channels-last", function()
    local x = lunet.randn(2, 3, 4, 4):contiguous("channels_last")
    assert.is_true(F.dropout(x, 0.5):is_contiguous("channels_last"))
  end)
end)

describe("in-place ReLU and dropout", function()
  it("overwrite the input, return it, and keep the gradient right", function()
    local a = helpers.f32({ -1, 2, -3, 4 }):requires_grad_(true)
    local h = a * 2
    local out = F.relu(h, true)
    assert.are.equal(h, out)
    assert.are.same({ 0, 4, 0, 8 }, h:detach():tolist())
    local weighted = out * helpers.f32({ 1, 2, 3, 4 })
    weighted:sum():backward()
    assert.are.same({ 0, 4, 0, 8 }, a.grad:tolist())
    local m = nn.ReLU(true)
    local x = helpers.f32({ -1, 1 })
    assert.are.equal(x, m(x))
    assert.are.same({ 0, 1 }, x:tolist())
  end)

  it("refuse a leaf that requires grad, as PyTorch", function()
    local a = lunet.randn(3):requires_grad_(true)
    assert.matches("a leaf Variable that requires grad is being used in an in%-place operation",
                   err(F.relu, a, true))
    assert.matches("a leaf Variable", err(F.dropout, a, { inplace = true }))
  end)

  it("dropout in place scales the input itself", function()
    lunet.manual_seed(2)
    local x = lunet.ones(1000)
    local y = F.dropout(x, 0.5, { inplace = true })
    assert.are.equal(x, y)
    assert.is_true(x:max():item() == 2 and x:min():item() == 0)
  end)
end)

describe("initialisation", function()
  local function within(t, bound)
    return t:abs():max():item() <= bound + 1e-7
  end

  it("draws Linear and Conv2d parameters uniformly in +-1/sqrt(fan_in), as PyTorch", function()
    lunet.manual_seed(0)
    local l = nn.Linear(400, 300)
    local bound = 1 / math.sqrt(400)
    assert.is_true(within(l.weight, bound) and within(l.bias, bound))
    assert(l.weight:abs():max():item() > 0.95 * bound)
    assert(math.abs(l.weight:var():item() - bound ^ 2 / 3) < 0.05 * bound ^ 2)
    local c = nn.Conv2d(8, 16, 3, { groups = 2 })
    local cb = 1 / math.sqrt(4 * 9)
    assert.is_true(within(c.weight, cb) and within(c.bias, cb))
    assert.are.same({ 16, 4, 3, 3 }, c.weight:size())
    assert.is_true(c.weight.requires_grad and c.bias.requires_grad)
    local before = c.weight:clone()
    assert.are.equal(c, c:reset_parameters())
    assert(max_diff(before, c.weight) > 0)
  end)

  it("names parameters as PyTorch (weight, bias; no bias with bias=false)", function()
    local function names(m)
      local n = {}
      for k in m:named_parameters() do n[#n + 1] = k end
      return n
    end
    assert.are.same({ "weight", "bias" }, names(nn.Linear(2, 3)))
    assert.are.same({ "weight" }, names(nn.Linear(2, 3, { bias = false })))
    assert.are.same({ "weight", "bias" }, names(nn.Conv2d(2, 3, 1)))
    assert.is_nil(nn.Conv2d(2, 3, 1, { bias = false }).bias)
    assert.are.same({}, names(nn.ReLU()))
    local sd = nn.CrossEntropyLoss({ weight = lunet.ones(3) }):state_dict()
    assert.is_not_nil(sd.weight)
  end)

  it("takes dtype and converts with to()", function()
    local l = nn.Linear(2, 3, { dtype = "float64" })
    assert.are.equal("float64", l.weight.dtype)
    local c = nn.Conv2d(2, 3, 3):double()
    assert.are.equal("float64", c.weight.dtype)
    assert.are.equal("float64", c(lunet.randn(1, 2, 4, 4, { dtype = "float64" })).dtype)
  end)
end)

describe("16-bit inputs and empty batches", function()
  it("conv2d, linear, pools and losses compute float16/bfloat16 through float32", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local x = lunet.randn(2, 3, 6, 6)
      local w, b = lunet.randn(4, 3, 3, 3) * 0.3, lunet.randn(4)
      local tol = { rtol = 0.05, atol = 0.08 }
      local xh = x:to({ dtype = dt }):requires_grad_(true)
      local y = F.conv2d(xh, w:to({ dtype = dt }), b:to({ dtype = dt }), { padding = 1 })
      assert.are.equal(dt, y.dtype)
      local ref = F.conv2d(xh:detach():float(), w:to({ dtype = dt }):float(),
                           b:to({ dtype = dt }):float(), { padding = 1 })
      assert(lunet.allclose(y:float(), ref, tol), dt .. " conv2d")
      y:sum():backward()
      assert.are.equal(dt, xh.grad.dtype)
      local p = F.max_pool2d(xh, 2)
      assert.are.equal(dt, p.dtype)
      assert.are.equal(dt, F.adaptive_avg_pool2d(xh, 2).dtype)
      assert.are.equal(dt, F.log_softmax(xh, 2).dtype)
      local l = nn.Linear(6, 2, { dtype = dt })
      assert.are.equal(dt, l(xh).dtype)
      local ce = F.cross_entropy(lunet.randn(4, 3):to({ dtype = dt }),
                                 lunet.tensor({ 1, 2, 3, 1 }, { dtype = "int64" }))
      assert.are.equal(dt, ce.dtype)
    end
  end)

  it("handle an empty batch", function()
    local x = lunet.randn(0, 3, 5, 5):requires_grad_(true)
    local c = nn.Conv2d(3, 4, 3)
    local y = c(x)
    assert.are.same({ 0, 4, 3, 3 }, y:size())
    y:sum():backward()
    assert.are.same({ 0, 3, 5, 5 }, x.grad:size())
    assert.are.same(lunet.zeros(4):tolist(), c.bias.grad:tolist())
    assert.are.same({ 0, 3, 2, 2 }, F.max_pool2d(x, 2):size())
    assert.are.same({ 0, 3, 2, 2 }, F.adaptive_avg_pool2d(x, 2):size())
    assert.are.same({ 0, 2 }, nn.Linear(5, 2)(lunet.randn(0, 5)):size())
    local loss = F.cross_entropy(lunet.randn(0, 4), lunet.zeros(0, { dtype = "int64" }))
    assert.is_true(loss:item() ~= loss:item())   -- NaN, as PyTorch
  end)

  it("conv2d reads strided views without copying them first", function()
    local big = lunet.randn(2, 6, 7, 9)
    local view = big:narrow(2, 2, 3):narrow(4, 2, 6)
    local w = lunet.randn(4, 3, 3, 3)
    local want = F.conv2d(view:contiguous(), w)
    assert(max_diff(want, F.conv2d(view, w)) < 1e-5)
    local nhwc = lunet.randn(2, 5, 6, 3):permute(1, 4, 2, 3)   -- channels-last data
    assert(max_diff(F.conv2d(nhwc:contiguous(), w), F.conv2d(nhwc, w)) < 1e-5)
    assert.is_true(F.conv2d(nhwc, w):is_contiguous("channels_last"))
  end)
end)
