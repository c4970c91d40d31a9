--[[
bench_syncbn.lua -- the timing half of scripts/bench_syncbn, run under
mpirun: SyncBatchNorm against BatchNorm on the same per-process batch.

  mpirun -np K lunet scripts/bench_syncbn.lua [--rounds R] [--quick]

For each case and measure, every round runs both modules on every rank
between barriers; a round's time is the slowest rank's mean per call, and
the reported time the median over rounds. Measures: training forward, and
forward+backward (the input requires grad, so SyncBatchNorm's backward
all-reduces). "collectives" times SyncBatchNorm's two collectives alone
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

-- The median over rounds of the slowest rank's seconds per call of fn.
local function time(fn, calls)
  fn()   -- warm up (and the layer's first-forward check)
  local samples = {}
  for r = 1, rounds do
    dist.barrier()
    local t0 = lunet.clock()
    for _ = 1, calls do fn() end
    local t = lunet.tensor({ (lunet.clock() - t0) / calls }, { dtype = "float64" })
    samples[r] = dist.all_reduce(t, { op = "max" }):item()
  end
  table.sort(samples)
  return samples[(rounds + 1) // 2]
end

local function row(label, measure, bn, sync, comm)
  if rank == 0 then
    print(("| %s | %d | %s | %.3f | %.3f | %.2f | %s |"):format(label, np, measure, bn * 1e3,
          sync * 1e3, sync / bn, comm and ("%.3f"):format(comm * 1e3) or ""))
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
  local function fwd(m) return function() m(x) end end
  local function fwd_bwd(m) return function() m(x):backward(dy) end end
  local gathered = lunet.zeros(2 * C + 3, { dtype = "float64" })
  local reduced = lunet.zeros(2 * C + 1, { dtype = "float64" })
  local comm = time(function()
    dist.all_gather(nil, gathered)
    dist.all_reduce(reduced)
  end, calls)
  row(c.label, "train forward", time(fwd(bn), calls), time(fwd(sync), calls))
  row(c.label, "train forward+backward", time(fwd_bwd(bn), calls), time(fwd_bwd(sync), calls),
      comm)
end

dist.finalize()
