--[[
lunet.dist -- process groups and collectives, as torch.distributed.

Launch with mpirun (docs/DISTRIBUTED.md); ranks are 0-based, as in MPI.

  dist.init{backend="mpi"}          -- or "nccl" for CUDA tensors; default "mpi"
  dist.rank([g]) dist.world_size([g]) dist.local_rank() dist.backend()
  dist.is_available() dist.is_nccl_available() dist.is_initialized()
  local g = dist.new_group({0, 1})  -- every rank calls it; nil: all ranks
  g:rank() g:size() g:ranks() g:is_member()   -- rank/size -1 outside g
  dist.get_global_rank(g, r) dist.get_group_rank(g, r)
  dist.all_reduce(t, {op="sum"|"avg"|"max"|"min", group=g})  -- in place, returns t
  dist.all_reduce_coalesced({t1, t2, ...}, {op=, group=, bucket_cap_mb=25})
                                    -- few collectives; returns how many
  dist.all_gather(list, t, {group=g})  -- fills list (one tensor per group rank)
  dist.all_gather(nil, t, {group=g})   -- returns a new list
  dist.broadcast(t, src, {group=g})    -- src is a global rank, returns t
  dist.barrier({group=g})
  dist.check_same(n, "what", {group=g})  -- fails on every rank if n differs
  dist.stats() -> {all_reduce=, all_gather=, broadcast=, barrier=, check=,
                   total=, bytes=}      dist.reset_stats()
  dist.finalize()                   -- every rank, at the end

Every function is the C binding itself (lua/l_dist.c), so errors point at
the caller's line.
]]
local lunet = require("lunet")

local dist = {}
for name, fn in pairs(lunet._dist) do dist[name] = fn end

return dist
