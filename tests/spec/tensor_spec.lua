-- Tensors from Lua: creation, properties, views, conversions, arithmetic,
-- reductions, printing and errors (lua/l_tensor.c, l_create.c, l_view.c,
-- l_ops.c, l_reduce.c). Expected values are computed by hand in Lua.
local lunet = require("lunet")
local err = require("tests.spec.helpers").err

-- Compare nested tables of numbers with a tolerance.
local function near(a, b, tol)
  tol = tol or 1e-6
  if type(a) == "table" then
    if type(b) ~= "table" or #a ~= #b then return false end
    for i = 1, #a do
      if not near(a[i], b[i], tol) then return false end
    end
    return true
  end
  if type(a) == "number" and type(b) == "number" then
    return math.abs(a - b) <= tol * (1 + math.abs(b))
  end
  return a == b
end

-- A plain assertion with both values printed.
local function same(actual, expected, tol)
  if lunet.is_tensor(actual) then actual = actual:tolist() end
  local function show(v)
    if type(v) ~= "table" then return tostring(v) end
    local parts = {}
    for i = 1, #v do parts[i] = show(v[i]) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  if not near(actual, expected, tol) then
    error(("expected %s, got %s"):format(show(expected), show(actual)), 2)
  end
end

describe("lunet.tensor", function()
  it("infers int64 for integers, float32 for floats, bool for booleans", function()
    assert.equal("int64", lunet.tensor({{1, 2}, {3, 4}}).dtype)
    assert.equal("float32", lunet.tensor({1, 2.5}).dtype)
    assert.equal("bool", lunet.tensor({true, false}).dtype)
    assert.equal("float32", lunet.tensor({}).dtype)
    assert.equal("int64", lunet.tensor(3).dtype)
    assert.equal("float32", lunet.tensor(3.5).dtype)
  end)

  it("keeps the nesting as the shape", function()
    local x = lunet.tensor({{{1, 2, 3}, {4, 5, 6}}})
    same(x:size(), {1, 2, 3})
    same(x:tolist(), {{{1, 2, 3}, {4, 5, 6}}})
    same(lunet.tensor({}):size(), {0})
    same(lunet.tensor({{}, {}}):size(), {2, 0})
    assert.equal(0, lunet.tensor(7):dim())
    assert.equal(7, lunet.tensor(7):item())
  end)

  it("round-trips every dtype through tolist", function()
    local data = {{1, 0, 3}, {-4, 5, 2}}
    for _, dt in ipairs({"float32", "float64", "float16", "bfloat16", "int64"}) do
      local x = lunet.tensor(data, {dtype = dt})
      assert.equal(dt, x.dtype)
      same(x:tolist(), data)
    end
    local b = lunet.tensor({{true, false}, {false, true}})
    assert.same({{true, false}, {false, true}}, b:tolist())
    same(lunet.tensor(data, {dtype = "bool"}):tolist(),
         {{true, false, true}, {true, true, true}})
  end)

  it("gives integers for int64 and floats for floating tensors", function()
    local big = (1 << 53) + 1
    local x = lunet.tensor({big, -big})
    assert.equal(big, x:tolist()[1])
    assert.equal("integer", math.type(x:tolist()[2]))
    assert.equal(big, x[1]:item())
    assert.equal("float", math.type(lunet.tensor({1}, {dtype = "float64"}):tolist()[1]))
    assert.equal(true, lunet.tensor(true):item())
  end)

  it("accepts a tensor and copies it without history", function()
    local a = lunet.tensor({1.0, 2.0}, {requires_grad = true})
    local b = lunet.tensor(a, {dtype = "float64"})
    assert.equal("float64", b.dtype)
    assert.is_false(b.requires_grad)
    b[1] = 10
    same(a, {1, 2})
  end)

  it("rejects ragged tables and bad elements with a clear message", function()
    assert.matches("expected sequence of length 2 at dim 2 %(got 3%)",
      err(lunet.tensor, {{1, 2}, {3, 4, 5}}))
    assert.matches("expected sequence of length 2 at dim 3 %(got 1%)",
      err(lunet.tensor, {{{1, 2}, {3}}}))
    assert.matches("expected a number or boolean", err(lunet.tensor, {1, "a"}))
    assert.matches("expected sequence", err(lunet.tensor, {{1, 2}, 3}))
    assert.matches("bad argument #1 to '.-tensor' %(table, number, boolean or tensor expected, got string%)",
      err(lunet.tensor, "x"))
  end)

  it("refuses numbers int64 cannot hold, as PyTorch, and casts them to floats", function()
    for _, v in ipairs({0 / 0, math.huge, 1e300, 2.0 ^ 63}) do
      assert.matches("value cannot be converted to type int64 without overflow",
        err(lunet.tensor, {1, v}, {dtype = "int64"}))
    end
    assert.matches("value cannot be converted to type int64 without overflow",
      err(lunet.tensor, 0 / 0, {dtype = "int64"}))
    assert.same({math.mininteger, -2}, lunet.tensor({-2.0 ^ 63, -2.5}, {dtype = "int64"}):tolist())
    assert.equal(math.huge, lunet.tensor({1e300}):tolist()[1])
  end)

  it("takes dtype, device and requires_grad options", function()
    local x = lunet.tensor({1, 2}, {dtype = "float64", device = "cpu", requires_grad = true})
    assert.equal("float64", x.dtype)
    assert.equal("cpu", x.device)
    assert.is_true(x.requires_grad)
    assert.matches("unknown option 'dtyp'", err(lunet.tensor, {1}, {dtyp = "float64"}))
    assert.matches("unknown dtype 'f32'", err(lunet.tensor, {1}, {dtype = "f32"}))
  end)
end)

describe("creation functions", function()
  it("take sizes as integers or a table, then options", function()
    same(lunet.zeros(2, 3):size(), {2, 3})
    same(lunet.ones({2, 3}):size(), {2, 3})
    same(lunet.empty(4):size(), {4})
    same(lunet.zeros(2, 3, {dtype = "float64"}):tolist(), {{0, 0, 0}, {0, 0, 0}})
    assert.equal("float64", lunet.ones({2}, {dtype = "float64"}).dtype)
    assert.equal("float32", lunet.zeros(1).dtype)
    same(lunet.ones(2, 2):tolist(), {{1, 1}, {1, 1}})
    same(lunet.zeros(lunet.zeros(3, 1):size()):size(), {3, 1})
    assert.equal(0, lunet.zeros():dim())
  end)

  it("full infers its dtype from the value as PyTorch", function()
    local f = lunet.full({2, 3}, 7)
    assert.equal("int64", f.dtype)
    same(f:tolist(), {{7, 7, 7}, {7, 7, 7}})
    assert.equal("float32", lunet.full({2}, 0.5).dtype)
    assert.equal("bool", lunet.full({2}, true).dtype)
    same(lunet.full({2}, 1.5, {dtype = "float64"}), {1.5, 1.5})
  end)

  it("full and fill_ refuse a value the dtype cannot hold, as PyTorch", function()
    local function msg(ty) return "value cannot be converted to type " .. ty .. " without overflow" end
    assert.matches(msg("int64_t"), err(lunet.full, {2}, 1e300, {dtype = "int64"}))
    assert.matches(msg("int64_t"), err(lunet.full, {2}, 0 / 0, {dtype = "int64"}))
    assert.matches(msg("float"), err(lunet.full, {2}, 1e300))
    assert.matches(msg("c10::Half"), err(lunet.full, {2}, 70000, {dtype = "float16"}))
    local i = lunet.zeros(2, {dtype = "int64"})
    assert.matches(msg("int64_t"), err(i.fill_, i, 1e300))
    assert.matches(msg("int64_t"), err(function() i[1] = -math.huge end))
    assert.matches(msg("int64_t"), err(lunet.full_like, i, 0 / 0))
    assert.matches(msg("float"), err(function() return lunet.zeros(2):fill_(-1e39) end))
    same(i, {0, 0})
    -- infinities and NaN are float values; a number in an expression is cast
    local inf = {math.huge, math.huge}
    assert.same(inf, lunet.full({2}, math.huge):tolist())
    assert.same(inf, (lunet.zeros(2) + 1e300):tolist())
    assert.same(inf, (i + 1e300):tolist())
  end)

  it("rand and randn follow the seed", function()
    lunet.manual_seed(42)
    local a = lunet.randn(4, 5)
    lunet.manual_seed(42)
    local b = lunet.randn(4, 5)
    same(a, b:tolist(), 0)
    local u = lunet.rand(1000):tolist()
    for _, v in ipairs(u) do assert.is_true(v >= 0 and v < 1) end
    assert.equal("float64", lunet.randn(3, {dtype = "float64"}).dtype)
    assert.matches("float", err(lunet.randn, 3, {dtype = "int64"}))
  end)

  it("uniform_ and normal_ fill in place", function()
    local x = lunet.empty(2000, {dtype = "float64"})
    assert.is_true(rawequal(x, x:uniform_(-2, 3)))
    for _, v in ipairs(x:tolist()) do assert.is_true(v >= -2 and v < 3) end
    x:normal_(5, 0.1)
    assert.is_true(math.abs(x:mean():item() - 5) < 0.05)
    assert.is_true(math.abs(x:std():item() - 0.1) < 0.02)
  end)

  it("randperm gives a 1-based permutation", function()
    local p = lunet.randperm(10):tolist()
    table.sort(p)
    same(p, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
  end)

  it("arange is int64 for integers and float32 otherwise", function()
    local a = lunet.arange(5)
    assert.equal("int64", a.dtype)
    same(a, {0, 1, 2, 3, 4})
    same(lunet.arange(2, 8, 2), {2, 4, 6})
    local f = lunet.arange(0, 1, 0.25)
    assert.equal("float32", f.dtype)
    same(f, {0, 0.25, 0.5, 0.75})
    assert.equal("float64", lunet.arange(3, {dtype = "float64"}).dtype)
  end)

  it("arange counts and steps int64 bounds exactly, up to the int64 limits", function()
    local max, min = math.maxinteger, math.mininteger
    assert.same({max - 2, max - 1}, lunet.arange(max - 2, max):tolist())
    assert.same({max, max - 4, max - 8}, lunet.arange(max, max - 9, -4):tolist())
    assert.same({min}, lunet.arange(min, min + 10, 1 << 62):tolist())
    assert.same({0, 3, 6, 9}, lunet.arange(0, 10, 3):tolist())
    assert.matches("too many elements", err(lunet.arange, min, max))
    assert.matches("step must be nonzero", err(lunet.arange, 0, 5, 0))
    assert.matches("upper bound and larger bound inconsistent with step sign",
      err(lunet.arange, 5, 0))
  end)

  it("has the _like variants", function()
    local x = lunet.ones(2, 3, {dtype = "float64"})
    local z = lunet.zeros_like(x)
    assert.equal("float64", z.dtype)
    same(z:size(), {2, 3})
    same(lunet.full_like(x, 3), {{3, 3, 3}, {3, 3, 3}})
    assert.equal("float32", lunet.ones_like(x, {dtype = "float32"}).dtype)
    same(lunet.randn_like(x):size(), {2, 3})
  end)

  it("keeps a channels-last tensor's memory format in the _like variants", function()
    local x = lunet.randn(2, 3, 4, 5):contiguous("channels_last")
    for _, f in ipairs{ lunet.empty_like, lunet.zeros_like, lunet.ones_like,
                        lunet.rand_like, lunet.randn_like } do
      assert.is_true(f(x):is_contiguous("channels_last"))
    end
    local full = lunet.full_like(x, 7)
    assert.is_true(full:is_contiguous("channels_last"))
    assert.equal(7 * 120, full:sum():item())
    lunet.manual_seed(3)
    local a = lunet.randn_like(x)
    lunet.manual_seed(3)
    assert.is_true(lunet.allclose(a, lunet.randn(2, 3, 4, 5), {rtol = 0, atol = 0}))
    assert.is_true(lunet.zeros_like(lunet.randn(2, 3)):is_contiguous())
  end)

  it("rejects negative sizes", function()
    assert.matches("negative size", err(lunet.zeros, 2, -1))
  end)

  it("rejects a size that is not an integer instead of ending the sizes there", function()
    assert.matches("bad argument #2 to '.-zeros' %(integer expected, got string%)",
      err(lunet.zeros, 2, "3"))
    assert.matches("bad argument #1 to '.-ones' %(integer expected at index 2, got string%)",
      err(lunet.ones, {2, "3"}))
    assert.matches("bad argument #3 to '.-zeros' %(no more arguments expected%)",
      err(lunet.zeros, 2, nil, 3))
  end)
end)

describe("properties", function()
  local x = lunet.zeros(8, 3, 4, 5)

  it("size, stride, dim, numel and shape", function()
    same(x:size(), {8, 3, 4, 5})
    same(x.shape, {8, 3, 4, 5})
    assert.equal(3, x:size(2))
    assert.equal(5, x:size(-1))
    same(x:stride(), {60, 20, 5, 1})
    assert.equal(20, x:stride(2))
    assert.equal(4, x:dim())
    assert.equal(4, x.ndim)
    assert.equal(480, x:numel())
    assert.equal("float32", x.dtype)
    assert.equal("cpu", x.device)
    assert.equal(4, x:element_size())
  end)

  it("gives 1-based dimension errors", function()
    assert.matches("Dimension out of range %(expected to be in range of %[%-4, 4%], but got 5%)",
      err(x.size, x, 5))
    assert.matches("Dimension out of range %(expected to be in range of %[%-4, 4%], but got %-5%)",
      err(x.size, x, -5))
    assert.matches("1%-based", err(x.size, x, 0))
  end)

  it("is one object per tensor, so == is identity", function()
    local y = x:contiguous()
    assert.is_true(rawequal(x, y))
    assert.is_true(x == y)
    assert.is_false(x == x:clone())
    local t = {}
    t[x] = 1
    assert.equal(1, t[y])
  end)

  it("refuses unknown fields", function()
    assert.matches("cannot set field 'foo'", err(function() x.foo = 1 end))
    assert.is_nil(x.foo)
  end)
end)

describe("views", function()
  it("share storage with their base", function()
    local base = lunet.arange(12, {dtype = "float32"})
    local v = base:view(3, 4)
    v[2][3] = 100
    assert.equal(100, base[7]:item())
    local n = v:narrow(2, 2, 2)
    n:fill_(-1)
    same(base, {0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11})
    local s = v:select(1, 3)
    s:zero_()
    same(base:narrow(1, 9, 4), {0, 0, 0, 0})
  end)

  it("view and reshape accept -1 and tables", function()
    local x = lunet.arange(24)
    same(x:view(2, -1, 4):size(), {2, 3, 4})
    same(x:view({4, 6}):size(), {4, 6})
    same(x:reshape(-1, 2):size(), {12, 2})
    local t = x:view(4, 6):t()
    assert.is_false(t:is_contiguous())
    assert.matches("view", err(t.view, t, 24))
    same(t:reshape(24):narrow(1, 1, 4), {0, 6, 12, 18})
    same(x:view_as(lunet.zeros(6, 4)):size(), {6, 4})
    -- sizes whose product overflows int64 are invalid, as in PyTorch
    assert.matches("shape '%[9223372036854775807, 2%]' is invalid for input of size 24",
      err(x.view, x, math.maxinteger, 2))
    assert.matches("shape '%[%-1, 9223372036854775807, 4%]' is invalid for input of size 24",
      err(x.reshape, x, -1, math.maxinteger, 4))
  end)

  it("view, reshape and expand name a size that is not an integer", function()
    local x = lunet.zeros(2, 3, 4)
    assert.matches("bad argument #2 to 'view' %(integer expected, got string%)",
      err(function() return x:view(6, "4") end))
    assert.matches("bad argument #2 to 'reshape' %(integer expected, got boolean%)",
      err(function() return x:reshape(6, true) end))
    assert.matches("bad argument #3 to 'expand' %(integer expected, got string%)",
      err(function() return x:expand(2, 3, "4") end))
    assert.matches("bad argument #1 to 'view' %(integer expected at index 2, got string%)",
      err(function() return x:view({6, "4"}) end))
    assert.matches("bad argument #2 to 'view' %(integer expected, got nil%)",
      err(function() return x:view(6, nil, 4) end))
    assert.matches("bad argument #2 to 'view' %(no more arguments expected%)",
      err(function() return x:view({6, 4}, 5) end))
    same(x:view(6, 4.0):size(), {6, 4})
    assert.equal(0, lunet.zeros(1):view({}):dim())
  end)

  it("permute and transpose use 1-based dims", function()
    local x = lunet.zeros(2, 3, 4, 5)
    local p = x:permute(1, 3, 4, 2)
    same(p:size(), {2, 4, 5, 3})
    same(p:stride(), {60, 5, 1, 20})
    same(x:permute({4, 3, 2, 1}):size(), {5, 4, 3, 2})
    same(x:transpose(2, -1):size(), {2, 5, 4, 3})
    local m = lunet.tensor({{1, 2, 3}, {4, 5, 6}})
    same(m:transpose(1, 2), {{1, 4}, {2, 5}, {3, 6}})
  end)

  it("narrow takes a 1-based start", function()
    local x = lunet.tensor({10, 20, 30, 40, 50})
    same(x:narrow(1, 2, 3), {20, 30, 40})
    same(x:narrow(1, -2, 2), {40, 50})
    same(x:narrow(1, 6, 0):size(), {0})
    assert.matches("exceeds dimension size %(5%)", err(x.narrow, x, 1, 4, 3))
    -- a length that would overflow start + length gets the same message
    assert.matches("narrow%(%): start %(2%) %+ length %(9223372036854775807%) %- 1 "
      .. "exceeds dimension size %(5%)%.", err(x.narrow, x, 1, 2, math.maxinteger))
    assert.matches("bad argument #2 to 'narrow' %(number expected, got nil%)",
      err(function() return x:narrow(1, nil, 2) end))
  end)

  it("select and integer indexing are 1-based", function()
    local x = lunet.tensor({{1, 2, 3}, {4, 5, 6}})
    same(x[2], {4, 5, 6})
    same(x[-1], {4, 5, 6})
    same(x:select(2, 3), {3, 6})
    assert.equal(5, x[2][2]:item())
    assert.matches("index 3 is out of bounds for dimension 1 with size 2", err(function() return x[3] end))
    assert.matches("index 4 is out of bounds for dimension 2 with size 3", err(x.select, x, 2, 4))
    assert.matches("0%-dim", err(function() return lunet.tensor(1)[1] end))
  end)

  it("assigns numbers and tensors through indexing", function()
    local x = lunet.zeros(2, 3)
    x[1] = 5
    x[2] = lunet.tensor({1, 2, 3})
    same(x, {{5, 5, 5}, {1, 2, 3}})
    x[2][1] = 9
    same(x[2], {9, 2, 3})
  end)

  it("expand broadcasts with stride 0", function()
    local x = lunet.tensor({{1}, {2}})
    local e = x:expand(2, 3)
    same(e:stride(), {1, 0})
    same(e, {{1, 1, 1}, {2, 2, 2}})
    same(x:expand(-1, 2), {{1, 1}, {2, 2}})
    same(x:expand_as(lunet.zeros(2, 4)):size(), {2, 4})
  end)

  it("squeeze, unsqueeze and flatten", function()
    local x = lunet.zeros(2, 1, 3, 1)
    same(x:squeeze():size(), {2, 3})
    same(x:squeeze(2):size(), {2, 3, 1})
    same(x:squeeze(1):size(), {2, 1, 3, 1})
    same(lunet.zeros(3):unsqueeze(1):size(), {1, 3})
    same(lunet.zeros(3):unsqueeze(-1):size(), {3, 1})
    same(lunet.zeros(3, 4):unsqueeze(2):size(), {3, 1, 4})
    same(lunet.zeros(2, 3, 4):flatten():size(), {24})
    same(lunet.zeros(2, 3, 4):flatten(2):size(), {2, 12})
    same(lunet.zeros(2, 3, 4, 5):flatten(2, 3):size(), {2, 12, 5})
  end)
end)

describe("memory formats", function()
  it("contiguous('channels_last') makes NHWC strides with the same values", function()
    local x = lunet.arange(120, {dtype = "float32"}):view(2, 3, 4, 5)
    local cl = x:contiguous("channels_last")
    same(cl:size(), {2, 3, 4, 5})
    same(cl:stride(), {60, 1, 15, 3})
    assert.is_true(cl:is_contiguous("channels_last"))
    assert.is_false(cl:is_contiguous())
    assert.is_true(x:is_contiguous())
    assert.is_true(lunet.allclose(cl, x))
    same(cl:contiguous():stride(), {60, 20, 5, 1})
    -- clone keeps the layout by default
    same(cl:clone():stride(), {60, 1, 15, 3})
    same(cl:clone("contiguous_format"):stride(), {60, 20, 5, 1})
  end)

  it("works for 5D tensors", function()
    local x = lunet.zeros(2, 3, 2, 2, 2):contiguous("channels_last")
    same(x:stride(), {24, 1, 12, 6, 3})
    assert.is_true(x:is_contiguous("channels_last"))
  end)

  it("rejects unknown formats", function()
    local x = lunet.zeros(1, 1, 1, 1)
    assert.matches("invalid option 'nhwc'", err(x.contiguous, x, "nhwc"))
  end)
end)

describe("conversions", function()
  local x = lunet.tensor({{1.5, -2}, {3, 4}})

  it("to() takes a dtype, a device, options or a tensor", function()
    assert.equal("float64", x:to("float64").dtype)
    assert.equal("float16", x:to({dtype = "float16"}).dtype)
    assert.equal("int64", x:to(lunet.zeros(1, {dtype = "int64"})).dtype)
    assert.is_true(rawequal(x, x:to("cpu")))
    assert.is_true(rawequal(x, x:to("float32")))
    assert.matches("expected a device or dtype name, got 'floaty'", err(x.to, x, "floaty"))
  end)

  it("has the PyTorch shorthands", function()
    assert.equal("float64", x:double().dtype)
    assert.equal("float32", x:double():float().dtype)
    assert.equal("float16", x:half().dtype)
    assert.equal("bfloat16", x:bfloat16().dtype)
    same(x:long(), {{1, -2}, {3, 4}})
    assert.same({{true, true}, {true, true}}, x:bool():tolist())
    assert.is_true(rawequal(x, x:cpu()))
  end)

  it("casts NaN to int64 as 0 and saturates values out of range", function()
    local f = lunet.tensor({0 / 0, math.huge, -math.huge, 1e300, -2.5}, {dtype = "float64"})
    local want = {0, math.maxinteger, math.mininteger, math.maxinteger, -2}
    assert.same(want, f:long():tolist())
    assert.same(want, f:float():to("int64"):tolist())
  end)

  it("16-bit floats round as IEEE", function()
    same(lunet.tensor({1 / 3}):half(), {0.333251953125}, 0)
    same(lunet.tensor({1 / 3}):bfloat16(), {0.333984375}, 0)
  end)

  it("reports a missing CUDA device clearly", function()
    if lunet.cuda.is_available() then
      assert.equal("cuda:0", x:cuda().device)
      same(x:cuda():cpu(), x:tolist())
    else
      assert.is_false(lunet.cuda.is_available())
      assert.equal(0, lunet.cuda.device_count())
      assert.matches("CUDA", err(x.to, x, "cuda"))
      assert.matches("CUDA", err(x.cuda, x))
    end
  end)

  it("copy_ converts dtype and broadcasts", function()
    local d = lunet.zeros(2, 2, {dtype = "float64"})
    assert.is_true(rawequal(d, d:copy_(lunet.tensor({7, 8}))))
    same(d, {{7, 8}, {7, 8}})
    assert.is_true(rawequal(d, d:fill_(2.5)))
    same(d, {{2.5, 2.5}, {2.5, 2.5}})
  end)
end)

describe("arithmetic", function()
  local a = lunet.tensor({{1, 2, 3}, {4, 5, 6}}, {dtype = "float64"})
  local b = lunet.tensor({10, 20, 30}, {dtype = "float64"})

  it("broadcasts tensors", function()
    same(a + b, {{11, 22, 33}, {14, 25, 36}})
    same(a - b, {{-9, -18, -27}, {-6, -15, -24}})
    same(a * b, {{10, 40, 90}, {40, 100, 180}})
    same(b / a, {{10, 10, 10}, {2.5, 4, 5}})
    same(-a, {{-1, -2, -3}, {-4, -5, -6}})
    same(a ^ 2, {{1, 4, 9}, {16, 25, 36}})
    same(a:view(2, 3, 1) + b:view(1, 3), {{{11, 21, 31}, {12, 22, 32}, {13, 23, 33}},
                                          {{14, 24, 34}, {15, 25, 35}, {16, 26, 36}}})
  end)

  it("takes numbers on either side", function()
    same(a + 1, {{2, 3, 4}, {5, 6, 7}})
    same(1 + a, {{2, 3, 4}, {5, 6, 7}})
    same(10 - a, {{9, 8, 7}, {6, 5, 4}})
    same(a - 10, {{-9, -8, -7}, {-6, -5, -4}})
    same(2 * a, {{2, 4, 6}, {8, 10, 12}})
    same(12 / a, {{12, 6, 4}, {3, 2.4, 2}})
    same(2 ^ a, {{2, 4, 8}, {16, 32, 64}})
    assert.equal("float64", (a + 1).dtype)
  end)

  it("promotes dtypes as PyTorch", function()
    local i = lunet.tensor({1, 2})
    assert.equal("int64", (i + 1).dtype)
    assert.equal("float32", (i + 0.5).dtype)
    assert.equal("float32", (i / 2).dtype)
    same(i / 2, {0.5, 1})
    assert.equal("float64", (i + lunet.tensor({1}, {dtype = "float64"})).dtype)
    assert.equal("float32", (lunet.ones(2):half() + lunet.ones(2):bfloat16()).dtype)
  end)

  it("fills int64 tensors with integers exactly, past a double's 53 bits", function()
    local max, min = math.maxinteger, math.mininteger
    local t = lunet.zeros(2, {dtype = "int64"})
    assert.are.same({max, max}, t:fill_(max):tolist())
    t[2] = max - 5
    assert.are.same({max, max - 5}, t:tolist())
    assert.are.same({max - 1}, lunet.full({1}, max - 1):tolist())
    assert.are.same({min, min}, lunet.full_like(t, min):tolist())
  end)

  it("wraps int64 sums and products around as PyTorch", function()
    local max, min = math.maxinteger, math.mininteger
    local i = lunet.tensor({max, min, 3})
    assert.are.same({min, min + 1, 4}, (i + 1):tolist())
    assert.are.same({max - 1, max, 2}, (i - 1):tolist())
    assert.are.same({-2, 0, 6}, (i * 2):tolist())
    assert.are.same({max - 2, min, 9}, i:clone():add_(i, {alpha = 2}):tolist())
  end)

  it("takes integer operands exactly, past a double's 53 bits", function()
    local max = math.maxinteger
    local z = lunet.tensor({0, 1})
    assert.are.same({max - 1, max}, (z + (max - 1)):tolist())
    assert.are.same({max - 1, max - 2}, ((max - 1) - z):tolist())
    local odd = (1 << 53) + 1   -- no double holds it
    assert.are.same({odd, odd + 1}, (z + odd):tolist())
    assert.are.same({true, false}, (z + odd):eq(odd):tolist())
    assert.are.same({max - 1, max - 1}, z:maximum(max - 1):tolist())
    -- an integer alpha multiplies in int64, wrapping as PyTorch's: 4 * 2^62 = 0
    assert.are.same({0, 1}, z:add(1 << 62, {alpha = 4}):tolist())
    assert.are.same({max, max + 1}, z:clone():add_(max, {alpha = 1}):tolist())
  end)

  it("add and sub take alpha as add_ and sub_ do, and refuse a float one for integers", function()
    local a = lunet.tensor({1, 2}, {dtype = "float64"})
    same(a:add(a, {alpha = 2}), {3, 6})
    same(a:sub(1, {alpha = 0.5}), {0.5, 1.5})
    same(lunet.add(a, a, {alpha = -1}), {0, 0})
    local i = lunet.tensor({1, 2})
    assert.same({-5, -4}, i:add(2, {alpha = -3}):tolist())
    assert.same({3, 6}, i:sub(i, {alpha = -2}):tolist())
    local msg = "For integral input tensors, argument alpha must not be a floating point number%."
    assert.matches(msg, err(i.add, i, i, {alpha = 1.5}))
    assert.matches(msg, err(i.sub, i, 2, {alpha = 2.0}))
    assert.matches(msg, err(i.add_, i, i, {alpha = 1e300}))
    assert.same({1, 2}, i:tolist())
    same(i:add(0.5, {alpha = 2.0}), {2, 3})   -- a float operand makes the result float
    assert.matches("unknown option 'alfa'", err(a.add, a, a, {alfa = 2}))
  end)

  it("has the methods and lunet functions too", function()
    same(a:add(b), (a + b):tolist())
    same(lunet.mul(a, 2), (a * 2):tolist())
    same(lunet.sub(1, a), (1 - a):tolist())
    same(a:pow(0.5), {{1, math.sqrt(2), math.sqrt(3)}, {2, math.sqrt(5), math.sqrt(6)}})
    same(a:maximum(3.5), {{3.5, 3.5, 3.5}, {4, 5, 6}})
    same(a:minimum(b), a:tolist())
  end)

  it("refuses integers to a negative integer power, as PyTorch", function()
    local i = lunet.tensor({2, 1, -1})
    local msg = "Integers to negative integer powers are not allowed%."
    assert.matches(msg, err(i.pow, i, -1))
    assert.matches(msg, err(function() return i ^ -2 end))
    assert.matches(msg, err(lunet.pow, i, -1))
    assert.matches(msg, err(i.pow_, i:clone(), -1))
    assert.matches(msg, err(function() return lunet.tensor({true}):pow(-1) end))
    assert.same({2, 1, -1}, i:tolist())
    -- a float exponent promotes; a tensor exponent is integer arithmetic
    same(i:pow(-1.0), {0.5, 1, -1})
    assert.same({0, 1, -1}, i:pow(lunet.tensor({-1, -1, -1})):tolist())
    assert.same({4, 1, 1}, (i ^ 2):tolist())
  end)

  it("applies unary functions", function()
    local x = lunet.tensor({-2, -0.5, 0, 1, 4}, {dtype = "float64"})
    same(x:abs(), {2, 0.5, 0, 1, 4})
    same(x:relu(), {0, 0, 0, 1, 4})
    same(x:neg(), {2, 0.5, 0, -1, -4})
    same(x:sign(), {-1, -1, 0, 1, 1})
    same(x:exp(), {math.exp(-2), math.exp(-0.5), 1, math.exp(1), math.exp(4)})
    local p = lunet.tensor({1, 4, 9}, {dtype = "float64"})
    same(p:sqrt(), {1, 2, 3})
    same(p:log(), {0, math.log(4), math.log(9)})
  end)

  it("compares to bool tensors; == stays identity", function()
    local x = lunet.tensor({1, 2, 3})
    assert.same({false, true, false}, x:eq(2):tolist())
    assert.same({true, false, true}, x:ne(2):tolist())
    assert.same({true, false, false}, x:lt(2):tolist())
    assert.same({true, true, false}, x:le(2):tolist())
    assert.same({false, false, true}, x:gt(2):tolist())
    assert.same({false, true, true}, x:ge(lunet.tensor({3, 2, 1})):tolist())
    assert.equal("bool", x:eq(x).dtype)
    assert.is_false(x == lunet.tensor({1, 2, 3}))
  end)

  it("works on non-contiguous and channels-last operands", function()
    local m = lunet.arange(6, {dtype = "float64"}):view(2, 3)
    same(m:t() * 2, {{0, 6}, {2, 8}, {4, 10}})
    local x = lunet.randn(2, 3, 4, 5, {dtype = "float64"})
    local cl = x:contiguous("channels_last")
    assert.is_true(lunet.allclose(cl + cl, x * 2))
    assert.is_true(lunet.allclose((cl * 3):contiguous(), x * 3))
  end)

  it("raises PyTorch's message on shape mismatch", function()
    assert.matches("must match the size of tensor b",
      err(function() return a + lunet.zeros(4, {dtype = "float64"}) end))
    -- method calls count arguments after self, as Lua's own errors do
    assert.matches("bad argument #1 to 'add' %(tensor or number expected, got string%)",
      err(function() return a:add("x") end))
    assert.matches("bad argument #2 to 'add' %(tensor or number expected, got string%)",
      err(function() return lunet.add(a, "x") end))
  end)

  it("updates in place", function()
    local x = lunet.ones(3, {dtype = "float64"})
    assert.is_true(rawequal(x, x:add_(lunet.tensor({1, 2, 3}, {dtype = "float64"}))))
    same(x, {2, 3, 4})
    x:add_(lunet.ones(3, {dtype = "float64"}), {alpha = -0.5})
    same(x, {1.5, 2.5, 3.5})
    x:mul_(2):sub_(1)
    same(x, {2, 4, 6})
    x:div_(lunet.tensor({2, 4, 6}, {dtype = "float64"}))
    same(x, {1, 1, 1})
    x:sub_(1, {alpha = 3})
    same(x, {-2, -2, -2})
    local i = lunet.tensor({1, 2})
    i:mul_(2)
    same(i, {2, 4})
    assert.matches("result type Float can't be cast to the desired output type Long",
      err(function() return i:mul_(2.5) end))
  end)
end)

describe("reductions", function()
  -- values[i][j] = i * 10 + j for a 3 x 4 matrix
  local rows, cols = 3, 4
  local vals = {}
  for i = 1, rows do
    vals[i] = {}
    for j = 1, cols do vals[i][j] = (i * 10 + j) * ((i + j) % 2 == 0 and 1 or -1) end
  end
  local x = lunet.tensor(vals, {dtype = "float64"})

  -- Fold f over dim (1: down each column, 2: along each row) from init.
  local function by_hand(dim, f, init)
    local n_out, n_in = cols, rows
    if dim == 2 then n_out, n_in = rows, cols end
    local out = {}
    for o = 1, n_out do
      local acc = init
      for k = 1, n_in do
        acc = f(acc, dim == 1 and vals[k][o] or vals[o][k])
      end
      out[o] = acc
    end
    return out
  end
  local function add(s, v) return s + v end

  it("sum over all, one dim, both dims, keepdim", function()
    local total = 0
    for i = 1, rows do for j = 1, cols do total = total + vals[i][j] end end
    same(x:sum():item(), total)
    assert.equal(0, x:sum():dim())
    same(x:sum(1), by_hand(1, add, 0))
    same(x:sum(2), by_hand(2, add, 0))
    same(x:sum(-1), by_hand(2, add, 0))
    same(x:sum({1, 2}):item(), total)
    same(x:sum(2, true):size(), {3, 1})
    same(x:sum(1, {keepdim = true}):size(), {1, 4})
    same(lunet.sum(x, 1), by_hand(1, add, 0))
  end)

  it("mean and var (unbiased by default) against hand values", function()
    local s = by_hand(2, add, 0)
    local mean, var_u, var_b = {}, {}, {}
    for i = 1, rows do
      mean[i] = s[i] / cols
      local ss = 0
      for j = 1, cols do ss = ss + (vals[i][j] - mean[i]) ^ 2 end
      var_u[i], var_b[i] = ss / (cols - 1), ss / cols
    end
    same(x:mean(2), mean)
    same(x:var(2), var_u)
    same(x:var(2, {unbiased = false}), var_b)
    same(x:var(2, false), var_b)
    same(x:var(2, {correction = 0}), var_b)
    same(x:var(2, {keepdim = true}):size(), {3, 1})
    local std = {}
    for i = 1, rows do std[i] = math.sqrt(var_u[i]) end
    same(x:std(2), std)
    -- all elements, as options only
    local all, n = 0, rows * cols
    for i = 1, rows do for j = 1, cols do all = all + vals[i][j] end end
    local m, ss = all / n, 0
    for i = 1, rows do for j = 1, cols do ss = ss + (vals[i][j] - m) ^ 2 end end
    same(x:mean():item(), m)
    same(x:var():item(), ss / (n - 1))
    same(x:var({unbiased = false}):item(), ss / n)
  end)

  it("max and min with 1-based indices", function()
    local v, idx = x:max(2)
    local ev, ei = {}, {}
    for i = 1, rows do
      ev[i], ei[i] = -math.huge, 0
      for j = 1, cols do
        if vals[i][j] > ev[i] then ev[i], ei[i] = vals[i][j], j end
      end
    end
    same(v, ev)
    same(idx, ei)
    assert.equal("int64", idx.dtype)
    local mv, mi = x:min(1)
    for j = 1, cols do
      local best, at = math.huge, 0
      for i = 1, rows do
        if vals[i][j] < best then best, at = vals[i][j], i end
      end
      assert.equal(best, mv[j]:item())
      assert.equal(at, mi[j]:item())
    end
    same(x:max():item(), 33)
    same(x:min():item(), -34)
    same(x:max({1, 2}):item(), 33)
    -- the indices select the values back
    for i = 1, rows do assert.equal(ev[i], x[i][idx[i]:item()]:item()) end
    same(x:argmax(2), ei)
    assert.equal(11, x:argmax():item())   -- 33 is at row 3, column 3
    same(x:max(lunet.zeros(1, {dtype = "float64"})):min():item(), 0)
  end)

  it("reduces channels-last and permuted tensors like contiguous ones", function()
    local t = lunet.randn(2, 3, 4, 5, {dtype = "float64"})
    local cl = t:contiguous("channels_last")
    assert.is_true(lunet.allclose(cl:sum({1, 3, 4}), t:sum({1, 3, 4})))
    assert.is_true(lunet.allclose(cl:var({1, 3, 4}), t:var({1, 3, 4})))
    assert.is_true(lunet.allclose(t:permute(2, 1, 3, 4):mean(1), t:mean(2)))
  end)

  it("reject repeated dims", function()
    assert.matches("appears multiple times", err(x.sum, x, {1, 1}))
  end)
end)

describe("matmul, cat, allclose", function()
  it("matmul against a naive loop", function()
    local A = {{1, 2, 3}, {4, 5, 6}}
    local B = {{7, 8}, {9, 10}, {11, 12}}
    local C = {}
    for i = 1, 2 do
      C[i] = {}
      for j = 1, 2 do
        local s = 0
        for k = 1, 3 do s = s + A[i][k] * B[k][j] end
        C[i][j] = s
      end
    end
    for _, dt in ipairs({"float32", "float64"}) do
      local a, b = lunet.tensor(A, {dtype = dt}), lunet.tensor(B, {dtype = dt})
      same(a:matmul(b), C)
      same(lunet.matmul(a, b), C)
      same(b:t():matmul(a:t()), {{C[1][1], C[2][1]}, {C[1][2], C[2][2]}})
    end
    same(lunet.tensor({1.0, 2.0}):matmul(lunet.tensor({3.0, 4.0})):item(), 11)
  end)

  it("cat joins along a 1-based dim", function()
    local a = lunet.tensor({{1, 2}, {3, 4}})
    local b = lunet.tensor({{5, 6}})
    same(lunet.cat({a, b}), {{1, 2}, {3, 4}, {5, 6}})
    same(lunet.cat({a, a}, 2), {{1, 2, 1, 2}, {3, 4, 3, 4}})
    same(lunet.cat({a, a}, -1):size(), {2, 4})
    assert.matches("tensor expected at index 2", err(lunet.cat, {a, 3}))
    assert.matches("non%-empty", err(lunet.cat, {}))
  end)

  it("allclose uses rtol and atol and broadcasts", function()
    local a = lunet.tensor({1.0, 2.0, 3.0}, {dtype = "float64"})
    assert.is_true(lunet.allclose(a, a + 1e-9))
    assert.is_false(lunet.allclose(a, a + 1e-3))
    assert.is_true(lunet.allclose(a, a + 1e-3, {atol = 1e-2}))
    assert.is_true(lunet.allclose(a, a * 1.001, {rtol = 1e-2}))
    assert.is_true(lunet.allclose(lunet.ones(2, 3), lunet.ones(3)))
    local nan = lunet.tensor({0 / 0, 1}, {dtype = "float64"})
    assert.is_false(lunet.allclose(nan, nan))
    assert.is_true(lunet.allclose(nan, nan, {equal_nan = true}))
    local inf = lunet.tensor({math.huge}, {dtype = "float64"})
    assert.is_true(lunet.allclose(inf, inf))
    assert.matches("must match the size", err(lunet.allclose, a, lunet.ones(2)))
  end)
end)

describe("printing", function()
  it("uses PyTorch's format", function()
    assert.equal("tensor([[1, 2],\n        [3, 4]])", tostring(lunet.tensor({{1, 2}, {3, 4}})))
    assert.equal("tensor([[1., 2.],\n        [3., 4.]], dtype=torch.float64)",
      tostring(lunet.tensor({{1, 2}, {3, 4}}, {dtype = "float64"})))
    assert.equal("tensor([ True, False])", tostring(lunet.tensor({true, false})))
    assert.equal("tensor(2.5000)", tostring(lunet.tensor(2.5)))
    assert.matches("requires_grad=True", tostring(lunet.ones(2, {requires_grad = true})))
  end)

  it("summarises large tensors", function()
    local s = tostring(lunet.arange(2000))
    assert.matches("%.%.%.", s)
    assert.is_true(#s < 200)
  end)
end)

describe("errors", function()
  it("leave the interpreter usable", function()
    for _ = 1, 3 do
      assert.is_false(pcall(function() return lunet.zeros(2) + lunet.zeros(3) end))
      assert.is_false(pcall(lunet.tensor, {{1}, {1, 2}}))
      local ok = pcall(function() return lunet.zeros(2):view(3) end)
      assert.is_false(ok)
    end
    same(lunet.ones(2) + 1, {2, 2})
  end)

  it("name the argument and the function", function()
    local x = lunet.zeros(2)
    assert.matches("bad argument #1 to 'narrow' %(number expected, got no value%)",
      err(function() return x:narrow() end))
    assert.matches("bad argument #1 to 'matmul' %(tensor expected, got number%)",
      err(function() return lunet.matmul(1, x) end))
    assert.matches("bad argument #1 to 'size' %(tensor expected, got number%)",
      err(function() return x.size(3) end))
  end)

  it("count dims and list positions from 1, also in the core's messages", function()
    local a, b = lunet.zeros(2, 3), lunet.zeros(2, 4)
    assert.matches("except in dimension 1%. Expected size 3 but got size 4 for tensor number 2",
      err(lunet.cat, {a, b}, 1))
    assert.matches("at non%-singleton dimension 1$",
      err(function() return a + lunet.zeros(3, 3) end))
    assert.matches("at non%-singleton dimension 2%.",
      err(function() return a:expand(2, 5) end))
  end)

  it("say 'attempt to use a released tensor' after __close", function()
    local keep
    do
      local t <close> = lunet.ones(3)
      keep = t
      same(t, {1, 1, 1})
    end
    assert.matches("attempt to use a released tensor", err(function() return keep + 1 end))
    assert.matches("attempt to use a released tensor", err(keep.size, keep))
    assert.equal("tensor(released)", tostring(keep))
    local mt = getmetatable(keep)
    mt.__close(keep)   -- twice is fine
    mt.__gc(keep)
  end)
end)

describe("the lunet table", function()
  it("loads nn and optim lazily, as require does", function()
    assert.is_string(lunet.version)
    assert.equal(require("lunet.nn"), lunet.nn)
    assert.equal(require("lunet.optim"), lunet.optim)
    assert.is_nil(lunet.no_such_thing)
  end)

  it("describes CUDA", function()
    assert.is_boolean(lunet.cuda.is_available())
    assert.is_number(lunet.cuda.device_count())
  end)
end)

describe("threads", function()
  it("can be set and read", function()
    local n = lunet.get_num_threads()
    lunet.set_num_threads(1)
    assert.equal(1, lunet.get_num_threads())
    lunet.set_num_threads(n)
    assert.equal(n, lunet.get_num_threads())
    assert.matches("at least 1", err(lunet.set_num_threads, 0))
  end)

  it("honour LUNET_NUM_THREADS at load", function()
    local interp, i = arg[0], 0
    while arg[i - 1] do i = i - 1; interp = arg[i] end
    local cmd = ("LUNET_NUM_THREADS=3 LUA_PATH=%q LUA_CPATH=%q %q -e %q")
      :format(package.path, package.cpath, interp,
              'io.write(require("lunet").get_num_threads())')
    local p = assert(io.popen(cmd))
    assert.equal("3", p:read("a"))
    p:close()
  end)
end)
