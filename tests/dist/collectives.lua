-- collectives.lua -- every collective, op and dtype on the world group,
-- errors found before anything is sent (every rank then goes on: no hang),
-- the statistics, and use before init and after finalize.
-- Run: mpirun -np K build/lunet tests/dist/collectives.lua (any K >= 1).
local lunet = require("lunet")
local dist = require("lunet.dist")
local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
local eq, err, test = H.eq, H.err, H.test

local DTYPES = { "float32", "float64", "float16", "bfloat16", "int64" }

-- ---- before init ----

test("before init: not initialized, and says so", function()
  H.truthy(dist.is_available(), "is_available")
  eq(dist.is_initialized(), false, "is_initialized")
  local msg = "Default process group has not been initialized, please make sure to call dist.init."
  err(msg, dist.rank)
  err(msg, dist.world_size)
  err(msg, dist.new_group, { 0 })
  err(msg, dist.all_reduce, lunet.ones(2))
  err(msg, dist.all_gather, nil, lunet.ones(2))
  err(msg, dist.broadcast, lunet.ones(2), 0)
  err(msg, dist.barrier)
  err(msg, dist.finalize)
end)

test("before init: bad backends and options start nothing", function()
  err("Invalid backend: 'gloo' (expected 'mpi' or 'nccl')", dist.init, { backend = "gloo" })
  err("unknown option 'backnd'", dist.init, { backnd = "mpi" })
  if not dist.is_nccl_available() then
    err("lunet was built without NCCL support", dist.init, { backend = "nccl" })
  elseif not lunet.cuda.is_available() then
    err("backend 'nccl' needs a CUDA device", dist.init, { backend = "nccl" })
  end
  eq(dist.is_initialized(), false, "is_initialized")
end)

dist.init { backend = "mpi" }
local rank, n = dist.rank(), dist.world_size()

test("init: rank, sizes, backend; a second init fails", function()
  eq(dist.is_initialized(), true, "is_initialized")
  eq(n, H.np, "world_size")
  H.truthy(rank >= 0 and rank < n, "0 <= rank < world_size")
  H.truthy(dist.local_rank() >= 0 and dist.local_rank() < n, "0 <= local_rank < world_size")
  eq(dist.backend(), "mpi", "backend")
  err("trying to initialize the default process group twice!", dist.init)
end)

-- ---- all_reduce ----

-- Rank r holds (r+1)*i at element i (1..5): sums, maxima and means are
-- small integers or halves, exact in every dtype.
local function ramp(dtype, scale)
  local v = {}
  for i = 1, 5 do v[i] = scale * i end
  return lunet.tensor(v, { dtype = dtype })
end

local function expected(op, dtype)
  local tri = n * (n + 1) / 2
  local per = { sum = tri, max = n, min = 1, avg = tri / n }
  local v = {}
  for i = 1, 5 do
    v[i] = per[op] * i
    if dtype == "int64" then v[i] = math.tointeger(v[i] // 1) end
  end
  return v
end

for _, dtype in ipairs(DTYPES) do
  for _, op in ipairs { "sum", "avg", "max", "min" } do
    test(("all_reduce %s %s"):format(op, dtype), function()
      local t = ramp(dtype, rank + 1)
      local r = dist.all_reduce(t, { op = op })
      H.truthy(r == t, "returns its tensor")
      eq(t.dtype, dtype, "dtype")
      eq(t, expected(op, dtype), "result")
    end)
  end
end

test("all_reduce: default op is sum; float16 sums are rounded once", function()
  local t = lunet.full({ 3 }, 0.1, { dtype = "float16" })
  dist.all_reduce(t)
  -- float32 sum of the float16 values, then one rounding to float16
  local want = lunet.full({ 3 }, (lunet.full({ 1 }, 0.1, { dtype = "float16" }):float() * n):item(),
                          { dtype = "float16" })
  eq(t, want, "sum")
end)

test("all_reduce avg of int64 truncates toward zero (as NCCL)", function()
  local t = lunet.tensor({ -(rank + 1), rank + 1 }, { dtype = "int64" })
  dist.all_reduce(t, { op = "avg" })
  local m = n * (n + 1) // 2
  local q = m // n
  eq(t, { -q, q }, "avg")
end)

test("all_reduce of bool: sum and max are or, min is and, avg refused", function()
  local function b() return lunet.tensor({ rank == 0, true, false }):bool() end
  local t = b()
  dist.all_reduce(t, { op = "sum" })
  eq(t, { true, true, false }, "sum")
  t = b()
  dist.all_reduce(t, { op = "max" })
  eq(t, { true, true, false }, "max")
  t = b()
  dist.all_reduce(t, { op = "min" })
  eq(t, { n == 1, true, false }, "min")
  err("op 'avg' is not supported for bool tensors", dist.all_reduce, b(), { op = "avg" })
end)

test("all_reduce on non-contiguous views writes through to the base", function()
  local base = lunet.arange(12):double():view(3, 4)
  local tv = base:t()                                  -- 4x3, transposed
  dist.all_reduce(tv)
  eq(base, (lunet.arange(12):double():view(3, 4) * n):tolist(), "transposed")
  local cols = lunet.zeros(2, 6, { dtype = "float16" })
  local part = cols:narrow(2, 2, 3)                     -- strided rows
  part:fill_(rank + 1)
  dist.all_reduce(part, { op = "max" })
  eq(cols:narrow(2, 2, 3), lunet.full({ 2, 3 }, n):tolist(), "narrowed")
  eq(cols:narrow(2, 1, 1), { { 0 }, { 0 } }, "untouched outside the view")
end)

test("all_reduce of 0-dim, empty and channels-last tensors", function()
  local s = lunet.tensor(rank + 1.0)
  dist.all_reduce(s)
  eq(s:item(), n * (n + 1) / 2, "0-dim")
  local e = lunet.empty(0, 3)
  dist.all_reduce(e)
  eq(e:size(), { 0, 3 }, "empty")
  local x = lunet.ones(2, 3, 2, 2):contiguous("channels_last")
  dist.all_reduce(x)
  H.truthy(x:is_contiguous("channels_last"), "stays channels-last")
  eq(x, lunet.full({ 2, 3, 2, 2 }, n):tolist(), "channels-last values")
end)

test("all_reduce writes into a leaf that requires grad (as PyTorch)", function()
  local p = lunet.ones(3, { requires_grad = true })
  dist.all_reduce(p)
  eq(p, { n, n, n }, "parameter")
  H.truthy(p.requires_grad, "still requires grad")
end)

-- ---- errors found locally: every rank fails, nobody waits ----

test("bad op, bad options and unwritable tensors fail on every rank, then all goes on", function()
  local t = lunet.ones(2)
  err("unknown reduce op 'prod' (expected 'sum', 'avg', 'max' or 'min')",
      dist.all_reduce, t, { op = "prod" })
  err("option 'op': string expected, got number", dist.all_reduce, t, { op = 1 })
  err("unknown option 'grup'", dist.all_reduce, t, { grup = 1 })
  err("option 'group': process group expected, got string", dist.all_reduce, t,
      { group = "world" })
  err("tensor expected", dist.all_reduce, 3)
  err("more than one element of the written-to tensor refers to a single memory location",
      dist.all_reduce, lunet.ones(1):expand(4))
  eq(t, { 1, 1 }, "unchanged")
  dist.all_reduce(t)                                   -- nobody is stuck
  eq(t, { n, n }, "then a collective works")
end)

-- ---- all_gather ----

for _, dtype in ipairs(DTYPES) do
  test("all_gather " .. dtype, function()
    local t = lunet.tensor({ { rank, rank + 0.5 } }, { dtype = "float64" }):to { dtype = dtype }
    local outs = {}
    for i = 1, n do outs[i] = lunet.zeros(1, 2, { dtype = dtype }) end
    H.truthy(dist.all_gather(outs, t) == outs, "returns the list")
    for i = 1, n do
      local want = lunet.tensor({ { i - 1, i - 0.5 } }, { dtype = "float64" }):to { dtype = dtype }
      eq(outs[i], want, "outs[" .. i .. "]")
      eq(outs[i].dtype, dtype, "dtype")
    end
    local fresh = dist.all_gather(nil, t)
    eq(#fresh, n, "new list length")
    for i = 1, n do eq(fresh[i], outs[i], "new list [" .. i .. "]") end
  end)
end

test("all_gather of bool, of 0-dim and into non-contiguous outputs", function()
  local got = dist.all_gather(nil, lunet.tensor({ rank % 2 == 1 }):bool())
  for i = 1, n do eq(got[i], { (i - 1) % 2 == 1 }, "bool") end
  local s = dist.all_gather(nil, lunet.tensor(rank * 2.0))
  for i = 1, n do eq(s[i]:dim(), 0, "0-dim rows") eq(s[i]:item(), (i - 1) * 2, "0-dim") end
  local outs = {}
  for i = 1, n do outs[i] = lunet.zeros(3, 2):t() end   -- 2x3 views
  dist.all_gather(outs, lunet.full({ 2, 3 }, rank, { dtype = "float32" }))
  for i = 1, n do eq(outs[i], lunet.full({ 2, 3 }, i - 1):tolist(), "transposed out") end
end)

test("all_gather: wrong list length, shape or dtype fails on every rank", function()
  local t = lunet.ones(2)
  local short = {}
  for i = 1, n + 1 do short[i] = lunet.zeros(2) end
  err(("expected a list of %d tensors (one per rank of the group), got %d"):format(n, n + 1),
      dist.all_gather, short, t)
  local bad = {}
  for i = 1, n do bad[i] = lunet.zeros(2) end
  bad[n] = lunet.zeros(3)
  err(("output %d is float32 [3], expected float32 [2] like the input"):format(n - 1),
      dist.all_gather, bad, t)
  bad[n] = lunet.zeros(2, { dtype = "float64" })
  err("is float64 [2], expected float32 [2]", dist.all_gather, bad, t)
  bad[n] = 7
  err(("tensor expected at index %d, got number"):format(n), dist.all_gather, bad, t)
  local ok = dist.all_gather(nil, t)
  eq(#ok, n, "then a collective works")
end)

-- ---- broadcast ----

for _, dtype in ipairs(DTYPES) do
  test("broadcast " .. dtype .. " from every rank", function()
    for src = 0, n - 1 do
      local t = lunet.full({ 2, 2 }, rank * 10 + 1.5, { dtype = dtype })
      H.truthy(dist.broadcast(t, src) == t, "returns its tensor")
      local want = lunet.full({ 2, 2 }, src * 10 + 1.5, { dtype = dtype })
      eq(t, want, "from " .. src)
    end
  end)
end

test("broadcast of bool and into a non-contiguous view", function()
  local b = lunet.tensor({ rank == 0, rank ~= 0 }):bool()
  dist.broadcast(b, 0)
  eq(b, { true, false }, "bool")
  local base = lunet.zeros(3, 4)
  local v = base:t()
  if rank == n - 1 then v:copy_(lunet.arange(12):float():view(4, 3)) end
  dist.broadcast(v, n - 1)
  eq(v, lunet.arange(12):float():view(4, 3):tolist(), "transposed target")
end)

test("broadcast: src outside the group fails on every rank", function()
  local t = lunet.ones(2)
  local all = {}
  for i = 1, n do all[i] = i - 1 end
  local ranks = "{" .. table.concat(all, ", ") .. "}"
  err(("broadcast: src rank %d is not in the process group (ranks %s)"):format(n, ranks),
      dist.broadcast, t, n)
  err("broadcast: src rank -1 is not in the process group", dist.broadcast, t, -1)
  err("number expected, got no value", dist.broadcast, t)
  dist.broadcast(t, 0)
end)

-- ---- barrier, check_same ----

test("barrier", function()
  dist.barrier()
  dist.barrier {}
  err("unknown option 'timeout'", dist.barrier, { timeout = 1 })
end)

test("check_same: equal values pass, different ones fail on every rank", function()
  dist.check_same(42, "answer")
  if n > 1 then
    local parts = {}
    for r = 0, n - 1 do parts[#parts + 1] = ("rank %d has %d"):format(r, r * 3) end
    err("channels differs across ranks: " .. table.concat(parts, ", "),
        dist.check_same, rank * 3, "channels")
  end
end)

-- ---- all_reduce_coalesced ----

test("all_reduce_coalesced: buckets by dtype and size, results as one by one", function()
  local function list()   -- float32 16, 16 and 20 bytes, float64, float16
    local function full(sizes, dtype) return lunet.full(sizes, rank + 1, { dtype = dtype }) end
    return { full({ 4 }, "float32"), full({ 2, 2 }, "float32"), full({ 5, 1 }, "float32"):t(),
             full({ 3 }, "float64"), full({ 2 }, "float16") }
  end
  local tri = n * (n + 1) / 2
  for _, case in ipairs { { cap = nil, buckets = 3 }, { cap = 0, buckets = 5 },
                          { cap = 32 / 2 ^ 20, buckets = 4 } } do
    local ts = list()
    dist.reset_stats()
    local nb = dist.all_reduce_coalesced(ts, { op = "avg", bucket_cap_mb = case.cap })
    eq(nb, case.buckets, "buckets with cap " .. tostring(case.cap))
    eq(dist.stats().all_reduce, case.buckets, "collectives issued")
    for i, t in ipairs(ts) do
      eq(t, lunet.full(t:size(), tri / n, { dtype = t.dtype }):tolist(), "tensor " .. i)
    end
  end
  eq(dist.all_reduce_coalesced({}), 0, "empty list")
  err("op 'avg' is not supported for bool tensors", dist.all_reduce_coalesced,
      { lunet.ones(1), lunet.tensor({ true }):bool() }, { op = "avg" })
  err("unknown option 'bucket_cap'", dist.all_reduce_coalesced, {}, { bucket_cap = 1 })
end)

-- ---- statistics ----

test("stats count the collectives issued, not the refused ones", function()
  dist.reset_stats()
  local s = dist.stats()
  eq({ s.all_reduce, s.all_gather, s.broadcast, s.barrier, s.check, s.total, s.bytes },
     { 0, 0, 0, 0, 0, 0, 0 }, "after reset")
  local t = lunet.ones(4)                                 -- 16 bytes
  dist.all_reduce(t)
  dist.all_reduce(lunet.ones(2, { dtype = "float16" }))   -- travels as float32: 8 bytes
  dist.all_gather(nil, t)
  for src = 0, n - 1 do dist.broadcast(t, src) end
  dist.barrier()
  dist.check_same(1)
  pcall(dist.all_reduce, t, { op = "prod" })
  pcall(dist.broadcast, t, n)
  s = dist.stats()
  eq({ s.all_reduce, s.all_gather, s.broadcast, s.barrier, s.check },
     { 2, 1, n, 1, 1 }, "per kind")
  eq(s.total, 5 + n, "total")
  eq(s.bytes, 16 + 8 + 16 + 16 * n + 8, "bytes")
  dist.reset_stats()
  eq(dist.stats().total, 0, "reset")
end)

local g = dist.new_group()
H.finish("dist_collectives", {
  { "after finalize: every call says the group is gone", function()
    eq(dist.is_initialized(), false, "is_initialized")
    err("the default process group was destroyed by dist.finalize()", dist.rank)
    err("the default process group was destroyed by dist.finalize()", dist.all_reduce,
        lunet.ones(1))
    err("all_reduce: the process group was destroyed by dist.finalize()", dist.all_reduce,
        lunet.ones(1), { group = g })
    err("MPI cannot be initialized again after dist.finalize()", dist.init)
    eq(g:size(), n, "the group object still answers")
  end },
})
