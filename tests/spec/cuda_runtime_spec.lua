-- lunet.cuda and the memory statistics (lua/l_lunet.c, lua/l_io.c): what
-- they do without a GPU (a CPU-only build, or a CUDA build on a machine
-- without a device), which runs everywhere, and the `reserved` statistic
-- of the CPU's block cache and, with a device, of the CUDA allocator.
-- GPU work itself is checked by cuda_ops_spec.lua.
local lunet = require("lunet")
local helpers = require("tests.spec.helpers")
local err = helpers.err
local gpu_it = helpers.cuda_it(it, pending, true)

local MiB = 1 << 20

-- The two messages of a missing CUDA, by build.
local function is_no_cuda_message(msg)
  return msg:find("lunet was built without CUDA support", 1, true) ~= nil
      or msg:find("no CUDA device is available (lunet.cuda.is_available() is false)", 1, true) ~= nil
end

describe("lunet.cuda without a device", function()
  if lunet.cuda.is_available() then
    it("has a device here", function()
      assert.is_true(lunet.cuda.device_count() >= 1)
    end)
    return
  end

  it("says so without raising", function()
    assert.is_false(lunet.cuda.is_available())
    assert.equal(0, lunet.cuda.device_count())
    assert.is_nil(lunet.memory_stats()["cuda:0"])
  end)

  it("raises a clear message from synchronize and get_device_name", function()
    for _, call in ipairs({
      function() lunet.cuda.synchronize() end,
      function() lunet.cuda.synchronize(0) end,
      function() lunet.cuda.synchronize("cuda:1") end,
      function() return lunet.cuda.get_device_name() end,
      function() return lunet.cuda.get_device_name("cuda") end,
    }) do
      local msg = err(call)
      assert.is_true(is_no_cuda_message(msg), msg)
    end
  end)

  it("lets empty_cache and reset_peak_memory_stats run", function()
    lunet.empty_cache()
    lunet.reset_peak_memory_stats()
  end)
end)

describe("lunet.cuda device arguments", function()
  it("are checked before the device", function()
    assert.matches("bad argument #1 to '.-' %(expected a CUDA device %(an index or \"cuda:N\"%)%)",
                   err(lunet.cuda.synchronize, "cpu"))
    assert.matches("bad argument #1 to '.-' %(expected a CUDA device",
                   err(lunet.cuda.get_device_name, "gpu:0"))
    assert.matches("bad argument #1 to '.-' %(number expected, got table%)",
                   err(lunet.cuda.synchronize, {}))
    assert.matches("device index out of range", err(lunet.cuda.get_device_name, -1))
  end)

  gpu_it("name devices that do not exist", function()
    local n = lunet.cuda.device_count()
    assert.matches("invalid device ordinal cuda:" .. n, err(lunet.cuda.synchronize, n))
    assert.matches("invalid device ordinal cuda:" .. n,
                   err(lunet.cuda.get_device_name, "cuda:" .. n))
  end)
end)

describe("memory_stats().reserved", function()
  it("counts the CPU's cached blocks until empty_cache", function()
    collectgarbage()
    collectgarbage()
    lunet.empty_cache()
    local base = lunet.memory_stats().cpu
    assert.is_true(base.reserved >= base.in_use)
    local x = lunet.empty(MiB)                     -- 4 MiB of float32
    local during = lunet.memory_stats().cpu
    assert.equal(base.reserved + 4 * MiB, during.reserved)
    x = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local after = lunet.memory_stats().cpu
    assert.equal(base.in_use, after.in_use)
    assert.equal(during.reserved, after.reserved)  -- kept for reuse
    lunet.empty_cache()
    assert.equal(base.reserved, lunet.memory_stats().cpu.reserved)
  end)

  gpu_it("counts CUDA segments, cached ones too, until empty_cache", function()
    collectgarbage()
    collectgarbage()
    lunet.empty_cache()
    local base = lunet.memory_stats()["cuda:0"]
    -- 64 MiB: a segment of its own (larger than any cached block left in
    -- segments that other specs' tensors still use)
    local x = lunet.empty(16 * MiB, { device = "cuda" })
    local during = lunet.memory_stats()["cuda:0"]
    assert.equal(base.in_use + 64 * MiB, during.in_use)
    assert.equal(base.reserved + 64 * MiB, during.reserved)
    x = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local after = lunet.memory_stats()["cuda:0"]
    assert.equal(base.in_use, after.in_use)
    assert.equal(during.reserved, after.reserved)
    local y = lunet.empty(16 * MiB, { device = "cuda" })   -- the same block again
    assert.equal(during.reserved, lunet.memory_stats()["cuda:0"].reserved)
    y = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    lunet.empty_cache()
    assert.equal(base.reserved, lunet.memory_stats()["cuda:0"].reserved)
  end)
end)
