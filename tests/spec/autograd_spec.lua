-- Autograd from Lua (lua/l_autograd.c): requires_grad, grad accumulation,
-- backward and retain_graph, no_grad, detach, and lunet.gradcheck (central
-- finite differences in float64) through every differentiable op.
local lunet = require("lunet")
local err = require("tests.spec.helpers").err

local F64 = {dtype = "float64"}

-- A float64 leaf that requires grad, with values away from 0 (so that abs,
-- relu and sign have no kink nearby) or positive when asked.
local function leaf(sizes, positive)
  local x = lunet.randn(sizes, F64)
  x = positive and (x:abs() + 0.5) or (x + x:sign() * 0.2)
  return x:detach():requires_grad_()
end

local function check(fn, ...)
  assert.is_true(lunet.gradcheck(fn, {...}))
end

describe("requires_grad", function()
  it("is false by default and set by requires_grad_ or an option", function()
    local x = lunet.ones(2)
    assert.is_false(x.requires_grad)
    assert.is_true(rawequal(x, x:requires_grad_()))
    assert.is_true(x.requires_grad)
    x:requires_grad_(false)
    assert.is_false(x.requires_grad)
    x.requires_grad = true
    assert.is_true(x.requires_grad)
    assert.is_true(lunet.zeros(2, {requires_grad = true}).requires_grad)
  end)

  it("cannot be set on integer tensors or non-leaves", function()
    assert.matches("floating point", err(function() lunet.tensor({1, 2}):requires_grad_() end))
    local y = lunet.ones(2, {requires_grad = true}) * 2
    assert.is_false(y.is_leaf)
    assert.matches("only change requires_grad flags of leaf variables", err(function() y:requires_grad_(false) end))
  end)

  it("propagates through ops and names the grad_fn", function()
    local x = lunet.ones(2, {requires_grad = true})
    local y = x * 3
    assert.is_true(y.requires_grad)
    assert.is_true(x.is_leaf)
    assert.is_nil(x.grad_fn)
    assert.equal("MulBackward0", y.grad_fn)
    assert.equal("SumBackward0", y:sum().grad_fn)
  end)
end)

describe("backward", function()
  it("fills .grad of leaves, implicitly 1 for a scalar", function()
    local x = lunet.tensor({1, 2, 3}, {dtype = "float64", requires_grad = true})
    assert.is_nil(x.grad)
    local y = (x * x):sum()
    y:backward()
    assert.same({2, 4, 6}, x.grad:tolist())
    assert.is_false(x.grad.requires_grad)
  end)

  it("takes an explicit gradient for non-scalars", function()
    local x = lunet.tensor({1, 2}, {dtype = "float64", requires_grad = true})
    local y = x * 3
    assert.matches("grad can be implicitly created only for scalar outputs",
      err(function() y:backward() end))
    y:backward(lunet.tensor({1, 10}, F64))
    assert.same({3, 30}, x.grad:tolist())
  end)

  it("accumulates over two backwards", function()
    local x = lunet.tensor({1, 2}, {dtype = "float64", requires_grad = true})
    ;(x * x):sum():backward()
    ;(x * 5):sum():backward()
    assert.same({7, 9}, x.grad:tolist())
    x.grad = nil
    assert.is_nil(x.grad)
    ;(x * 2):sum():backward()
    assert.same({2, 2}, x.grad:tolist())
  end)

  it("sums a leaf's gradients before adding them to its .grad", function()
    -- One accumulate node per leaf, as PyTorch: 1 + (e + e) is 1 + 2^-23 in
    -- float32, where (1 + e) + e would round back to 1 twice.
    local w = lunet.tensor({1}, {dtype = "float32", requires_grad = true})
    ;(w * 1):sum():backward()
    local e = 2.0 ^ -24
    ;((w * e):sum() + (w * e):sum()):backward()
    assert.equal(1 + 2.0 ^ -23, w.grad:item())
    -- two graphs alive at once share it, and each still backpropagates alone
    local a, b = (w * 2):sum(), (w * 3):sum()
    w.grad = nil
    a:backward()
    b:backward()
    assert.equal(5, w.grad:item())
  end)

  it("frees the graph unless retain_graph is given", function()
    local x = lunet.tensor({1, 2}, {dtype = "float64", requires_grad = true})
    local y = (x * x):sum()
    y:backward({retain_graph = true})
    y:backward()
    assert.same({4, 8}, x.grad:tolist())
    assert.matches("Trying to backward through the graph a second time",
      err(function() y:backward() end))
    -- the interpreter and the leaf stay usable
    ;(x * 1):sum():backward()
    assert.same({5, 9}, x.grad:tolist())
  end)

  it("takes retain_graph after an explicit gradient", function()
    local x = lunet.ones(2, {dtype = "float64", requires_grad = true})
    local y = x * 2
    local g = lunet.ones(2, F64)
    y:backward(g, {retain_graph = true})
    y:backward(g)
    assert.same({4, 4}, x.grad:tolist())
  end)

  it("refuses tensors that do not require grad", function()
    assert.matches("does not require grad", err(function() lunet.ones(1):sum():backward() end))
  end)

  it("allows setting a gradient by hand", function()
    local x = lunet.ones(2)
    x.grad = lunet.tensor({1.0, 2.0})
    assert.same({1, 2}, x.grad:tolist())
    assert.matches("different size", err(function() x.grad = lunet.ones(3) end))
    for _, dtype in ipairs{"int64", "bool", "float64", "float16"} do
      assert.matches("assigned grad has data of a different type",
        err(function() x.grad = lunet.ones(2, {dtype = dtype}) end), dtype)
    end
    assert.same({1, 2}, x.grad:tolist())    -- refused, the old grad kept
    local p = lunet.ones(3, {dtype = "float64", requires_grad = true})
    assert.matches("different type", err(function() p.grad = lunet.ones(3) end))
    p.grad = lunet.ones(3, {dtype = "float64"})
    if lunet.cuda.is_available() then
      assert.matches("assigned grad has data located on a different device",
        err(function() x.grad = lunet.ones(2, {device = "cuda"}) end))
    end
  end)
end)

describe("no_grad", function()
  it("records nothing inside and returns the function's results", function()
    local x = lunet.ones(2, {requires_grad = true})
    local y, n = lunet.no_grad(function(a, k) return a * k, k + 1 end, x, 2)
    assert.is_false(y.requires_grad)
    assert.equal(3, n)
    assert.is_true(lunet.is_grad_enabled())
  end)

  it("restores grad mode when the function raises", function()
    local ok, msg = pcall(lunet.no_grad, function() error("boom") end)
    assert.is_false(ok)
    assert.matches("boom", msg)
    assert.is_true(lunet.is_grad_enabled())
  end)

  it("nests with enable_grad", function()
    local x = lunet.ones(2, {requires_grad = true})
    lunet.no_grad(function()
      assert.is_false(lunet.is_grad_enabled())
      local y = lunet.enable_grad(function() return x * 2 end)
      assert.is_true(y.requires_grad)
      assert.is_false(lunet.is_grad_enabled())
    end)
    local was = lunet.set_grad_enabled(false)
    assert.is_true(was)
    assert.is_false((x * 2).requires_grad)
    lunet.set_grad_enabled(true)
  end)
end)

describe("detach", function()
  it("shares storage and drops history", function()
    local x = lunet.ones(3, {requires_grad = true})
    local y = x * 2
    local d = y:detach()
    assert.is_false(d.requires_grad)
    assert.is_true(d.is_leaf)
    d[1] = 7
    assert.equal(7, y[1]:item())
    assert.is_false(x.data.requires_grad)
  end)

  it("x.data = t replaces the data and keeps the identity", function()
    local x = lunet.ones(2, {requires_grad = true})
    local same_x = x
    x.data = lunet.tensor({3.0, 4.0}, F64)
    assert.is_true(rawequal(same_x, x))
    assert.equal("float64", x.dtype)
    assert.same({3, 4}, x:tolist())
  end)
end)

describe("gradcheck", function()
  lunet.manual_seed(0)

  it("passes for elementwise binary ops, with broadcasting", function()
    local a, b = leaf({3, 4}), leaf({3, 4})
    local r = leaf({4})
    check(function(x, y) return x + y end, a, b)
    check(function(x, y) return x - y end, a, r)
    check(function(x, y) return x * y end, a, b)
    check(function(x, y) return x / y end, a, r)
    check(function(x, y) return x:pow(y) end, leaf({3, 4}, true), b)
    check(function(x, y) return x:maximum(y) end, a, b)
    check(function(x, y) return x:minimum(y) end, a, r)
  end)

  it("passes with Lua numbers on either side", function()
    local a = leaf({2, 3})
    check(function(x) return 2 - x end, a)
    check(function(x) return x * 3 + 1 end, a)
    check(function(x) return 1 / x end, a)
    check(function(x) return x ^ 3 end, a)
    check(function(x) return 2 ^ x end, a)
    check(function(x) return -x end, a)
  end)

  it("passes for unary ops", function()
    local a, p = leaf({5}), leaf({5}, true)
    check(function(x) return x:abs() end, a)
    check(function(x) return x:relu() end, a)
    check(function(x) return x:exp() end, a)
    check(function(x) return x:neg() end, a)
    check(function(x) return x:sqrt() end, p)
    check(function(x) return x:log() end, p)
  end)

  it("passes for reductions", function()
    local a = leaf({3, 4, 2})
    check(function(x) return x:sum() end, a)
    check(function(x) return x:sum(2) end, a)
    check(function(x) return x:sum({1, 3}, true) end, a)
    check(function(x) return x:mean() end, a)
    check(function(x) return x:mean(-1) end, a)
    check(function(x) return x:var() end, a)
    check(function(x) return x:var(2, {unbiased = false}) end, a)
    check(function(x) return x:var({1, 3}, {keepdim = true}) end, a)
    check(function(x) return x:std(1) end, a)
    check(function(x) return x:max() end, a)
    check(function(x) return (x:max(2)) end, a)
    check(function(x) return (x:min(3)) end, a)
  end)

  it("passes for matmul", function()
    check(function(x, y) return x:matmul(y) end, leaf({3, 4}), leaf({4, 2}))
    check(function(x, y) return x:matmul(y) end, leaf({4}), leaf({4, 2}))
    check(function(x, y) return x:matmul(y) end, leaf({3, 4}), leaf({4}))
    check(function(x, y) return x:matmul(y) end, leaf({2, 3, 4}), leaf({2, 4, 2}))
    check(function(x, y) return x:t():matmul(y) end, leaf({4, 3}), leaf({4, 2}))
  end)

  it("passes for views and copies", function()
    local a = leaf({2, 3, 4})
    check(function(x) return x:view(6, 4) * 1 end, a)
    check(function(x) return x:reshape(4, -1) * 1 end, a)
    check(function(x) return x:permute(3, 1, 2) * 1 end, a)
    check(function(x) return x:transpose(1, 3):reshape(24) end, a)
    check(function(x) return x:narrow(2, 2, 2) * 1 end, a)
    check(function(x) return x:select(3, 4) * 1 end, a)
    check(function(x) return x[2] * 1 end, a)
    check(function(x) return x:unsqueeze(2):expand(2, 5, 3, 4) * 1 end, a)
    check(function(x) return x:unsqueeze(1):squeeze(1) * 1 end, a)
    check(function(x) return x:flatten(2) * 1 end, a)
    check(function(x) return x:clone() end, a)
    check(function(x) return x:view(2, 3, 2, 2):contiguous("channels_last") end, a)
  end)

  it("passes on channels-last inputs", function()
    local a = leaf({2, 3, 2, 2}):detach():contiguous("channels_last"):requires_grad_()
    assert.is_true(a:is_contiguous("channels_last"))
    check(function(x) return (x * x):sum({1, 3, 4}) end, a)
    check(function(x) return x:var({1, 3, 4}, {unbiased = false}) end, a)
  end)

  it("passes for cat and chains of ops", function()
    local a, b = leaf({2, 3}), leaf({1, 3})
    check(function(x, y) return lunet.cat({x, y}) end, a, b)
    check(function(x, y) return lunet.cat({x, x * y}, 2) end, a, b)
    check(function(x, y)
      local m = x:mean(1, true)
      local v = x:var(1, {unbiased = false, keepdim = true})
      return (x - m) / (v + 1e-5):sqrt() * y + y:exp()
    end, leaf({4, 3}), b)
  end)

  it("raises with a report when gradients are wrong", function()
    local a = leaf({3})
    assert.matches("Jacobian mismatch",
      err(lunet.gradcheck, function(x) return (x * x):detach() * x end, {a}))
  end)

  it("turns an error in the function into an error, leaving Lua usable", function()
    local a = leaf({3})
    assert.matches("gradcheck: .*oops",
      err(lunet.gradcheck, function() error("oops") end, {a}))
    assert.matches("must return a tensor",
      err(lunet.gradcheck, function() return 1 end, {a}))
    assert.matches("float64", err(lunet.gradcheck, function(x) return x end,
      {lunet.ones(2, {requires_grad = true})}))
    assert.is_true(lunet.gradcheck(function(x) return x * 2 end, a))
    assert.is_true(lunet.is_grad_enabled())
  end)

  it("leaves the inputs' values and grads as they were", function()
    local a = leaf({3})
    local before = a:tolist()
    check(function(x) return x * x end, a)
    assert.same(before, a:tolist())
    assert.is_nil(a.grad)
  end)
end)
