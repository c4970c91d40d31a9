--[[
lunet.dist -- distributed training (process groups, collectives).

Process groups come with a later issue (issue 5). Until then this module
says so clearly: is_available() and is_initialized() are false, and init()
fails with "lunet was built without MPI support" in a build without MPI,
or with a "not implemented yet" message otherwise. Every other function
fails as PyTorch's do before init.
]]
local lunet = require("lunet")

local dist = {}

--- Whether lunet was compiled with MPI (the build's LUNET_MPI option).
dist.built_with_mpi = lunet._module.has_mpi

function dist.is_available() return false end
function dist.is_initialized() return false end

--- dist.init{backend="mpi"|"nccl", ...}
function dist.init(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #1 to 'init' (options table expected, got %s)"):format(type(opts)), 2)
  end
  if not dist.built_with_mpi then error("lunet was built without MPI support", 2) end
  error("lunet.dist: process groups are not implemented yet (issue 5)", 2)
end

local function not_initialized()
  error("Default process group has not been initialized, please make sure to call "
        .. "dist.init.", 2)
end

for _, name in ipairs{ "rank", "world_size", "new_group", "all_reduce", "all_gather",
                       "broadcast", "barrier", "finalize" } do
  dist[name] = not_initialized
end

return dist
