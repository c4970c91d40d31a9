-- lunet.optim: SGD, Adam and AdamW against PyTorch step by step
-- (tests/fixtures/optim, written by scripts/gen_optim_fixtures.py), state
-- dicts through lunet.save/load and resuming, parameter groups, closures,
-- zero_grad, layouts and dtypes, errors.
local lunet = require("lunet")
local optim = require("lunet.optim")
local helpers = require("tests.spec.helpers")
local err, f32, f64 = helpers.err, helpers.f32, helpers.f64

-- fn(...) raises an error containing msg (plain text).
local function raises(msg, fn, ...)
  assert.matches(msg, err(fn, ...), 1, true)
end

local FIXTURES = "tests/fixtures/optim/cases.safetensors"

-- A fresh leaf parameter with t's values.
local function param(t) return t:clone():requires_grad_(true) end

local function max_diff(a, b)
  return (a:detach():double() - b:detach():double()):abs():max():item()
end

local function assert_close(expected, actual, tol, what)
  local ok = lunet.allclose(actual:detach():double(), expected:double(),
                            { rtol = tol.rtol, atol = tol.atol })
  if not ok then
    error(("%s: max difference %g"):format(what, max_diff(actual, expected)), 2)
  end
end

-- The words of a case's metadata: options (numbers, booleans, "b1,b2"
-- pairs) and the second group's g2.KEY overrides.
local function parse_case(s)
  local c, g2 = {}, nil
  for k, v in s:gmatch("(%S+)=(%S+)") do
    local val
    if v == "true" or v == "false" then
      val = v == "true"
    elseif v:find(",") then
      val = {}
      for x in v:gmatch("[^,]+") do val[#val + 1] = tonumber(x) end
    else
      val = tonumber(v) or v
    end
    local gk = k:match("^g2%.(.+)$")
    if gk then
      g2 = g2 or {}
      g2[gk] = val
    else
      c[k] = val
    end
  end
  return c, g2
end

-- The optimizer of a case over params {p1, p2}.
local function make_optimizer(c, g2, ps)
  local opts = {}
  for k, v in pairs(c) do
    if k ~= "optim" and k ~= "dtype" and k ~= "steps" and k ~= "groups" then opts[k] = v end
  end
  local params = ps
  if g2 then
    local grp = { params = { ps[2] } }
    for k, v in pairs(g2) do grp[k] = v end
    params = { { params = { ps[1] } }, grp }
  end
  return optim[c.optim](params, opts)
end

describe("optimizers against PyTorch", function()
  local t, meta = assert(lunet.load(FIXTURES))
  local names = {}
  for key in pairs(meta) do
    local name = key:match("^case%.(.+)$")
    if name then names[#names + 1] = name end
  end
  table.sort(names)

  it("has the cases", function()
    assert.is_true(#names >= 30)
  end)

  for _, name in ipairs(names) do
    it(name .. " matches step by step, and its state", function()
      local c, g2 = parse_case(meta["case." .. name])
      local tol = c.dtype == "float64" and { rtol = 1e-12, atol = 1e-14 }
                                        or { rtol = 2e-5, atol = 2e-6 }
      local ps = { param(t[name .. ".p1.0"]), param(t[name .. ".p2.0"]) }
      local opt = make_optimizer(c, g2, ps)
      for k = 1, c.steps do
        opt:zero_grad()
        for j = 1, 2 do ps[j].grad = t[("%s.g%d.%d"):format(name, j, k)] end
        opt:step()
        for j = 1, 2 do
          assert_close(t[("%s.p%d.%d"):format(name, j, k)], ps[j], tol,
                       ("step %d, p%d"):format(k, j))
        end
      end
      local sd, keys = opt:state_dict(), 0
      for key, ref in pairs(t) do
        local j, field = key:match("^" .. name:gsub("%p", "%%%0") .. "%.state%.(%d+)%.(.+)$")
        if j then
          keys = keys + 1
          local v = sd.state[tonumber(j)][field]
          if field == "step" then
            assert.are.equal(ref:item(), v)
          else
            assert.are.equal(c.dtype, v.dtype)
            assert_close(ref, v, tol, ("state %s.%s"):format(j, field))
          end
        end
      end
      local per_param = 0
      for _, st in pairs(sd.state) do
        for _ in pairs(st) do per_param = per_param + 1 end
      end
      assert.are.equal(keys, per_param)   -- the same state entries as PyTorch
    end)
  end
end)

-- ---- state dicts ----

-- Params, gradients and an optimizer for the resume tests.
local function setup(cls, opts, dtype)
  lunet.manual_seed(3)
  local o = { dtype = dtype }
  local ps = { param(lunet.randn(4, 3, o)), param(lunet.randn(5, o)) }
  local grads = {}
  for k = 1, 6 do grads[k] = { lunet.randn(4, 3, o), lunet.randn(5, o) } end
  return ps, grads, optim[cls]({ { params = { ps[1] } }, { params = { ps[2] }, lr = 0.02 } }, opts)
end

local function run_steps(opt, ps, grads, from, to)
  for k = from, to do
    opt:zero_grad()
    ps[1].grad, ps[2].grad = grads[k][1], grads[k][2]
    opt:step()
  end
end

describe("state_dict", function()
  it("has PyTorch's shape with 1-based parameter indices", function()
    local ps, grads, opt = setup("Adam", { lr = 0.01, amsgrad = true })
    run_steps(opt, ps, grads, 1, 2)
    local sd = opt:state_dict()
    assert.are.same({ 1 }, sd.param_groups[1].params)
    assert.are.same({ 2 }, sd.param_groups[2].params)
    assert.are.same({ 0.9, 0.999 }, sd.param_groups[1].betas)
    assert.are.equal(0.01, sd.param_groups[1].lr)
    assert.are.equal(0.02, sd.param_groups[2].lr)
    assert.is_true(sd.param_groups[1].amsgrad)
    assert.is_false(sd.param_groups[1].decoupled_weight_decay)
    assert.are.equal(2, sd.state[1].step)
    assert.are.same({ 4, 3 }, sd.state[1].exp_avg:size())
    assert.are.same({ 5 }, sd.state[2].max_exp_avg_sq:size())
    assert.are.equal(opt.state[ps[1]].exp_avg, sd.state[1].exp_avg)   -- the optimizer's own
  end)

  it("counts SGD's momentum buffers only with momentum, as PyTorch", function()
    local ps, grads, opt = setup("SGD", { lr = 0.1 })
    run_steps(opt, ps, grads, 1, 1)
    assert.is_nil(opt:state_dict().state[1].momentum_buffer)
    ps, grads, opt = setup("SGD", { lr = 0.1, momentum = 0.9 })
    run_steps(opt, ps, grads, 1, 1)
    assert.are.same({ 4, 3 }, opt:state_dict().state[1].momentum_buffer:size())
  end)

  for _, case in ipairs({
    { "SGD", { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-3 } },
    { "Adam", { lr = 0.01, amsgrad = true, weight_decay = 0.1 } },
    { "AdamW", { lr = 0.01 } },
  }) do
    it(case[1] .. " saves, loads and continues exactly as without a break", function()
      for _, dtype in ipairs({ "float32", "float64" }) do
        local ps, grads, opt = setup(case[1], case[2], dtype)
        run_steps(opt, ps, grads, 1, 3)
        opt.param_groups[1].lr = 0.003          -- a changed option is saved too
        local tensors, metadata = optim.flatten_state_dict(opt:state_dict(), "optim.",
                                                           { p1 = ps[1], p2 = ps[2] }, {})
        local path = os.tmpname()
        assert(lunet.save(path, tensors, { metadata = metadata }))
        run_steps(opt, ps, grads, 4, 6)          -- the uninterrupted run

        local loaded, meta = assert(lunet.load(path))
        os.remove(path)
        local osd, rest = optim.unflatten_state_dict(loaded, meta, "optim.")
        assert.are.same({ "p1", "p2" }, (function()
          local k = {}
          for name in pairs(rest) do k[#k + 1] = name end
          table.sort(k)
          return k
        end)())
        local qs = { param(rest.p1), param(rest.p2) }
        local opt2 = optim[case[1]]({ { params = { qs[1] } }, { params = { qs[2] } } })
        opt2:load_state_dict(osd)
        assert.are.equal(0.003, opt2.param_groups[1].lr)
        assert.are.equal(0.02, opt2.param_groups[2].lr)
        run_steps(opt2, qs, grads, 4, 6)
        assert.are.equal(0, max_diff(ps[1], qs[1]))
        assert.are.equal(0, max_diff(ps[2], qs[2]))
      end
    end)
  end

  it("load_state_dict copies the state into each parameter's dtype", function()
    local ps, grads, opt = setup("Adam", { lr = 0.01 }, "float64")
    run_steps(opt, ps, grads, 1, 2)
    local sd = opt:state_dict()
    local qs = { param(ps[1]:detach():float()), param(ps[2]:detach():float()) }
    local opt2 = optim.Adam({ { params = { qs[1] } }, { params = { qs[2] } } })
    opt2:load_state_dict(sd)
    local st = opt2.state[qs[1]]
    assert.are.equal("float32", st.exp_avg.dtype)
    assert.are_not.equal(sd.state[1].exp_avg, st.exp_avg)
    assert.are.equal(2, st.step)
    sd.state[1].exp_avg:fill_(7)
    assert.is_true(st.exp_avg:abs():max():item() < 7)
  end)

  it("takes a step given as a tensor (PyTorch keeps it in one)", function()
    local p = param(f32({ 1, 2 }))
    local opt = optim.Adam({ p })
    opt:load_state_dict({ state = { [1] = { step = f32(4), exp_avg = f32({ 0, 0 }),
                                            exp_avg_sq = f32({ 0, 0 }) } },
                          param_groups = { { params = { 1 }, lr = 0.5 } } })
    assert.are.equal(4, opt.state[p].step)
    assert.are.equal("integer", math.type(opt.state[p].step))
    assert.are.equal(0.5, opt.param_groups[1].lr)
    assert.are.equal(1e-8, opt.param_groups[1].eps)   -- options the dict lacks stay
  end)

  it("refuses a mismatched state dict and changes nothing", function()
    local ps, grads, opt = setup("SGD", { lr = 0.1, momentum = 0.9 })
    run_steps(opt, ps, grads, 1, 1)
    local sd = opt:state_dict()
    local one = optim.SGD({ ps[1] }, { lr = 0.1 })
    raises("loaded state dict has a different number of parameter groups",
           one.load_state_dict, one, sd)
    local two = optim.SGD({ { params = { ps[1], ps[2] } }, { params = { param(f32({ 1 })) } } })
    raises("loaded state dict contains a parameter group that doesn't match the size "
           .. "of optimizer's group", two.load_state_dict, two, sd)
    local before = opt.state[ps[1]].momentum_buffer
    local bad = opt:state_dict()
    bad.param_groups[2] = { params = { 2 }, lr = -1, momentum = 0.9 }
    raises("Invalid learning rate: -1", opt.load_state_dict, opt, bad)
    bad = opt:state_dict()
    bad.state[1].momentum_buffer = f32({ 1, 2 })
    raises("does not match its parameter's shape", opt.load_state_dict, opt, bad)
    assert.are.equal(before, opt.state[ps[1]].momentum_buffer)
    assert.are.equal(0.1, opt.param_groups[1].lr)
    raises("'state' and 'param_groups' expected", opt.load_state_dict, opt, {})
  end)
end)

describe("flatten_state_dict / unflatten_state_dict", function()
  it("keep numbers exact and other entries apart", function()
    local p = param(f64({ 1 }))
    local opt = optim.Adam({ p }, { lr = 0.1 + 0.2, betas = { 1 / 3, 0.999 } })
    p.grad = f64({ 1 })
    opt:step()
    local t, meta = optim.flatten_state_dict(opt:state_dict(), "o.", { w = p }, { note = "x" })
    assert.are.equal("0.30000000000000004", meta["o.param_groups.1.lr"])
    assert.are.equal("[1]", meta["o.param_groups.1.params"])
    assert.are.equal("false", meta["o.param_groups.1.amsgrad"])
    assert.are.equal("1", meta["o.state.1.step"])
    assert.is_true(lunet.is_tensor(t["o.state.1.exp_avg"]))
    assert.are.equal(p, t.w)
    t._metadata = { [""] = { version = 1 } }
    local sd, rest = optim.unflatten_state_dict(t, meta, "o.")
    assert.are.equal(0.1 + 0.2, sd.param_groups[1].lr)
    assert.are.same({ 1 / 3, 0.999 }, sd.param_groups[1].betas)
    assert.are.same({ 1 }, sd.param_groups[1].params)
    assert.are.equal(1, sd.state[1].step)
    assert.are.equal(p, rest.w)
    assert.are.same({ [""] = { version = 1 } }, rest._metadata)
    assert.is_nil(rest["o.state.1.exp_avg"])
  end)

  it("use the prefix 'optim.' by default and say when nothing is there", function()
    local p = param(f32({ 1 }))
    local opt = optim.SGD({ p }, { lr = 0.5 })
    local t, meta = optim.flatten_state_dict(opt:state_dict())
    assert.are.equal("0.5", meta["optim.param_groups.1.lr"])
    assert.is_nil(next(t))
    raises("no optimizer state under the prefix 'x.'", optim.unflatten_state_dict, t, meta, "x.")
    raises("optimizer state dict expected", optim.flatten_state_dict, {})
  end)
end)

-- ---- behaviour ----

describe("step and zero_grad", function()
  it("step runs the closure with grad mode on and returns its loss", function()
    local p = param(f64({ 1, -2 }))
    local opt = optim.SGD({ p }, { lr = 0.25 })
    local loss = lunet.no_grad(function()
      return opt:step(function()
        opt:zero_grad()
        local l = (p * p):sum()
        l:backward()
        return l
      end)
    end)
    assert.are.equal(5, loss:item())
    assert.are.same({ 0.5, -1 }, p:tolist())   -- p - 0.25 * 2p
    assert.is_false(p.grad == nil)
  end)

  it("zero_grad drops grads, or zeroes them in place with false", function()
    local p = param(f32({ 1, 2 }))
    local opt = optim.Adam({ p })
    p.grad = f32({ 3, 4 })
    local g = p.grad
    opt:zero_grad(false)
    assert.are.equal(g, p.grad)
    assert.are.same({ 0, 0 }, g:tolist())
    opt:zero_grad()
    assert.is_nil(p.grad)
  end)

  it("parameter groups and add_param_group take their own options", function()
    local a, b = param(f64({ 1 })), param(f64({ 1 }))
    local opt = optim.Adam({ a }, { lr = 0.1 })
    opt:add_param_group({ params = { b }, lr = 0.01, betas = { 0.5, 0.5 } })
    assert.are.same({ 0.9, 0.999 }, opt.param_groups[1].betas)
    assert.are.same({ 0.5, 0.5 }, opt.param_groups[2].betas)
    a.grad, b.grad = f64({ 1 }), f64({ 1 })
    opt:step()
    assert.is_true(math.abs(a:item() - 0.9) < 1e-6)    -- Adam's first step moves lr
    assert.is_true(math.abs(b:item() - 0.99) < 1e-6)
    raises("some parameters appear in more than one parameter group",
           opt.add_param_group, opt, { params = { a } })
  end)

  it("AdamW decays weights decoupled with weight_decay=1e-2 by default", function()
    local p = param(f64({ 2 }))
    local opt = optim.AdamW({ p }, { lr = 0.1 })
    assert.are.equal(1e-2, opt.param_groups[1].weight_decay)
    assert.is_true(opt.param_groups[1].decoupled_weight_decay)
    p.grad = f64({ 0 })                 -- no gradient: only the decay moves p
    opt:step()
    assert.is_true(math.abs(p:item() - 2 * (1 - 0.1 * 1e-2)) < 1e-12)
  end)

  it("a custom optimizer from Optimizer.class", function()
    local Sign = optim.Optimizer.class("Sign", {
      defaults = { lr = 0.1 },
      validate = function(g) if g.lr < 0 then return "Invalid learning rate: " .. g.lr end end,
      init_state = function() return { n = 0 } end,
      update = function(g, p, grad, state)
        state.n = state.n + 1
        p:sub_(grad:sign(), { alpha = g.lr })
      end,
    })
    local p = param(f64({ 1, 1 }))
    local opt = Sign({ p }, { lr = 0.5 })
    p.grad = f64({ 3, -3 })
    opt:step()                          -- in place on a leaf: grad mode is off
    assert.are.same({ 0.5, 1.5 }, p:tolist())
    assert.are.equal(1, opt:state_dict().state[1].n)
  end)
end)

describe("layouts and dtypes", function()
  -- The same Adam steps on p (in some layout) and on a contiguous copy.
  local function compare(p, grads_of)
    local q = param(p:detach():contiguous())
    local opt_p = optim.Adam({ p }, { lr = 0.01, amsgrad = true, weight_decay = 0.1 })
    local opt_q = optim.Adam({ q }, { lr = 0.01, amsgrad = true, weight_decay = 0.1 })
    for k = 1, 3 do
      local g = lunet.randn(q:size(), { dtype = q.dtype })
      p.grad, q.grad = grads_of(g, k), g
      opt_p:step()
      opt_q:step()
    end
    assert.are.equal(0, max_diff(p, q))
    return opt_p
  end

  it("a channels-last parameter keeps its layout and its state follows it", function()
    lunet.manual_seed(1)
    local p = param(lunet.randn(2, 3, 4, 5):contiguous("channels_last"))
    local opt = compare(p, function(g) return g end)      -- a contiguous grad
    assert.is_true(p:is_contiguous("channels_last"))
    assert.is_true(opt.state[p].exp_avg:is_contiguous("channels_last"))
  end)

  it("a strided parameter view is updated in place", function()
    lunet.manual_seed(2)
    local base = lunet.randn(6, 4)
    local p = base:t():requires_grad_(true)              -- a transposed leaf
    assert.is_false(p:is_contiguous())
    compare(p, function(g) return g:t():contiguous():t() end)
    assert.are.equal(0, max_diff(base:t(), p))           -- base saw the update
  end)

  it("gradients of another dtype are converted", function()
    -- p.grad = g refuses another dtype (as PyTorch), but p.data = t does not
    local p, q = param(f64({ 1, 2 })), param(f32({ 1, 2 }))
    local o1 = optim.SGD({ p }, { lr = 0.5, momentum = 0.9 })
    local o2 = optim.SGD({ q }, { lr = 0.5, momentum = 0.9 })
    p.grad, q.grad = f64({ 0.25, -1 }), f32({ 0.25, -1 })
    p.data = f32({ 1, 2 })
    assert.are.equal("float64", p.grad.dtype)
    o1:step()
    o2:step()
    assert.are.same(q:tolist(), p:tolist())
  end)

  it("float16 and bfloat16 parameters follow float32 and keep their dtype", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      for _, cls in ipairs({ "SGD", "Adam" }) do
        lunet.manual_seed(4)
        local ref = param(lunet.randn(16))
        local p = param(ref:detach():to{ dtype = dt }:float())   -- the same start values
        local low = param(p:detach():to{ dtype = dt })
        local o_ref = optim[cls]({ p }, { lr = 0.01, momentum = cls == "SGD" and 0.9 or nil })
        local o_low = optim[cls]({ low }, { lr = 0.01, momentum = cls == "SGD" and 0.9 or nil })
        for _ = 1, 3 do
          local g = lunet.randn(16)
          p.grad, low.grad = g, g:to{ dtype = dt }
          o_ref:step()
          o_low:step()
        end
        assert.are.equal(dt, low.dtype)
        for _, v in pairs(o_low.state[low]) do
          if lunet.is_tensor(v) then assert.are.equal(dt, v.dtype) end
        end
        assert.is_true(max_diff(p, low) < (dt == "float16" and 5e-3 or 3e-2), dt .. " " .. cls)
      end
    end
  end)
end)

describe("errors", function()
  local p = { param(f64({ 1 })) }

  it("reject bad option values with PyTorch's messages", function()
    raises("Invalid learning rate: -0.1", optim.Adam, p, { lr = -0.1 })
    raises("Invalid learning rate: -1", optim.AdamW, p, { lr = -1 })
    raises("Invalid epsilon value: -1e-08", optim.Adam, p, { eps = -1e-8 })
    raises("Invalid beta parameter at index 1: 1.0", optim.Adam, p, { betas = { 1.0, 0.9 } })
    raises("Invalid beta parameter at index 2: -0.5", optim.Adam, p, { betas = { 0.9, -0.5 } })
    raises("Invalid weight_decay value: -0.01", optim.AdamW, p, { weight_decay = -0.01 })
    raises("Invalid weight_decay value: -1", optim.SGD, p, { weight_decay = -1 })
    raises("Invalid momentum value: -0.5", optim.SGD, p, { momentum = -0.5 })
    raises("Nesterov momentum requires a momentum and zero dampening",
           optim.SGD, p, { momentum = 0.9, dampening = 0.1, nesterov = true })
    raises("option 'betas' must be a table of two numbers", optim.Adam, p, { betas = 0.9 })
    raises("option 'amsgrad' must be a boolean", optim.Adam, p, { amsgrad = 1 })
    raises("unknown option 'momentum'", optim.Adam, p, { momentum = 0.9 })
  end)

  it("point at the caller", function()
    local msg = err(function()
      local opt = optim.Adam(p, { lr = -1 })
      return opt
    end)
    assert.matches("optim_spec.lua:%d+: Invalid learning rate", msg)
  end)

  it("reject bad parameter lists", function()
    raises("table of tensors expected, got a single tensor", optim.Adam, p[1])
    raises("Adam got an empty parameter list", optim.Adam, {})
    raises("parameter 2 is not a tensor", optim.Adam, { p[1], 3 })
    raises("duplicate parameters", optim.Adam, { p[1], p[1] })
    local leaf = param(f32({ 1 }))
    raises("can't optimize a non-leaf Tensor", optim.SGD, { leaf * 2 })
  end)

  it("reject parameters that cannot be updated when stepping", function()
    local i = lunet.tensor({ 1, 2 })
    local opt = optim.SGD({ i }, { lr = 1 })
    i.grad = lunet.tensor({ 1, 1 })
    raises("can only optimize Tensors of floating point dtype", opt.step, opt)
  end)

  it("say how to call a method called with '.' instead of ':'", function()
    for _, cls in ipairs({ "SGD", "Adam", "AdamW" }) do
      local opt = optim[cls]({ param(f32({ 1 })) }, { lr = 0.1 })
      local n = 0
      for _, k in ipairs({ "step", "zero_grad", "state_dict", "load_state_dict",
                           "add_param_group" }) do
        local call = load(("local opt = ...; return opt.%s()"):format(k))
        raises(("bad argument #1 to '%s' (optimizer expected, got no value); call it as opt:%s()")
               :format(k, k), call, opt)
        n = n + 1
      end
      -- they are all the methods that Optimizer gives every class
      for k, v in pairs(optim.Optimizer) do
        if type(v) == "function" and k ~= "class" then n = n - 1 end
      end
      assert.are.equal(0, n)
    end
    local opt = optim.SGD({ param(f32({ 1 })) })
    local msg = err(function() opt.load_state_dict(opt:state_dict()) end)
    assert.matches("optim_spec.lua:%d+: bad argument #1 to 'load_state_dict' %(optimizer "
                   .. "expected, got table%)", msg)
    opt:zero_grad()                        -- and ':' still works
  end)

  it("name the state tensor that no longer matches a reshaped parameter", function()
    for _, case in ipairs({ { "SGD", { momentum = 0.9 }, "momentum_buffer" },
                            { "Adam", {}, "exp_avg" } }) do
      local q = param(f32({ 1, 1, 1 }))
      q.grad = f32({ 1, 1, 1 })
      local opt = optim[case[1]]({ q }, case[2])
      opt:step()
      q.data = lunet.ones(5)
      q.grad = lunet.ones(5)                                -- the gradient matches q
      raises(case[3] .. " does not match its parameter's shape and device", opt.step, opt)
    end
    local q = param(f32({ 1 }))
    q.grad = f32({ 1 })
    local opt = optim.SGD({ q }, { momentum = 0.9 })
    opt:step()
    q.data = lunet.ones(2)
    raises("the gradient does not match its parameter's shape and device", opt.step, opt)
  end)
end)
