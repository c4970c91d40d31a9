-- Checkpoints and memory statistics from Lua (lua/l_io.c): lunet.save /
-- lunet.load round trips with metadata and state-dict versions, corrupt and
-- truncated files, atomic saves and what they may replace (links are
-- followed; FIFOs, directories and read-only files are refused), and
-- lunet.memory_stats following the collector.
local lunet = require("lunet")
local helpers = require("tests.spec.helpers")
local err, q = helpers.err, helpers.shell_quote

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".safetensors"
end

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_all(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

describe("lunet.save and lunet.load", function()
  local path
  before_each(function() path = tmpname() end)
  after_each(function() os.remove(path) end)

  it("round-trip tensors of every dtype and shape", function()
    lunet.manual_seed(1)
    local t = {
      f32 = lunet.randn(3, 4),
      f64 = lunet.randn(2, 2, {dtype = "float64"}),
      f16 = lunet.randn(5):half(),
      bf16 = lunet.randn(5):bfloat16(),
      i64 = lunet.tensor({{(1 << 62) + 1, -7}}),
      b = lunet.tensor({true, false, true}),
      scalar = lunet.tensor(2.5),
      empty = lunet.zeros(0, 3),
    }
    assert.is_true(lunet.save(path, t))
    local l, meta = lunet.load(path)
    assert.same({}, meta)
    local n = 0
    for k, v in pairs(t) do
      n = n + 1
      assert.equal(v.dtype, l[k].dtype, k)
      assert.same(v:size(), l[k]:size(), k)
      assert.same(v:tolist(), l[k]:tolist(), k)
    end
    for _ in pairs(l) do n = n - 1 end
    assert.equal(0, n)
  end)

  it("saves views, non-contiguous and channels-last tensors by value", function()
    local base = lunet.arange(24, {dtype = "float32"}):view(2, 3, 2, 2)
    local t = {
      cl = base:contiguous("channels_last"),
      tr = base:view(6, 4):t(),
      nar = base:narrow(2, 2, 2),
      exp = lunet.tensor({1.0, 2.0}):view(2, 1):expand(2, 3),
    }
    assert.is_true(lunet.save(path, t))
    local l = lunet.load(path)
    for k, v in pairs(t) do
      assert.same(v:tolist(), l[k]:tolist(), k)
      assert.is_true(l[k]:is_contiguous(), k)
    end
  end)

  it("loads copies that share nothing with the saved tensors", function()
    local x = lunet.ones(3)
    lunet.save(path, {x = x})
    local l = lunet.load(path)
    l.x:fill_(5)
    assert.same({1, 1, 1}, x:tolist())
    assert.is_false(l.x.requires_grad)
  end)

  it("keeps string metadata", function()
    assert.is_true(lunet.save(path, {w = lunet.ones(1)},
      {metadata = {format = "pt", epoch = 3, note = "a \"quoted\" line\n"}}))
    local _, meta = lunet.load(path)
    assert.same({format = "pt", epoch = "3", note = "a \"quoted\" line\n"}, meta)
  end)

  it("round-trips a state dict's _metadata versions", function()
    local sd = {
      ["1.weight"] = lunet.ones(4),
      ["1.running_mean"] = lunet.zeros(4),
      ["1.num_batches_tracked"] = lunet.tensor(5),
      _metadata = {[""] = {version = 1}, ["1"] = {version = 2},
                   ['odd "prefix"\\'] = {version = 3}},
    }
    assert.is_true(lunet.save(path, sd, {metadata = {user = "x"}}))
    local l, meta = lunet.load(path)
    assert.same(sd._metadata, l._metadata)
    assert.same({user = "x"}, meta)   -- the versions entry is not user metadata
    assert.equal(5, l["1.num_batches_tracked"]:item())
    -- the file itself stays readable by other safetensors readers: JSON
    assert.matches('"lunet.state_dict_versions":"{', read_all(path))
  end)

  it("writes the same bytes for the same contents", function()
    local t = {b = lunet.ones(2), a = lunet.zeros(3), c = lunet.arange(4),
               _metadata = {["x"] = {version = 1}, [""] = {version = 2}}}
    lunet.save(path, t)
    local first = read_all(path)
    lunet.save(path, t)
    assert.equal(first, read_all(path))
  end)

  it("raises on bad arguments", function()
    assert.matches("tensor expected at key 'w', got number",
      err(lunet.save, path, {w = 1}))
    assert.matches("keys must be strings", err(lunet.save, path, {lunet.ones(1)}))
    assert.matches("metadata must map strings to strings",
      err(lunet.save, path, {}, {metadata = {k = {}}}))
    assert.matches("_metadata must map module prefixes",
      err(lunet.save, path, {_metadata = {[""] = 1}}))
    assert.matches("reserved", err(lunet.save, path, {},
      {metadata = {["lunet.state_dict_versions"] = "{}"}}))
    assert.matches("unknown option 'meta'", err(lunet.save, path, {}, {meta = {}}))
    assert.matches("bad argument #1 to '.-save' %(string expected",
      err(lunet.save, nil, {}))
  end)

  it("refuses NUL bytes in names, metadata and paths (C would cut them there)", function()
    assert.matches("tensor names cannot contain a NUL byte",
      err(lunet.save, path, {["abc\0def"] = lunet.ones(2)}))
    assert.matches("tensor names cannot contain a NUL byte",
      err(lunet.save, path, {["w\0a"] = lunet.ones(2), ["w\0b"] = lunet.zeros(3)}))
    assert.matches("metadata keys cannot contain a NUL byte",
      err(lunet.save, path, {}, {metadata = {["k\0x"] = "v"}}))
    assert.matches("metadata values cannot contain a NUL byte",
      err(lunet.save, path, {}, {metadata = {k = "v\0y"}}))
    assert.matches("paths cannot contain a NUL byte",
      err(lunet.save, path .. "\0.bak", {w = lunet.ones(1)}))
    assert.is_nil(io.open(path))          -- nothing was written
    assert.is_true(lunet.save(path, {w = lunet.ones(1)}))
    assert.matches("paths cannot contain a NUL byte", err(lunet.load, path .. "\0.bak"))
  end)

  it("returns nil and a message when the file cannot be written or read", function()
    local ok, msg = lunet.save("/nonexistent-dir/x.safetensors", {w = lunet.ones(1)})
    assert.is_nil(ok)
    assert.matches("/nonexistent%-dir/x.safetensors", msg)
    local t, lmsg = lunet.load("/nonexistent-dir/x.safetensors")
    assert.is_nil(t)
    assert.matches("/nonexistent%-dir/x.safetensors", lmsg)
  end)

  it("returns nil and a message naming the problem for truncated files", function()
    lunet.save(path, {w = lunet.ones(100)})
    local full = read_all(path)
    for _, n in ipairs({0, 4, 12, #full - 1}) do
      write_all(path, full:sub(1, n))
      local t, msg = lunet.load(path)
      assert.is_nil(t, "length " .. n)
      assert.is_string(msg)
      assert.matches(path:gsub("%p", "%%%0"), msg)
    end
  end)

  it("returns nil and a message for corrupt headers", function()
    lunet.save(path, {w = lunet.ones(2)})
    local full = read_all(path)
    local bad = full:gsub('"F32"', '"F99"')
    write_all(path, bad)
    local t, msg = lunet.load(path)
    assert.is_nil(t)
    assert.matches("F99", msg)
    write_all(path, string.rep("\255", 64))
    t, msg = lunet.load(path)
    assert.is_nil(t)
    assert.is_string(msg)
    -- a garbled versions entry is reported too
    -- (written under a look-alike key, then renamed in place)
    lunet.save(path, {w = lunet.ones(1)}, {metadata = {["lunet.state_dict_versionz"] = "x"}})
    write_all(path, (read_all(path):gsub("versionz", "versions")))
    t, msg = lunet.load(path)
    assert.is_nil(t)
    assert.matches("lunet.state_dict_versions", msg)
  end)

  it("keeps the old file when a save fails", function()
    lunet.save(path, {old = lunet.ones(2)})
    local before = read_all(path)
    -- block the temporary file the save writes first (path.tmp.<pid>)
    local pid = assert(io.open("/proc/self/stat")):read("n")
    local blocker = ("%s.tmp.%d"):format(path, pid)
    assert(os.execute(("mkdir '%s'"):format(blocker)))
    local ok, msg = lunet.save(path, {new = lunet.zeros(3)})
    os.execute(("rmdir '%s'"):format(blocker))
    assert.is_nil(ok)
    assert.is_string(msg)
    assert.equal(before, read_all(path))
    assert.same({old = {1, 1}}, (function()
      local l = lunet.load(path)
      return {old = l.old:tolist()}
    end)())
  end)

  it("leave the interpreter usable after errors", function()
    for _ = 1, 3 do
      assert.is_nil((lunet.load("/nonexistent")))
      pcall(lunet.save, path, {w = 1})
    end
    assert.is_true(lunet.save(path, {w = lunet.ones(1)}))
  end)
end)

-- Never pointed at real /dev nodes: the FIFO and the files live in a
-- fresh directory (a save that replaced /dev/null would break the machine).
describe("lunet.save's target", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. q(dir)))
  end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  local function sh(cmd) return os.execute(cmd) == true end
  local function mode(p)
    local f = assert(io.popen("stat -c %a " .. q(p)))
    local m = f:read("l")
    f:close()
    return m
  end
  local function saved(p)
    local t = lunet.load(p)
    return t and t.w and t.w:tolist()
  end

  it("writes through symbolic links, which stay links", function()
    write_all(dir .. "/real.st", "old")
    assert(sh("ln -s real.st " .. q(dir .. "/rel.st")))        -- relative
    assert(sh("ln -s " .. q(dir .. "/rel.st") .. " " .. q(dir .. "/abs.st")))  -- a chain
    assert.is_true(lunet.save(dir .. "/abs.st", {w = lunet.ones(2)}))
    assert.is_true(sh("test -L " .. q(dir .. "/abs.st")))
    assert.is_true(sh("test -L " .. q(dir .. "/rel.st")))
    assert.same({1, 1}, saved(dir .. "/real.st"))
    -- a dangling link: the save creates its target
    assert(sh("ln -s new.st " .. q(dir .. "/dangling.st")))
    assert.is_true(lunet.save(dir .. "/dangling.st", {w = lunet.ones(3)}))
    assert.is_true(sh("test -L " .. q(dir .. "/dangling.st")))
    assert.same({1, 1, 1}, saved(dir .. "/new.st"))
    -- a loop is an error, not a hang
    assert(sh("ln -s b " .. q(dir .. "/a") .. " && ln -s a " .. q(dir .. "/b")))
    local ok, msg = lunet.save(dir .. "/a", {w = lunet.ones(1)})
    assert.is_nil(ok)
    assert.matches("symbolic links", msg)
  end)

  it("refuses to replace a FIFO or a directory", function()
    local fifo = dir .. "/fifo"
    assert(sh("mkfifo " .. q(fifo)))
    local ok, msg = lunet.save(fifo, {w = lunet.ones(1)})
    assert.is_nil(ok)
    assert.equal(("cannot write '%s': not a regular file"):format(fifo), msg)
    assert.is_true(sh("test -p " .. q(fifo)))
    assert(sh("ln -s fifo " .. q(dir .. "/to-fifo")))       -- also through a link
    ok, msg = lunet.save(dir .. "/to-fifo", {w = lunet.ones(1)})
    assert.is_nil(ok)
    assert.matches("not a regular file", msg)
    assert.is_true(sh("test -p " .. q(fifo)))
    assert(sh("mkdir " .. q(dir .. "/d")))
    ok, msg = lunet.save(dir .. "/d", {w = lunet.ones(1)})
    assert.is_nil(ok)
    assert.matches("Is a directory", msg)
    assert.is_true(sh("test -d " .. q(dir .. "/d")))
  end)

  it("keeps the replaced file's permission bits (and owner, for root)", function()
    local p = dir .. "/m.st"
    write_all(p, "old")
    assert(sh("chmod 640 " .. q(p)))
    local root = io.popen("id -u"):read("n") == 0
    if root then assert(sh("chown 65534:65534 " .. q(p))) end
    assert.is_true(lunet.save(p, {w = lunet.ones(2)}))
    assert.equal("640", mode(p))
    assert.same({1, 1}, saved(p))
    if root then
      local f = assert(io.popen("stat -c %u:%g " .. q(p)))
      assert.equal("65534:65534", f:read("l"))
      f:close()
    end
  end)

  it("refuses a file it may not write, as open would (Permission denied)", function()
    local p = dir .. "/ro.st"
    write_all(p, "keep")
    assert(sh("chmod 444 " .. q(p)))
    local f = io.open(p, "r+")       -- what this process may do to the file
    if f then                        -- root: it may, and the file stays read-only
      f:close()
      assert.is_true(lunet.save(p, {w = lunet.ones(2)}))
      assert.equal("444", mode(p))
      assert.same({1, 1}, saved(p))
      -- and as an unprivileged user, where setpriv and the build allow it
      write_all(p, "keep")
      assert(sh("chmod 755 " .. q(dir)))
      local out = io.popen(("setpriv --reuid=65534 --regid=65534 --clear-groups %s -e %s 2>/dev/null")
        :format(q(helpers.lunet_exe()), q(("print(require('lunet').save(%q, {w = require('lunet').ones(1)}))"):format(p))))
      local line = out:read("l")
      out:close()
      if line then assert.equal(("nil\tcannot write '%s': Permission denied"):format(p), line) end
    else
      local ok, msg = lunet.save(p, {w = lunet.ones(2)})
      assert.is_nil(ok)
      assert.equal(("cannot write '%s': Permission denied"):format(p), msg)
    end
    assert.equal("keep", read_all(p))
    assert.equal("444", mode(p))
  end)
end)

describe("lunet.memory_stats", function()
  local MB = 1 << 20

  it("reports cpu bytes in use, peak and allocations", function()
    local s = lunet.memory_stats()
    assert.is_number(s.cpu.in_use)
    assert.is_true(s.cpu.peak >= s.cpu.in_use)
    assert.is_number(s.cpu.allocations)
    if not lunet.cuda.is_available() then assert.is_nil(s["cuda:0"]) end
  end)

  it("rises with tensors and falls when the collector frees them", function()
    collectgarbage()
    collectgarbage()
    local base = lunet.memory_stats().cpu
    local x = lunet.zeros(2 * MB)            -- 8 MiB of float32
    local during = lunet.memory_stats().cpu
    assert.is_true(during.in_use >= base.in_use + 8 * MB)
    assert.is_true(during.peak >= during.in_use)
    assert.is_true(during.allocations > base.allocations)
    local v = x:view(MB, 2)                  -- a view allocates nothing
    assert.equal(during.in_use, lunet.memory_stats().cpu.in_use)
    x, v = nil, nil
    collectgarbage()
    collectgarbage()
    assert.is_true(lunet.memory_stats().cpu.in_use < base.in_use + MB)
    lunet.reset_peak_memory_stats()
    local after = lunet.memory_stats().cpu
    assert.equal(after.in_use, after.peak)
  end)

  it("lets the collector keep up with large temporaries", function()
    collectgarbage()
    lunet.reset_peak_memory_stats()
    local base = lunet.memory_stats().cpu.in_use
    for _ = 1, 100 do
      local t = lunet.empty(MB)              -- 4 MiB, dropped at once
      t = nil
    end
    -- 400 MiB went through; the hint keeps the peak far below that
    local peak = lunet.memory_stats().cpu.peak - base
    assert.is_true(peak < 200 * MB, ("peak %d MiB"):format(peak // MB))
  end)

  it("collects garbage and retries when an allocation fails", function()
    -- In a child process limited to 1.5 GB of address space, with the
    -- collector stopped, 40 dropped 100 MB tensors only fit if a failed
    -- allocation runs a full collection and retries.
    local interp, i = arg[0], 0
    while arg[i - 1] do i = i - 1; interp = arg[i] end
    local script = [[
      local lunet = require("lunet")
      collectgarbage("stop")
      for _ = 1, 40 do local t = lunet.empty(25 * 1024 * 1024) end
      print("done")
    ]]
    local cmd = ("ulimit -v 1500000; OMP_NUM_THREADS=1 MALLOC_ARENA_MAX=2 " ..
                 "LUA_PATH=%q LUA_CPATH=%q %q -e %q 2>&1")
      :format(package.path, package.cpath, interp, script)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    p:close()
    if out:match("AddressSanitizer") then   -- ASan cannot start under ulimit -v
      pending("not under AddressSanitizer")
      return
    end
    assert.matches("done", out)
  end)

  it("turns an impossible allocation into an error", function()
    assert.matches("memory", err(lunet.empty, 1 << 50))
    assert.equal(3, lunet.ones(3):sum():item())
  end)
end)
