-- harness.lua -- the small test runner of the distributed tests, which run
-- under mpirun (scripts/test runs each file with 1 to 4 processes):
--   local H = dofile(arg[0]:match("^(.-)[^/]*$") .. "harness.lua")
--   H.test("name", function() ... end)   -- every rank runs every test
--   H.finish("label")                    -- prints "label np=N: P passed, F failed"
-- A test passes when it passed on every rank: finish gathers the results
-- with collectives (after checking that every rank ran as many tests), so
-- it needs the default group; tests that must run after dist.finalize()
-- go in H.finish's `after` function, counted by each rank for itself (a
-- failure on another rank shows in mpirun's exit status).
local lunet = require("lunet")
local dist = require("lunet.dist")

local H = {}
local results = {}
local rank = tonumber(os.getenv("OMPI_COMM_WORLD_RANK") or "0")
local np = tonumber(os.getenv("OMPI_COMM_WORLD_SIZE") or "1")
H.np = np

local function run(name, fn)
  local ok, msg = xpcall(fn, debug.traceback)
  if not ok then
    io.stderr:write(("FAIL rank %d: %s: %s\n"):format(rank, name, tostring(msg)))
  end
  return ok
end

function H.test(name, fn) results[#results + 1] = run(name, fn) end

-- ---- assertions (each raises with a message on failure) ----

local function show(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for i = 1, #v do parts[i] = show(v[i]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
H.show = show

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if not same(a[i], b[i]) then return false end end
  return true
end

-- a == b, deeply for tables of numbers (tensors compare by :tolist()).
function H.eq(a, b, what)
  if lunet.is_tensor(a) then a = a:tolist() end
  if lunet.is_tensor(b) then b = b:tolist() end
  if not same(a, b) then
    error(("%s: expected %s, got %s"):format(what or "value", show(b), show(a)), 2)
  end
end

function H.truthy(v, what)
  if not v then error((what or "condition") .. " is false", 2) end
end

-- fn(...) raises an error whose message contains `text` (plain).
function H.err(text, fn, ...)
  local ok, msg = pcall(fn, ...)
  if ok then error(("expected an error containing %q, got none"):format(text), 2) end
  if not tostring(msg):find(text, 1, true) then
    error(("expected an error containing %q, got %q"):format(text, tostring(msg)), 2)
  end
end

-- ---- the end ----

-- Gathers the results (a test passes if it passed on every rank), runs
-- `after` (tests after dist.finalize), prints the summary on rank 0 and
-- exits non-zero on a failure seen by this rank.
function H.finish(label, after)
  local flags = {}
  for i, ok in ipairs(results) do flags[i] = ok and 1 or 0 end
  dist.check_same(#results, "the number of tests run")
  local all = lunet.tensor(#flags > 0 and flags or { 1 }, { dtype = "int64" })
  dist.all_reduce(all, { op = "min" })
  local passed, failed = 0, 0
  for i, ok in ipairs(all:tolist()) do
    if i <= #results then
      if ok == 1 then passed = passed + 1 else failed = failed + 1 end
    end
  end
  dist.finalize()
  local mine = 0
  for _, t in ipairs(after or {}) do
    if run(t[1], t[2]) then passed = passed + 1 else failed, mine = failed + 1, mine + 1 end
  end
  if rank == 0 then
    print(("%s np=%d: %d passed, %d failed"):format(label, np, passed, failed))
  end
  io.stdout:flush()
  os.exit((failed == 0 or (rank ~= 0 and mine == 0)) and 0 or 1)
end

return H
