-- syncbn_mismatch.lua -- SyncBatchNorm's mistakes that differ across ranks
-- fail on every rank, and none waits: num_features that differ (found by
-- the check on a layer's first forward), an input whose channel count
-- differs (found by the statistics' all_gather itself, also after a
-- successful step), a bad input on one rank only (the others learn that
-- it failed). After each, the next correct step works on every rank and
-- the counter shows no trace of the failed one. scripts/test bounds every
-- run with a timeout, so a hang fails instead of stalling.
-- Run: mpirun -np K build/lunet tests/dist/syncbn_mismatch.lua (K >= 1).
local lunet = require("lunet")
local nn = require("lunet.nn")
local dist = require("lunet.dist")
local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
local eq, err, test = H.eq, H.err, H.test

dist.init()
local rank, np = dist.rank(), dist.world_size()
local odd = np - 1            -- the rank that makes the mistake
local sync = np > 1

-- "rank 0 has 3, rank 1 has 3, ..., rank odd has 4"
local function each_rank(values)
  local parts = {}
  for r = 0, np - 1 do parts[#parts + 1] = ("rank %d has %d"):format(r, values(r)) end
  return table.concat(parts, ", ")
end

-- After a failed step: a correct one works everywhere, and the counter
-- counts only the successful steps.
local function then_works(m, steps)
  m(lunet.randn(2, m.num_features, 3))
  eq(m.num_batches_tracked:item(), steps, "counter")
end

test("num_features differs across ranks: every rank fails the first forward", function()
  local m = nn.SyncBatchNorm(rank == odd and 4 or 3)
  local x = lunet.randn(2, m.num_features, 3)
  if sync then
    err("SyncBatchNorm channel count differs across ranks: "
        .. each_rank(function(r) return r == odd and 4 or 3 end), m, x)
    err("SyncBatchNorm channel count differs across ranks", m, x)   -- and again
    eq(m.num_batches_tracked:item(), 0, "counter")
  else
    m(x)
  end
end)

test("one rank's input has another channel count, on the first forward", function()
  local m = nn.SyncBatchNorm(3)
  local x = lunet.randn(2, rank == odd and 4 or 3, 3)
  err(sync and "SyncBatchNorm input channel count differs across ranks: "
          .. each_rank(function(r) return r == odd and 4 or 3 end)
        or "SyncBatchNorm expected input with 3 channels (num_features), got 4", m, x)
  eq(m.num_batches_tracked:item(), 0, "counter")
  then_works(m, 1)
end)

test("one rank's input has another channel count, after a successful step", function()
  local m = nn.SyncBatchNorm(3, { affine = false, track_running_stats = false })
  m(lunet.randn(2, 3, 3))
  local x = lunet.randn(2, rank == odd and 5 or 3, 3)
  err(sync and "SyncBatchNorm input channel count differs across ranks"
        or "SyncBatchNorm expected input with 3 channels (num_features), got 5", m, x)
  m(lunet.randn(2, 3, 3))
end)

test("every rank's input has another channel count than num_features", function()
  local m = nn.SyncBatchNorm(3, { affine = false, track_running_stats = false })
  err("SyncBatchNorm expected input with 3 channels (num_features), got 4", m,
      lunet.randn(2, 4))
end)

test("a bad input on one rank: its own message there, the others learn it failed", function()
  local m = nn.SyncBatchNorm(3)
  m(lunet.randn(2, 3))
  local function others(text)
    return rank == odd and text
      or ("SyncBatchNorm: rank %d failed before sharing its statistics"):format(odd)
  end
  err(others("expected at least 2D input (got 1D input)"), m,
      rank == odd and lunet.randn(3) or lunet.randn(2, 3))
  err(others("mixed dtype (CPU): all inputs must share same datatype."),
      m, rank == odd and lunet.randn(2, 3, { dtype = "float64" }) or lunet.randn(2, 3))
  err(others('"batch_norm" not implemented for \'Long\''), m,
      rank == odd and lunet.zeros(2, 3, { dtype = "int64" }) or lunet.randn(2, 3))
  eq(m.num_batches_tracked:item(), 1, "counter after the failures")
  then_works(m, 2)
end)

test("running statistics in an expanded tensor fail on every rank, untouched", function()
  local m = nn.SyncBatchNorm(3)
  m.running_mean = lunet.zeros(1):expand(3)
  err("more than one element of the written-to tensor refers to a single memory location",
      m, lunet.randn(2, 3))
  eq(m.num_batches_tracked:item(), 0, "counter")
  eq(m.running_mean:tolist(), { 0, 0, 0 }, "running_mean")
end)

test("zero channels fail alike, with PyTorch's message", function()
  local m = nn.SyncBatchNorm(0)
  err("SyncBatchNorm number of input channels should be non-zero", m, lunet.randn(2, 0))
  m:eval()
  err("SyncBatchNorm number of input channels should be non-zero", m, lunet.randn(2, 0))
end)

H.finish("dist_syncbn_mismatch")
