-- lunet.dist without mpirun and without init: what a plain process sees.
-- The collectives run under mpirun in tests/dist/ (scripts/test).
local lunet = require("lunet")
local dist = require("lunet.dist")
local err = require("tests.spec.helpers").err

describe("lunet.dist before init", function()
  it("is available when built with MPI, and not initialized", function()
    assert.is_boolean(dist.is_available())
    assert.is_boolean(dist.is_nccl_available())
    assert.is_false(dist.is_initialized())
    assert.equal(dist, lunet.dist)
  end)

  it("refuses every call with PyTorch's message", function()
    local msg = "Default process group has not been initialized, please make sure to call dist.init."
    for _, call in ipairs {
      { dist.rank }, { dist.world_size }, { dist.local_rank }, { dist.backend },
      { dist.new_group, { 0 } }, { dist.all_reduce, lunet.ones(2) },
      { dist.all_reduce_coalesced, { lunet.ones(2) } }, { dist.all_gather, nil, lunet.ones(2) },
      { dist.broadcast, lunet.ones(2), 0 }, { dist.barrier }, { dist.check_same, 1 },
      { dist.finalize },
    } do
      assert.matches(msg, err(table.unpack(call, 1, 3)), 1, true)
    end
  end)

  it("refuses bad backends and options without starting anything", function()
    assert.matches("Invalid backend: 'gloo' (expected 'mpi' or 'nccl')",
                   err(dist.init, { backend = "gloo" }), 1, true)
    assert.matches("unknown option 'backnd'", err(dist.init, { backnd = "mpi" }), 1, true)
    assert.matches("options table expected, got string", err(dist.init, "mpi"), 1, true)
    if not dist.is_available() then
      assert.matches("lunet was built without MPI support", err(dist.init), 1, true)
    elseif not dist.is_nccl_available() then
      assert.matches("lunet was built without NCCL support",
                     err(dist.init, { backend = "nccl" }), 1, true)
    end
    assert.is_false(dist.is_initialized())
  end)

  it("starts with zero statistics", function()
    assert.same({ all_reduce = 0, all_gather = 0, broadcast = 0, barrier = 0, check = 0,
                  total = 0, bytes = 0 }, dist.stats())
  end)
end)
