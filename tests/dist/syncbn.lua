-- syncbn.lua -- nn.SyncBatchNorm under mpirun: on every rank, the output,
-- the input's gradient, the running statistics and the counter equal those
-- of one BatchNorm over the concatenated batch (which every rank computes
-- itself from the same seed), for even, uneven and empty per-rank batches,
-- 2D, 4D and 5D inputs, affine or not, channels-last; two groups of two in
-- a four-process run; the collectives a step costs; convert_sync_batchnorm
-- with a group. Run: mpirun -np K build/lunet tests/dist/syncbn.lua (K >= 1).
local lunet = require("lunet")
local nn = require("lunet.nn")
local dist = require("lunet.dist")
local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
local eq, err, test = H.eq, H.err, H.test

dist.init()
local rank, np = dist.rank(), dist.world_size()
local f64 = { dtype = "float64" }

-- a and b (tensors of one shape) agree within tol relative to b's scale.
local function close(a, b, what, tol)
  tol = tol or 1e-11
  eq(a:size(), b:size(), what .. " (size)")
  if b:numel() == 0 then return end
  local d = (a:double() - b:double()):abs():max():item()
  local scale = math.max(1, b:double():abs():max():item())
  if not (d <= tol * scale) then
    error(("%s: max abs difference %g, tolerance %g"):format(what, d, tol * scale), 2)
  end
end

-- Where the rows of batch member `me` (0-based) start in the concatenated
-- batch, and the total.
local function offsets(sizes, me)
  local start, total = 0, 0
  for r, n in ipairs(sizes) do
    if r - 1 < me then start = start + n end
    total = total + n
  end
  return start, total
end

local bn_class = { [2] = nn.BatchNorm1d, [3] = nn.BatchNorm1d, [4] = nn.BatchNorm2d,
                   [5] = nn.BatchNorm3d }
local formats = { [4] = "channels_last", [5] = "channels_last_3d" }

-- One case: `sizes` holds each rank's batch size (this rank's own at
-- [rank+1]; `group` and `members` say which ranks share the batch), `spatial`
-- the trailing dims. Two training steps then an eval step on SyncBatchNorm
-- and on BatchNorm over the whole batch, compared after each.
local function check_case(c)
  local C, group, members = c.C or 3, c.group, c.members or np
  local sizes = {}
  for r = 1, members do sizes[r] = c.sizes[r] end
  local me = rank % members
  local start, total = offsets(sizes, me)
  local mine = sizes[me + 1]
  local opts = { dtype = "float64", affine = c.affine ~= false, momentum = c.momentum,
                 track_running_stats = c.track ~= false }
  local ref = bn_class[2 + #c.spatial](C, opts)
  opts.process_group = group
  local m = nn.SyncBatchNorm(C, opts)
  lunet.manual_seed(c.seed or 7)
  if opts.affine then
    lunet.no_grad(function()
      for _, t in ipairs{ ref.weight, ref.bias } do t:copy_(lunet.randn(C, f64)) end
      m.weight:copy_(ref.weight)
      m.bias:copy_(ref.bias)
    end)
  end
  for step = 1, 3 do
    if step == 3 then m:eval(); ref:eval() end
    local shape = { total, C, table.unpack(c.spatial) }
    local full = lunet.randn(shape, f64) * (step + 1) + step
    local R = lunet.randn(shape, f64)
    local x = full:narrow(1, start + 1, mine):clone()
    if c.channels_last then x = x:contiguous(formats[#shape]) end
    x:requires_grad_(true)
    local xf = full:clone():requires_grad_(true)
    local y, yr = m(x), ref(xf)
    local what = ("step %d"):format(step)
    local local_only = step == 3 and not opts.track_running_stats
    if local_only then   -- eval without running stats: this rank's batch statistics
      if mine < 2 then break end
      xf = full:narrow(1, start + 1, mine):clone():requires_grad_(true)
      yr, R, start = ref(xf), R:narrow(1, start + 1, mine), 0
    end
    close(y, yr:narrow(1, start + 1, mine), what .. ": output")
    if c.channels_last and mine > 0 then
      H.truthy(y:is_contiguous(formats[#shape]), what .. ": output keeps channels-last")
    end
    if step < 3 or local_only then
      m:zero_grad()
      ref:zero_grad()
      local loss, loss_ref = (y * R:narrow(1, start + 1, mine)):sum(), (yr * R):sum()
      loss:backward()
      loss_ref:backward()
      close(x.grad, xf.grad:narrow(1, start + 1, mine), what .. ": input grad")
      for _, name in ipairs(opts.affine and { "weight", "bias" } or {}) do
        local g = m[name].grad:clone()   -- local sums, which add up to BatchNorm's
        if not local_only then dist.all_reduce(g, { group = group }) end
        close(g, ref[name].grad, what .. ": " .. name .. " grad summed over the ranks")
      end
    end
    if opts.track_running_stats then
      close(m.running_mean, ref.running_mean, what .. ": running_mean", 1e-12)
      close(m.running_var, ref.running_var, what .. ": running_var", 1e-12)
      eq(m.num_batches_tracked:item(), ref.num_batches_tracked:item(), what .. ": counter")
    end
  end
end

-- Batch sizes by rank for np processes.
local function split(kind)
  local t = {
    even = { 2, 2, 2, 2 },
    uneven = np == 1 and { 3 } or { 3, 1, 4, 2 },
    empty = np == 1 and { 0 } or { 2, 0, 3, 1 },      -- np 1: a global batch of 0
    all_empty = { 0, 0, 0, 0 },
  }
  return { table.unpack(t[kind], 1, np) }
end

for _, kind in ipairs{ "even", "uneven", "empty" } do
  for _, spatial in ipairs{ {}, { 5 }, { 3, 4 }, { 2, 3, 2 } } do
    for _, affine in ipairs{ true, false } do
      local name = ("%s split, %dD input, affine=%s"):format(kind, 2 + #spatial, affine)
      test(name, function()
        check_case{ sizes = split(kind), spatial = spatial, affine = affine }
      end)
    end
  end
  for _, spatial in ipairs{ { 3, 4 }, { 2, 3, 2 } } do
    test(("%s split, %dD channels-last input"):format(kind, 2 + #spatial), function()
      check_case{ sizes = split(kind), spatial = spatial, channels_last = true }
    end)
  end
end

test("every rank empty: empty output, running statistics unchanged, counter counts", function()
  check_case{ sizes = split("all_empty"), spatial = { 3 } }
end)

test("momentum=false (cumulative average), odd channel count", function()
  check_case{ sizes = split("uneven"), spatial = { 3 }, momentum = false, C = 5 }
end)

test("track_running_stats=false: batch statistics in eval too (local, no collective)", function()
  check_case{ sizes = split("even"), spatial = { 2 }, track = false }
end)

test("float32 far from zero: global statistics without cancellation", function()
  local start, total = offsets(split("uneven"), rank)
  local mine = split("uneven")[rank + 1]
  lunet.manual_seed(3)
  local full = (lunet.randn(total, 4, 64, f64) * 0.01 + 1e4):float():double()
  local m = nn.SyncBatchNorm(4)
  local y = m(full:narrow(1, start + 1, mine):float())
  local ref = nn.BatchNorm1d(4, f64)(full)
  close(y, ref:narrow(1, start + 1, mine), "float32 output", 1e-4)
  close(m.running_var, lunet.full({ 4 }, 0.9, f64) + full:transpose(1, 2):reshape(4, -1)
        :var(2) * 0.1, "float32 running_var", 1e-6)
end)

test("a global batch of one value per channel fails on every rank", function()
  local m = nn.SyncBatchNorm(3)
  local x = lunet.randn(rank == 0 and 1 or 0, 3)
  err("Expected more than 1 value per channel when training", m, x)
  eq(m.num_batches_tracked:item(), 0, "counter put back")
  m(lunet.randn(2, 3))   -- and the next step works on every rank
  eq(m.num_batches_tracked:item(), 1, "counter")
end)

test("collectives: none in eval, one all_gather per layer forward and one all_reduce "
     .. "per layer backward in training, a check on a layer's first forward", function()
  local model = nn.Sequential(nn.SyncBatchNorm(3, f64), nn.SyncBatchNorm(3, f64))
  local L, sync = 2, np > 1
  local function step(x)
    dist.reset_stats()
    model(x):pow(2):sum():backward()
    local s = dist.stats()
    return { s.check, s.all_gather, s.all_reduce, s.broadcast, s.barrier, s.total }
  end
  local x = lunet.randn(2, 3, 4, f64):requires_grad_(true)
  eq(step(x), sync and { L, L, L, 0, 0, 3 * L } or { 0, 0, 0, 0, 0, 0 }, "first step")
  eq(step(x), sync and { 0, L, L, 0, 0, 2 * L } or { 0, 0, 0, 0, 0, 0 }, "second step")
  -- the first layer's input needs no gradient: its weight and bias
  -- gradients are local sums, so it reduces nothing (as PyTorch)
  eq(step(x:detach()), sync and { 0, L, L - 1, 0, 0, 2 * L - 1 } or { 0, 0, 0, 0, 0, 0 },
     "input without grad")
  model:eval()
  eq(step(x), { 0, 0, 0, 0, 0, 0 }, "eval")
  local bytes = dist.stats().bytes
  eq(bytes, 0, "eval bytes")
end)

test("two groups of two synchronize independently (np=4)", function()
  if np ~= 4 then return end
  local groups = { dist.new_group({ 0, 1 }), dist.new_group({ 2, 3 }) }
  local g = groups[rank // 2 + 1]
  -- each pair has its own data (seed) and batch sizes
  check_case{ sizes = rank < 2 and { 3, 2 } or { 1, 4 }, spatial = { 3 }, group = g,
              members = 2, seed = 11 + rank // 2 }
  dist.reset_stats()
  local m = nn.SyncBatchNorm(3, { process_group = g })
  m(lunet.randn(2, 3))
  local s = dist.stats()
  eq({ s.check, s.all_gather }, { 1, 1 }, "collectives on the pair")
  H.truthy(m.process_group == g, "process_group field")
end)

test("convert_sync_batchnorm with a group: types, shared tensors, modes, names", function()
  local g = dist.new_group()   -- every rank: the world again, as a group
  local Net = nn.Module:extend("SyncNet")
  function Net:__init()
    self.bn = nn.BatchNorm2d(3)
    self.seq = nn.Sequential(nn.BatchNorm1d(4, { affine = false }))
  end
  local net = Net()
  net.seq[1]:eval()
  local bn, w = net.bn, net.bn.weight
  local out = nn.SyncBatchNorm.convert_sync_batchnorm(net, g)
  H.truthy(out == net, "a container comes back converted in place")
  eq(net.bn:type_name(), "SyncBatchNorm", "child type")
  eq(net.seq[1]:type_name(), "SyncBatchNorm", "grandchild type")
  H.truthy(net.bn.weight == w and net.bn.running_var == bn.running_var, "tensors shared")
  eq(net.seq[1].training, false, "training flag kept")
  H.truthy(net.bn.process_group == g and net.seq[1].process_group == g, "group")
  local names = {}
  for name in net:named_modules() do names[#names + 1] = name end
  eq(names, { "", "bn", "seq", "seq.1" }, "names")
  local x = lunet.randn(2, 3, 2, 2)
  net.bn(x)
  eq(bn.num_batches_tracked:item(), 1, "the original BatchNorm's counter moved too")
end)

H.finish("dist_syncbn")
