-- ddp.lua -- nn.DistributedDataParallel under mpirun: construction makes
-- every rank start from rank 0's parameters and buffers; a few SGD steps
-- with SyncBatchNorm on K processes give the parameters and running
-- statistics of one process training on the concatenated batch (which
-- every rank computes itself); the collectives a step costs; a group of
-- two in a four-process run; what the wrapper forwards to the model.
-- Run: mpirun -np K build/lunet tests/dist/ddp.lua (K >= 1).
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")
local dist = require("lunet.dist")
local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
local eq, err, test = H.eq, H.err, H.test

dist.init()
local rank, np = dist.rank(), dist.world_size()
local f64 = { dtype = "float64" }

local function close(a, b, what, tol)
  local d = (a - b):abs():max():item()
  if not (d <= (tol or 1e-10)) then
    error(("%s: max abs difference %g"):format(what, d), 2)
  end
end

-- y = x W^T + b (a Lua layer, so that the test needs only lunet's core).
local Linear = nn.Module:extend("DDPTestLinear")
function Linear:__init(n_in, n_out)
  self.weight = nn.Parameter(lunet.randn(n_out, n_in, f64) * (1 / math.sqrt(n_in)))
  self.bias = nn.Parameter(lunet.randn(n_out, f64) * 0.1)
end
function Linear:forward(x) return x:matmul(self.weight:t()) + self.bias end

local ReLU = nn.Module:extend("DDPTestReLU")
function ReLU:forward(x) return x:relu() end

-- The model, initialised from `seed`; norm is SyncBatchNorm or BatchNorm1d.
local function model(seed, norm)
  lunet.manual_seed(seed)
  return nn.Sequential(Linear(5, 6), norm(6, f64), ReLU(), Linear(6, 3))
end

-- Batch `step` of the concatenated batch (per rank rows each), and this
-- rank's rows of it among `members` ranks.
local function batch(step, rows, member, members)
  lunet.manual_seed(1000 + step)
  local x, t = lunet.randn(rows * members, 5, f64), lunet.randn(rows * members, 3, f64)
  return x, t, x:narrow(1, member * rows + 1, rows), t:narrow(1, member * rows + 1, rows)
end

local function mse(y, t) return (y - t):pow(2):mean() end

-- Train `ddp` and a reference model on the concatenated batch for `steps`
-- SGD steps; compare parameters and buffers after each.
local function train_and_compare(ddp, ref, member, members, steps)
  local opt = optim.SGD(ddp:parameters(), { lr = 0.1, momentum = 0.9 })
  local opt_ref = optim.SGD(ref:parameters(), { lr = 0.1, momentum = 0.9 })
  for step = 1, steps do
    local x, t, xl, tl = batch(step, 4, member, members)
    opt:zero_grad()
    mse(ddp(xl), tl):backward()
    eq(ddp:sync_gradients(), 1, "buckets")
    opt:step()
    opt_ref:zero_grad()
    mse(ref(x), t):backward()
    opt_ref:step()
    local mine, theirs = ddp:state_dict(), ref:state_dict()
    for k, v in pairs(theirs) do
      if k ~= "_metadata" then close(mine[k]:double(), v:double(), ("step %d: %s"):format(step, k)) end
    end
  end
end

test("construction: every rank gets rank 0's parameters and buffers", function()
  local m = model(100 + rank, nn.SyncBatchNorm)
  lunet.no_grad(function() m[2].running_mean:fill_(rank) end)
  m[2].num_batches_tracked:fill_(rank + 3)
  dist.reset_stats()
  local ddp = nn.DistributedDataParallel(m)
  local s = dist.stats()
  eq(s.broadcast, 2, "one broadcast per dtype (float64, int64)")
  eq(s.total, 2, "collectives")
  local ref = model(100, nn.BatchNorm1d)
  for k, v in pairs(ref:state_dict()) do
    if k ~= "_metadata" then
      close(m:state_dict()[k]:double(), v:double() + (k == "2.num_batches_tracked" and 3 or 0), k)
    end
  end
  H.truthy(m[1].weight.requires_grad and m[1].weight.grad_fn == nil, "parameters stay leaves")
end)

test("SGD on K processes with SyncBatchNorm equals one process on the whole batch", function()
  local ddp = nn.DistributedDataParallel(model(100 + rank, nn.SyncBatchNorm))
  train_and_compare(ddp, model(100, nn.BatchNorm1d), rank, np, 3)
end)

test("a step costs one all_gather and one all_reduce per SyncBatchNorm, one per bucket",
     function()
  local ddp = nn.DistributedDataParallel(model(1, nn.SyncBatchNorm), { bucket_cap_mb = 25 })
  local _, _, x, t = batch(1, 4, rank, np)
  ddp(x)   -- the layer's first forward also checks its channel count
  dist.reset_stats()
  mse(ddp(x), t):backward()
  local buckets = ddp:sync_gradients()
  local s = dist.stats()
  local sync = np > 1 and 1 or 0
  eq({ s.all_gather, s.all_reduce, s.check, s.broadcast }, { sync, sync + buckets, 0, 0 },
     "collectives")
  eq(buckets, 1, "one bucket")
  -- buckets of 200 bytes: the 5x6 weight (240 bytes) alone, then the others packed
  local small = nn.DistributedDataParallel(model(1, nn.SyncBatchNorm), { bucket_cap_mb = 2e-4 })
  mse(small(x), t):backward()
  H.truthy(small:sync_gradients() > 1, "small buckets")
end)

test("a parameter without a gradient gets zeros, so every rank reduces the same list", function()
  local m = model(1, nn.SyncBatchNorm)
  local extra = nn.Parameter(lunet.ones(2, f64))
  m[4].unused = extra
  local ddp = nn.DistributedDataParallel(m)
  local _, _, x, t = batch(1, 4, rank, np)
  mse(ddp(x), t):backward()
  ddp:sync_gradients()
  eq(extra.grad:tolist(), { 0, 0 }, "zero gradient")
end)

test("the wrapper forwards to the model", function()
  local m = model(1, nn.SyncBatchNorm)
  local ddp = nn.DistributedDataParallel(m)
  H.truthy(ddp.module == m, "ddp.module")
  eq(#ddp:parameters(), #m:parameters(), "parameters")
  H.truthy(ddp:parameters()[1] == m[1].weight, "the same tensors")
  H.truthy(ddp[2] == m[2], "children")
  H.truthy(ddp:eval() == ddp and not m.training, "eval returns the wrapper")
  ddp.training = true
  H.truthy(m.training == true and ddp.training == true, "fields are the model's")
  H.truthy(tostring(ddp):find("^DistributedDataParallel%(\n  %(module%): Sequential%(") ~= nil,
           "tostring")
  local sd = ddp:state_dict()
  H.truthy(sd["1.weight"] ~= nil, "state dict keys are the model's")
  err("unknown option 'group_'", nn.DistributedDataParallel, m, { group_ = 1 })
  -- '.' for ':' says so, for the wrapper's methods and the model's
  err("bad argument #1 to 'sync_gradients' (DistributedDataParallel expected, got no value); "
      .. "call it as ddp:sync_gradients()", function() ddp.sync_gradients() end)
  err("bad argument #1 to 'eval' (lunet.Module expected, got no value)", function() ddp.eval() end)
end)

test("a group of two in a four-process run (np=4)", function()
  if np ~= 4 then return end
  local groups = { dist.new_group({ 0, 1 }), dist.new_group({ 2, 3 }) }
  local pair = rank // 2
  local g = groups[pair + 1]
  local m = nn.SyncBatchNorm.convert_sync_batchnorm(model(100 + rank, nn.BatchNorm1d), g)
  local ddp = nn.DistributedDataParallel(m, { group = g })
  -- each pair starts from its first rank's model and trains on its own batches
  local ref = model(100 + 2 * pair, nn.BatchNorm1d)
  train_and_compare(ddp, ref, rank % 2, 2, 2)
end)

H.finish("dist_ddp")
