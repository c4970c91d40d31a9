--[[
bench_syncbn.lua -- the timing half of scripts/bench_syncbn, run under
mpirun: SyncBatchNorm against BatchNorm on the same per-process batch.

  mpirun -np K lunet scripts/bench_syncbn.lua [--rounds R] [--quick]

Every round runs each measure of both modules in turn on every rank,
between barriers; a round's time is the slowest rank's mean per call. The
report gives the medians over rounds of the times and of the per-round
ratio (so that load from other processes, which comes and goes, hits both
modules alike). Measures: training forward, and
forward+backward (the input requires grad, so SyncBatchNorm's backward
all-reduces; gradients are reset before each step). "collectives" times SyncBatchNorm's two collectives alone
(the all_gather of 2C+3 and the all_reduce of 2C+1 float64 values). Rank 0
prints one markdown row per case and measure:
  | case | processes | measure | BatchNorm ms | SyncBatchNorm ms | ratio | collectives ms |
]]
local lunet = require("lunet")
local nn = require("lunet.nn")
local dist = require("lunet.dist")

local CASES = {
  { label = "(16,64,28,28) NCHW", shape = { 16, 64, 28, 28 } },
  { label = "(16,64,28,28) channels-last", shape = { 16, 64, 28, 28 }, format = "channels_last" },
  { label = "(256,1024)", shape = { 256, 1024 } },
  { label = "(8,64,8,8) small", shape = { 8, 64, 8, 8 } },
}

local rounds, quick = 5, false
local i = 1
while arg[i] do
  if arg[i] == "--rounds" then rounds, i = assert(tonumber(arg[i + 1]), "--rounds N"), i + 2
  elseif arg[i] == "--quick" then quick, rounds, i = true, 1, i + 1
  else error("bench_syncbn.lua: unknown argument " .. arg[i]) end
end

dist.init()
local rank, np = dist.rank(), dist.world_size()

local function median(v)
  local s = { table.unpack(v) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

-- Seconds per call of each fn, per round: a round runs every fn in turn
-- (so that load from other processes hits them alike), each between
-- barriers, and keeps the slowest rank's mean per call.
local function time_rounds(fns, calls)
  local t = {}
  for k, fn in ipairs(fns) do
    fn()   -- warm up (and a layer's first-forward check)
    t[k] = {}
  end
  for r = 1, rounds do
    for k, fn in ipairs(fns) do
      dist.barrier()
      local t0 = lunet.clock()
      for _ = 1, calls do fn() end
      local s = lunet.tensor({ (lunet.clock() - t0) / calls }, { dtype = "float64" })
      t[k][r] = dist.all_reduce(s, { op = "max" }):item()
    end
  end
  return t
end

-- One row: the medians of both modules' times and of their per-round ratio.
local function row(label, measure, bn, sync, comm)
  local ratios = {}
  for r = 1, rounds do ratios[r] = sync[r] / bn[r] end
  if rank == 0 then
    print(("| %s | %d | %s | %.3f | %.3f | %.2f | %s |"):format(label, np, measure,
          median(bn) * 1e3, median(sync) * 1e3, median(ratios),
          comm and ("%.3f"):format(median(comm) * 1e3) or ""))
    io.stdout:flush()
  end
end

for _, c in ipairs(CASES) do
  local C = c.shape[2]
  local numel = 1
  for _, n in ipairs(c.shape) do numel = numel * n end
  local calls = quick and 2 or math.max(3, math.floor(2e7 / numel))
  lunet.manual_seed(rank)
  local x = lunet.randn(c.shape)
  if c.format then x = x:contiguous(c.format) end
  x:requires_grad_(true)
  local dy = lunet.randn(c.shape)
  if c.format then dy = dy:contiguous(c.format) end
  local bn, sync = (#c.shape == 2 and nn.BatchNorm1d or nn.BatchNorm2d)(C), nn.SyncBatchNorm(C)
  -- a training step's forward and backward; gradients are reset first
  -- (setting nil costs nothing), so that no accumulation is timed
  local function step(m)
    x.grad = nil
    m:zero_grad()
    m(x):backward(dy)
  end
  local gathered = lunet.zeros(2 * C + 3, { dtype = "float64" })
  local reduced = lunet.zeros(2 * C + 1, { dtype = "float64" })
  local t = time_rounds({
    function() bn(x) end,
    function() sync(x) end,
    function() step(bn) end,
    function() step(sync) end,
    function()
      dist.all_gather(nil, gathered)
      dist.all_reduce(reduced)
    end,
  }, calls)
  row(c.label, "train forward", t[1], t[2])
  row(c.label, "train forward+backward", t[3], t[4], t[5])
end

dist.finalize()
