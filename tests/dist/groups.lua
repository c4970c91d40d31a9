-- groups.lua -- process groups: creation (every rank calls new_group in the
-- same order), rank translation, groups working independently (pairs
-- {0, 1}, {2, 3}, ... each run a different sequence of collectives at the
-- same time), use by a process outside the group, bad rank lists.
-- Run: mpirun -np K build/lunet tests/dist/groups.lua (any K >= 1).
local lunet = require("lunet")
local dist = require("lunet.dist")
local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
local eq, err, test = H.eq, H.err, H.test

dist.init()
local rank, n = dist.rank(), dist.world_size()

-- The pairs {0, 1}, {2, 3}, ... (the last one {n-1} when n is odd), made
-- by every rank in the same order; mine is the one holding this rank.
local pairs_, mine = {}, nil
for first = 0, n - 1, 2 do
  local ranks = first + 1 < n and { first + 1, first } or { first }  -- any order
  local g = dist.new_group(ranks)
  pairs_[#pairs_ + 1] = g
  if g:is_member() then mine = g end
end
local pair_index = rank // 2 + 1
local pair_ranks = mine:ranks()

test("new_group: sorted ranks, this process's place, rank translation", function()
  eq(#pairs_, (n + 1) // 2, "number of pairs")
  H.truthy(mine == pairs_[pair_index], "member of its own pair only")
  for i, g in ipairs(pairs_) do eq(g:is_member(), i == pair_index, "is_member " .. i) end
  eq(pair_ranks, rank + 1 < n + rank % 2 and { rank - rank % 2, rank - rank % 2 + 1 }
                   or { rank }, "sorted ranks")
  eq(mine:rank(), rank % 2, "group rank")
  eq(dist.rank(mine), rank % 2, "dist.rank(group)")
  eq(mine:size(), #pair_ranks, "size")
  eq(dist.world_size(mine), #pair_ranks, "dist.world_size(group)")
  for r, global in ipairs(pair_ranks) do
    eq(dist.get_global_rank(mine, r - 1), global, "get_global_rank")
    eq(dist.get_group_rank(mine, global), r - 1, "get_group_rank")
  end
  err("group rank 2 is out of range (the group has", dist.get_global_rank, mine, 2)
  err("global rank " .. n .. " is not part of the group", dist.get_group_rank, mine, n)
  eq(tostring(mine), ("ProcessGroup(ranks={%s}, rank=%d)"):format(
       table.concat(pair_ranks, ", "), rank % 2), "tostring")
end)

test("outside a group: rank and size are -1, as PyTorch's get_rank/get_world_size", function()
  for i, g in ipairs(pairs_) do
    if i ~= pair_index then
      eq(g:rank(), -1, "g:rank()")
      eq(dist.rank(g), -1, "dist.rank(g)")
      eq(dist.world_size(g), -1, "dist.world_size(g)")
    end
  end
end)

test("pairs work independently, each with its own sequence of collectives", function()
  dist.reset_stats()
  local sum = 0
  for _, r in ipairs(pair_ranks) do sum = sum + r + 1 end
  if pair_index % 2 == 1 then      -- odd pairs: three all_reduces, then a barrier
    for k = 1, 3 do
      local t = lunet.full({ 3 }, (rank + 1) * k, { dtype = "float64" })
      dist.all_reduce(t, { group = mine })
      eq(t, lunet.full({ 3 }, sum * k):tolist(), "all_reduce " .. k)
    end
    dist.barrier { group = mine }
  else                             -- even pairs: broadcast from the last member, then gathers
    local t = lunet.full({ 2 }, rank)
    dist.broadcast(t, pair_ranks[#pair_ranks], { group = mine })
    eq(t, { pair_ranks[#pair_ranks], pair_ranks[#pair_ranks] }, "broadcast")
    for _ = 1, 2 do
      local got = dist.all_gather(nil, lunet.tensor({ rank * 1.0 }), { group = mine })
      eq(#got, #pair_ranks, "gathered rows")
      for r, global in ipairs(pair_ranks) do eq(got[r], { global }, "row " .. r) end
    end
  end
  local s = dist.stats()
  eq(s.total, pair_index % 2 == 1 and 4 or 3, "collectives issued by this rank")
  -- and the world is still one group
  local w = lunet.ones(1)
  dist.all_reduce(w)
  eq(w, { n }, "world all_reduce after the pairs")
end)

test("max/min/avg inside a group", function()
  for op, want in pairs { max = pair_ranks[#pair_ranks], min = pair_ranks[1] } do
    local t = lunet.tensor({ rank }, { dtype = "int64" })
    dist.all_reduce(t, { op = op, group = mine })
    eq(t, { want }, op)
  end
  local t = lunet.tensor({ rank * 1.0 })
  dist.all_reduce(t, { op = "avg", group = mine })
  local mean = 0
  for _, r in ipairs(pair_ranks) do mean = mean + r / #pair_ranks end
  eq(t, { mean }, "avg")
end)

test("broadcast in a group: src is a global rank and must be a member", function()
  local src = pair_ranks[1]
  local t = lunet.tensor({ rank * 1.0 })
  dist.broadcast(t, src, { group = mine })
  eq(t, { src }, "from the first member")
  local outside = (pair_ranks[#pair_ranks] + 1) % n
  if n > 2 then
    err(("broadcast: src rank %d is not in the process group (ranks {%s})"):format(
          outside, table.concat(pair_ranks, ", ")),
        dist.broadcast, t, outside, { group = mine })
  end
end)

test("a group this process is not in refuses every collective, and nobody waits", function()
  for i, g in ipairs(pairs_) do
    if i ~= pair_index then
      local ranks = "{" .. table.concat(g:ranks(), ", ") .. "}"
      local msg = ("this process (rank %d) is not a member of the process group (ranks %s)")
                  :format(rank, ranks)
      local t = lunet.ones(2)
      err("all_reduce: " .. msg, dist.all_reduce, t, { group = g })
      err("all_reduce_coalesced: " .. msg, dist.all_reduce_coalesced, { t }, { group = g })
      err("all_gather: " .. msg, dist.all_gather, nil, t, { group = g })
      err("broadcast: " .. msg, dist.broadcast, t, g:ranks()[1], { group = g })
      err("barrier: " .. msg, dist.barrier, { group = g })
      err("check_same: " .. msg, dist.check_same, 1, "x", { group = g })
    end
  end
  dist.barrier()
end)

test("check_same in a group compares only its members", function()
  dist.check_same(pair_index, "pair index", { group = mine })   -- equal within the pair
  if #pair_ranks == 2 then
    err(("differs across ranks: rank %d has %d, rank %d has %d"):format(
          pair_ranks[1], pair_ranks[1], pair_ranks[2], pair_ranks[2]),
        dist.check_same, rank, "rank", { group = mine })
  end
end)

test("new_group(): every rank; a list in any order", function()
  local all = dist.new_group()
  eq(all:size(), n, "size")
  eq(all:rank(), rank, "rank")
  local t = lunet.ones(1)
  dist.all_reduce(t, { group = all })
  eq(t, { n }, "all_reduce")
  local rev = {}
  for r = n - 1, 0, -1 do rev[#rev + 1] = r end
  local g = dist.new_group(rev)
  eq(g:ranks()[1], 0, "sorted")
  eq(g:rank(), rank, "rank in a reversed list")
end)

test("new_group: bad lists fail on every rank before any communication", function()
  err(("new_group: rank %d is out of range (the world has ranks 0 to %d)"):format(n, n - 1),
      dist.new_group, { 0, n })
  err("new_group: rank -1 is out of range", dist.new_group, { -1 })
  err("new_group: rank 0 appears more than once", dist.new_group, { 0, 0 })
  err("new_group: expected at least one rank", dist.new_group, {})
  err("integer rank expected at index 2, got string", dist.new_group, { 0, "1" })
  err("integer rank expected at index 1, got number", dist.new_group, { 0.5 })
  err("process group expected", dist.rank, 5)
  local g = dist.new_group { 0 }                    -- and creation still works after
  eq(g:size(), 1, "size")
end)

H.finish("dist_groups", {
  { "after finalize: groups refuse collectives", function()
    err("all_reduce: the process group was destroyed by dist.finalize()", dist.all_reduce,
        lunet.ones(1), { group = mine })
    err("barrier: the process group was destroyed by dist.finalize()", dist.barrier,
        { group = mine })
  end },
})
