-- lunet.data: datasets, the DataLoader (order, seeded shuffling, last
-- batch, collation), train_test_split, the digits loader, and
-- x:index_select (lua/l_index.c) that batches are gathered with.
local lunet = require("lunet")
local data = require("lunet.data")
local helpers = require("tests.spec.helpers")
local err, f32 = helpers.err, helpers.f32

-- fn(...) raises an error containing msg (plain text).
local function raises(msg, fn, ...)
  assert.matches(msg, err(fn, ...), 1, true)
end

-- Every batch of a loader as {i, fields...} tables.
local function collect(loader)
  local out = {}
  for i, a, b in loader:iter() do out[#out + 1] = { i, a, b } end
  return out
end

-- The first-field values of every batch, concatenated (1-D datasets).
local function order_of(loader)
  local seq = {}
  for _, a in loader:iter() do
    for _, v in ipairs(a:tolist()) do seq[#seq + 1] = v end
  end
  return seq
end

local function sorted(t)
  local c = { table.unpack(t) }
  table.sort(c)
  return c
end

local function range(a, b)
  local r = {}
  for i = a, b do r[#r + 1] = i end
  return r
end

describe("x:index_select", function()
  local x = lunet.arange(24):view(2, 3, 4)

  it("gathers along a 1-based dim with 1-based indices", function()
    assert.are.same({ { { 12, 13, 14, 15 }, { 16, 17, 18, 19 }, { 20, 21, 22, 23 } },
                      { { 0, 1, 2, 3 }, { 4, 5, 6, 7 }, { 8, 9, 10, 11 } } },
                    x:index_select(1, lunet.tensor({ 2, 1 })):tolist())
    assert.are.same({ { { 8, 9, 10, 11 }, { 8, 9, 10, 11 } },
                      { { 20, 21, 22, 23 }, { 20, 21, 22, 23 } } },
                    x:index_select(2, { 3, 3 }):tolist())
    assert.are.same({ { { 3, 0 }, { 7, 4 }, { 11, 8 } }, { { 15, 12 }, { 19, 16 }, { 23, 20 } } },
                    lunet.index_select(x, -1, { 4, 1 }):tolist())
  end)

  it("copies from strided inputs into a new contiguous tensor", function()
    local y = x:permute(3, 1, 2)                        -- 4 x 2 x 3, not contiguous
    local r = y:index_select(1, { 2, 4 })
    assert.is_true(r:is_contiguous())
    assert.are.same({ y[2]:tolist(), y[4]:tolist() }, r:tolist())
    r:fill_(-1)
    assert.are.equal(1, x[1][1][2]:item())             -- a copy, not a view
    assert.are.same({ 2, 0, 4 }, x:index_select(2, {}):size())
    assert.are.equal("float32", f32({ 1, 2 }):index_select(1, { 2 }).dtype)
  end)

  it("rejects bad indices with clear messages", function()
    raises("index 4 is out of bounds for dimension 2 with size 3", x.index_select, x, 2, { 1, 4 })
    raises("index 0 is out of bounds", x.index_select, x, 1, { 0 })
    raises("Expected a 1-D int64 index tensor", x.index_select, x, 1, f32({ 1 }))
    raises("integer expected at index 2", x.index_select, x, 1, { 1, 1.5 })
    raises("Dimension out of range", x.index_select, x, 4, { 1 })
    local w = f32({ 1, 2 }):requires_grad_(true)
    raises("autograd is not supported", w.index_select, w, 1, { 1 })
    lunet.no_grad(function() assert.are.same({ 2 }, w:index_select(1, { 2 }):tolist()) end)
  end)
end)

describe("TensorDataset", function()
  local x = lunet.arange(10):view(5, 2)
  local y = lunet.tensor({ 1, 2, 3, 4, 5 })

  it("gives x[i], y[i] for sample i, and its length", function()
    local ds = data.TensorDataset(x, y)
    assert.are.equal(5, #ds)
    local a, b = ds:get(3)
    assert.are.same({ 4, 5 }, a:tolist())
    assert.are.equal(3, b:item())
    local xa, ya = ds:get_batch(lunet.tensor({ 5, 1 }))
    assert.are.same({ { 8, 9 }, { 0, 1 } }, xa:tolist())
    assert.are.same({ 5, 1 }, ya:tolist())
  end)

  it("checks its tensors", function()
    raises("Size mismatch between tensors", data.TensorDataset, x, lunet.zeros(4))
    raises("bad argument #2 to 'TensorDataset' (tensor expected, got number)",
           data.TensorDataset, x, 3)
    raises("0-dim tensor", data.TensorDataset, lunet.tensor(1))
  end)

  it("detaches, so batches carry no history", function()
    local w = f32({ 1, 2, 3 }):requires_grad_(true)
    local ds = data.TensorDataset(w)
    local b = ds:get_batch(lunet.tensor({ 1, 3 }))
    assert.is_false(b.requires_grad)
  end)
end)

describe("DataLoader", function()
  local xs = lunet.arange(1, 11)                        -- 1..10, int64
  local ds = data.TensorDataset(xs, xs * 10)

  it("batches in order with a smaller last batch, numbered from 1", function()
    local loader = data.DataLoader(ds, { batch_size = 4 })
    assert.are.equal(3, #loader)
    local b = collect(loader)
    assert.are.equal(3, #b)
    assert.are.same({ 1, 2, 3 }, { b[1][1], b[2][1], b[3][1] })
    assert.are.same({ 1, 2, 3, 4 }, b[1][2]:tolist())
    assert.are.same({ 10, 20, 30, 40 }, b[1][3]:tolist())
    assert.are.same({ 9, 10 }, b[3][2]:tolist())
  end)

  it("drops the last batch with drop_last, and defaults to batch_size 1", function()
    local loader = data.DataLoader(ds, { batch_size = 4, drop_last = true })
    assert.are.equal(2, #loader)
    assert.are.same(range(1, 8), order_of(loader))
    assert.are.equal(10, #data.DataLoader(ds))
    assert.are.equal(0, #data.DataLoader(ds, { batch_size = 11, drop_last = true }))
    assert.are.equal(1, #data.DataLoader(ds, { batch_size = 11 }))
  end)

  it("shuffles reproducibly from a seed, differently at each pass", function()
    local a = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 7 })
    local b = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 7 })
    local a1, a2 = order_of(a), order_of(a)
    assert.are.same(a1, order_of(b))
    assert.are.same(a2, order_of(b))
    assert.are.same(range(1, 10), sorted(a1))
    assert.are.same(range(1, 10), sorted(a2))
    assert.are_not.same(a1, a2)
    assert.are_not.same(a1, range(1, 10))
    b:set_epoch(2)                                     -- resume at pass 2
    assert.are.same(a2, order_of(b))
    assert.are.equal(3, b.epoch)
    local c = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 8 })
    assert.are_not.same(a1, order_of(c))
  end)

  it("keeps the global generator alone when seeded, and follows it when not", function()
    lunet.manual_seed(5)
    local before = lunet.get_rng_state()
    order_of(data.DataLoader(ds, { shuffle = true, seed = 1 }))
    assert.are.same(before, lunet.get_rng_state())
    lunet.manual_seed(5)
    local u1 = order_of(data.DataLoader(ds, { batch_size = 4, shuffle = true }))
    lunet.manual_seed(5)
    local u2 = order_of(data.DataLoader(ds, { batch_size = 4, shuffle = true }))
    assert.are.same(u1, u2)
    assert.are.same(range(1, 10), sorted(u1))
  end)

  it("collates samples of any dataset with # and get", function()
    local generic = setmetatable({}, {
      __len = function() return 5 end,
      __index = { get = function(_, i)
        return f32({ i, -i }), i, i / 2, i % 2 == 0, "s" .. i
      end },
    })
    local loader = data.DataLoader(generic, { batch_size = 2 })
    local seen = 0
    for i, t, n, h, e, s in loader:iter() do
      seen = seen + 1
      if i == 1 then
        assert.are.same({ { 1, -1 }, { 2, -2 } }, t:tolist())
        assert.are.equal("float32", t.dtype)
        assert.are.equal("int64", n.dtype)
        assert.are.same({ 1, 2 }, n:tolist())
        assert.are.equal("float64", h.dtype)
        assert.are.same({ 0.5, 1 }, h:tolist())
        assert.are.same({ false, true }, e:tolist())
        assert.are.same({ "s1", "s2" }, s)
      end
    end
    assert.are.equal(3, seen)
    local custom = data.DataLoader(generic, { batch_size = 5, collate = function(samples)
      return #samples, samples[5][2]
    end })
    local _, count, last = custom:iter()()
    assert.are.same({ 5, 5 }, { count, last })
  end)

  it("batches a Subset through its dataset's get_batch, or sample by sample", function()
    local sub = data.Subset(ds, lunet.tensor({ 10, 2, 7 }))
    assert.are.equal(3, #sub)
    assert.is_not_nil(sub.get_batch)
    assert.are.same({ 10, 2, 7 }, order_of(data.DataLoader(sub, { batch_size = 2 })))
    local plain = setmetatable({}, { __len = function() return 4 end,
                                     __index = { get = function(_, i) return i * 100 end } })
    local psub = data.Subset(plain, { 4, 1 })
    assert.is_nil(psub.get_batch)
    assert.are.same({ 400, 100 }, order_of(data.DataLoader(psub, { batch_size = 2 })))
    raises("index 5 (at 1) is out of range", data.Subset, plain, { 5 })
  end)

  it("checks its arguments", function()
    raises("batch_size should be a positive integer value, but got batch_size=0",
           data.DataLoader, ds, { batch_size = 0 })
    raises("unknown option 'batchsize'", data.DataLoader, ds, { batchsize = 2 })
    raises("dataset expected", data.DataLoader, 3)
    raises("seed must be an integer", data.DataLoader, ds, { seed = 0.5 })
    local loader = data.DataLoader(ds)
    raises("positive integer expected", loader.set_epoch, loader, 0)
  end)

  it("gathers large shuffled batches row by row right (the threaded copy)", function()
    local x = lunet.randn(4096, 64)
    local loader = data.DataLoader(data.TensorDataset(x, lunet.arange(1, 4097)),
                                   { batch_size = 1024, shuffle = true, seed = 0 })
    local rows = 0
    for _, xb, ib in loader:iter() do
      rows = rows + xb:size(1)
      assert.are.equal(0, (xb - x:index_select(1, ib)):abs():max():item())
      assert.are.same(x[ib[7]:item()]:tolist(), xb[7]:tolist())
    end
    assert.are.equal(4096, rows)
  end)
end)

describe("train_test_split", function()
  it("splits 1..n with ceil(test_fraction * n) test indices", function()
    local train, test = data.train_test_split(10, { test_fraction = 0.25, seed = 3 })
    assert.are.equal("int64", train.dtype)
    assert.are.equal(7, train:size(1))
    assert.are.equal(3, test:size(1))
    local all = train:tolist()
    for _, v in ipairs(test:tolist()) do all[#all + 1] = v end
    assert.are.same(range(1, 10), sorted(all))
    local tr2, te2 = data.train_test_split(10, { test_fraction = 0.25, seed = 3 })
    assert.are.same(train:tolist(), tr2:tolist())
    assert.are.same(test:tolist(), te2:tolist())
    local tr3 = data.train_test_split(10, { test_fraction = 0.25, seed = 4 })
    assert.are_not.same(train:tolist(), tr3:tolist())
  end)

  it("defaults to 20% and seed 0, and keeps order without shuffle", function()
    local train, test = data.train_test_split(1797)
    assert.are.equal(360, test:size(1))
    assert.are.equal(1437, train:size(1))
    local a, b = data.train_test_split(5, { test_fraction = 0.4, shuffle = false })
    assert.are.same({ 1, 2, 3 }, a:tolist())
    assert.are.same({ 4, 5 }, b:tolist())
  end)

  it("checks its arguments", function()
    raises("should be in the range [0, 1)", data.train_test_split, 10, { test_fraction = 1 })
    raises("the resulting train set will be empty",
           data.train_test_split, 1, { test_fraction = 0.5 })
    raises("non-negative integer expected", data.train_test_split, 2.5)
    raises("unknown option 'test_size'", data.train_test_split, 10, { test_size = 0.2 })
  end)
end)

describe("digits", function()
  it("loads Debian's copy: 1797 8x8 images in [0, 1] with 1-based labels", function()
    local images, labels, digits = assert(data.digits())
    assert.are.same({ 1797, 1, 8, 8 }, images:size())
    assert.are.equal("float32", images.dtype)
    assert.are.equal(0, images:min():item())
    assert.are.equal(1, images:max():item())
    assert.are.equal("int64", labels.dtype)
    assert.are.same({ 1797 }, labels:size())
    assert.are.equal(1, labels:min():item())
    assert.are.equal(10, labels:max():item())
    assert.are.same((labels - 1):tolist(), digits:tolist())
    -- sklearn's first image is a 0: its first row is 0 0 5 13 9 1 0 0
    assert.are.equal(0, digits[1]:item())
    local row = images[1][1][1]:tolist()
    for k, v in ipairs({ 0, 0, 5, 13, 9, 1, 0, 0 }) do assert.are.equal(v / 16, row[k]) end
    -- every class is there, about 180 each
    for c = 1, 10 do
      local count = labels:eq(c):long():sum():item()
      assert.is_true(count > 170 and count < 190)
    end
  end)

  describe("from a given path", function()
    local dir
    before_each(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
    end)
    after_each(function() os.execute("rm -rf " .. dir) end)

    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write(text)
      f:close()
      return dir .. "/" .. name
    end

    local row1 = ("16," .. ("0,"):rep(63) .. "7\n")
    local row2 = ("0,"):rep(63) .. "8,3\n"

    it("reads plain and gzip'd CSV", function()
      local path = write("d.csv", row1 .. row2)
      local images, labels, digits = assert(data.digits({ path = path }))
      assert.are.same({ 2, 1, 8, 8 }, images:size())
      assert.are.same({ 8, 4 }, labels:tolist())
      assert.are.same({ 7, 3 }, digits:tolist())
      assert.are.equal(1, images[1][1][1][1]:item())
      assert.are.equal(0.5, images[2][1][8][8]:item())
      assert(os.execute("gzip -k " .. path))
      local g = assert(data.digits({ path = path .. ".gz" }))
      assert.are.equal(0, (g - images):abs():max():item())
    end)

    it("names the package when the file is missing", function()
      local ok, msg = data.digits({ path = dir .. "/none.csv.gz" })
      assert.is_nil(ok)
      assert.are.equal("digits data not found at " .. dir .. "/none.csv.gz: install Debian's "
                       .. "python3-sklearn (scripts/setup does)", msg)
    end)

    it("reports bad contents and bad gzip data", function()
      local ok, msg = data.digits({ path = write("bad.csv", row1 .. "1,2,3\n") })
      assert.is_nil(ok)
      assert.matches("bad digits data at line 2", msg, 1, true)
      ok, msg = data.digits({ path = write("big.csv", "17," .. ("0,"):rep(63) .. "1\n") })
      assert.is_nil(ok)
      assert.matches("bad digits data at line 1", msg, 1, true)
      ok, msg = data.digits({ path = write("x.csv.gz", "not gzip") })
      assert.is_nil(ok)
      assert.matches("could not decompress", msg, 1, true)
      ok, msg = data.digits({ path = write("empty.csv", "") })
      assert.is_nil(ok)
      assert.matches("no digits data", msg, 1, true)
      raises("unknown option 'file'", data.digits, { file = "x" })
    end)
  end)
end)

describe("training with lunet.data and lunet.optim", function()
  it("fits softmax regression on the digits to over 90% test accuracy", function()
    local optim = require("lunet.optim")
    lunet.manual_seed(0)
    local images, labels = assert(data.digits())
    local x = images:view(-1, 64)
    local train, test = data.train_test_split(labels:size(1), { seed = 0 })
    local ds = data.TensorDataset(x:index_select(1, train), labels:index_select(1, train))
    local loader = data.DataLoader(ds, { batch_size = 64, shuffle = true, seed = 0 })
    local w = (lunet.randn(64, 10) * 0.01):requires_grad_(true)
    local b = lunet.zeros(10):requires_grad_(true)
    local opt = optim.Adam({ w, b }, { lr = 0.05 })
    local classes = lunet.arange(1, 11):view(1, 10)
    for _ = 1, 10 do
      for _, xb, yb in loader:iter() do
        local logits = xb:matmul(w) + b
        local shifted = logits - logits:max(2, { keepdim = true }):detach()
        local logp = shifted - shifted:exp():sum(2, { keepdim = true }):log()
        local loss = -(yb:view(-1, 1):eq(classes):float() * logp):sum() / xb:size(1)
        opt:zero_grad()
        loss:backward()
        opt:step()
      end
    end
    local pred = (x:index_select(1, test):matmul(w) + b):argmax(2)
    assert.is_true(pred:eq(labels:index_select(1, test)):float():mean():item() > 0.9)
  end)
end)

describe("lunet.data", function()
  it("is lunet.data, loaded lazily", function()
    assert.are.equal(data, lunet.data)
  end)
end)
