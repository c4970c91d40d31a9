-- abort.lua -- what happens when one rank dies on an error while the
-- others wait in a collective: lunet exits non-zero without finalizing
-- (finalizing would wait for the others), and mpirun then ends the whole
-- job. scripts/test runs it with 2 processes and expects a non-zero exit
-- well before its timeout, with rank 1's message and without "not reached".
local dist = require("lunet.dist")
dist.init()
if dist.rank() == 1 then error("rank 1 gives up") end
dist.barrier()
print("not reached")
