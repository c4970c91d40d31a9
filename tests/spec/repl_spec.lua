-- The REPL: lunet.repl's pieces (compiling, printing, completing, error
-- messages, the loop with a scripted host), then the real thing on a
-- pseudo-terminal: `lunet` in a tmux pane driven with send-keys and read
-- back with capture-pane (readline, Tab, Ctrl-C, Ctrl-D, history).
local lunet = require("lunet")
local nn = require("lunet.nn")
local repl = require("lunet.repl")
local helpers = require("tests.spec.helpers")

describe("repl.compile", function()
  it("tries an expression first, then statements", function()
    local fn, quiet = repl.compile("1 + 1")
    assert.are.equal(2, fn())
    assert.is_false(quiet)
    fn = repl.compile("local a = 3 return a * 2")
    assert.are.equal(6, fn())
    assert.are.equal(5, repl.compile("=5")())   -- lua5.1's '='
    local r = table.pack(repl.compile("1, nil, 3")())
    assert.are.same({ 1, nil, 3, n = 3 }, r)
  end)

  it("a trailing ';' asks for no printing", function()
    local fn, quiet = repl.compile("6 * 7;  ")
    assert.are.equal(42, fn())
    assert.is_true(quiet)
    fn, quiet = repl.compile("y_repl_spec = 1;")
    assert.is_function(fn)
    assert.is_true(quiet)
  end)

  it("tells incomplete input from wrong input", function()
    local fn, msg, incomplete = repl.compile("for i = 1, 2 do")
    assert.is_nil(fn)
    assert.is_true(incomplete)
    assert.matches("<eof>", msg)
    fn, msg, incomplete = repl.compile("1 +* 2")
    assert.is_nil(fn)
    assert.is_false(incomplete)
    assert.matches("^stdin:1:", msg)
    assert.is_false(select(3, repl.compile('s = "abc\ndef"')))   -- a newline in a string
    assert.is_true(select(3, repl.compile("s = [[abc")))
  end)
end)

describe("repl.format", function()
  local f = repl.format

  it("prints scalars as Lua does and quotes strings inside tables", function()
    assert.are.equal("1", f(1))
    assert.are.equal("1.5", f(1.5))
    assert.are.equal("nil", f(nil))
    assert.are.equal("a b", f("a b"))
    assert.are.equal('{"a b", "x\\ny\\t\\"q\\"\\\\", "\\0"}', f({ "a b", 'x\ny\t"q"\\', "\0" }))
  end)

  it("prints the sequence, then the other keys sorted", function()
    assert.are.equal("{}", f({}))
    assert.are.equal("{3, 1, a = 1, b = 2}", f({ 3, 1, b = 2, a = 1 }))
    assert.are.equal('{[-1] = 1, [2.5] = 2, ["a b"] = 3, z = 4, [true] = 5}',
                     f({ [2.5] = 2, z = 4, ["a b"] = 3, [-1] = 1, [true] = 5 }))
    assert.are.equal("{1, 2, [10] = 4}", f({ 1, 2, [10] = 4 }))
  end)

  it("nests, limits depth and marks cycles", function()
    assert.are.equal("{a = {b = {1}}}", f({ a = { b = { 1 } } }))
    local deep = { { { { { { 1 } } } } } }
    assert.are.equal("{{{{{...}}}}}", f(deep))
    local t = { name = "t" }
    t.self = t
    t.list = { t }
    assert.are.equal('{list = {<cycle>}, name = "t", self = <cycle>}', f(t))
    local shared = { 1 }
    assert.are.equal("{{1}, {1}}", f({ shared, shared }))   -- not a cycle
  end)

  it("keeps the order of a table's __pairs (a state dict's)", function()
    local sd = nn.BatchNorm1d(2):state_dict()
    local text = f(sd)
    local order = {}
    for k in text:gmatch("\n  ([%w_]+) = ") do order[#order + 1] = k end
    assert.are.same({ "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                      "_metadata" }, order)
  end)

  it("breaks long tables over lines and stops after options.items entries", function()
    local long = {}
    for i = 1, 30 do long[i] = i * 1000 end
    local text = f(long)
    assert.matches("^{\n  1000,\n  2000,\n", text)
    assert.matches("\n  30000\n}$", text)
    local many = {}
    for i = 1, 150 do many[i] = i end
    assert.matches("%.%.%. %(50 more%)\n}$", f(many))
  end)

  it("prints tensors and modules as tostring does, indented inside tables", function()
    local x = lunet.ones(2, 2)
    assert.are.equal(tostring(x), f(x))
    local bn = nn.BatchNorm1d(3)
    assert.are.equal(tostring(bn), f(bn))
    local text = f({ x = x })
    assert.are.equal("{\n  x = " .. tostring(x):gsub("\n", "\n  ") .. "\n}", text)
    assert.are.equal(tostring(nn.BatchNorm2d), f(nn.BatchNorm2d))   -- __tostring of a class
  end)
end)

describe("repl.complete", function()
  local c = repl.complete
  -- The completer sees _G (busted gives each spec file an environment of
  -- its own), so the values it completes are put there.
  local G = _G
  local saved
  setup(function() saved, G.lunet = G.lunet, lunet end)
  teardown(function() G.lunet = saved end)
  local function has(list, want)
    for _, v in ipairs(list) do if v == want then return true end end
    return false
  end

  after_each(function()
    G.x_repl_spec, G.bn_repl_spec, G.net_repl_spec, G.s_repl_spec = nil, nil, nil, nil
  end)

  it("completes globals and keywords", function()
    _G.zz_repl_spec_unique = 1
    assert.are.same({ "zz_repl_spec_unique" }, c("zz_repl_spec_u"))
    _G.zz_repl_spec_unique = nil
    assert.is_true(has(c("fun"), "function"))
    assert.is_true(has(c("pri"), "print("))   -- functions get "("
  end)

  it("completes fields of tables, lunet and its lazy submodules", function()
    local r = c("lunet.zer")
    assert.are.same({ "lunet.zeros(", "lunet.zeros_like(" }, r)
    r = c("lunet.n")
    assert.is_true(has(r, "lunet.nn"))
    assert.is_true(has(r, "lunet.no_grad("))
    assert.is_true(has(c("lunet.op"), "lunet.optim"))
    assert.is_true(has(c("lunet.nn.Batch"), "lunet.nn.BatchNorm2d("))   -- a class is callable
    assert.is_true(has(c("lunet.nn.functional.b"), "lunet.nn.functional.batch_norm("))
    assert.is_true(has(c("string.for"), "string.format("))
  end)

  it("hides names starting with _ unless asked", function()
    assert.is_false(has(c("lunet."), "lunet._module"))
    assert.is_true(has(c("lunet._"), "lunet._module"))
  end)

  it("completes a tensor's methods after ':' and its fields after '.'", function()
    G.x_repl_spec = lunet.ones(2)
    assert.are.same({ "x_repl_spec:reshape(" }, c("x_repl_spec:resh"))
    assert.are.same({ "x_repl_spec.dtype" }, c("x_repl_spec.dty"))
    assert.are.same({}, c("x_repl_spec:dty"))   -- a property is not a method
    assert.is_true(has(c("x_repl_spec."), "x_repl_spec.size("))
  end)

  it("completes a module's slots, children, fields and class methods", function()
    G.bn_repl_spec = nn.BatchNorm1d(3)
    assert.are.same({ "bn_repl_spec.running_mean", "bn_repl_spec.running_var" },
                    c("bn_repl_spec.running_"))
    assert.is_true(has(c("bn_repl_spec:reset"), "bn_repl_spec:reset_parameters("))
    assert.is_true(has(c("bn_repl_spec:"), "bn_repl_spec:state_dict("))
    assert.is_true(has(c("bn_repl_spec.tr"), "bn_repl_spec.training"))
    local host = { module_attrs = function() return { "eps", "momentum" } end }
    assert.are.same({ "bn_repl_spec.eps" }, c("bn_repl_spec.ep", host))

    local Net = nn.Module:extend("ReplSpecNet")
    function Net:__init() self.block = nn.Sequential(nn.BatchNorm1d(2)); self.note = "hi" end
    function Net:forward(v) return self.block(v) end
    function Net:my_method() end
    G.net_repl_spec = Net()
    assert.are.same({ "net_repl_spec.block" }, c("net_repl_spec.blo"))
    assert.are.same({ "net_repl_spec.note" }, c("net_repl_spec.no"))
    assert.are.same({ "net_repl_spec:my_method(" }, c("net_repl_spec:my_"))
    assert.is_true(has(c("net_repl_spec:par"), "net_repl_spec:parameters("))
  end)

  it("completes string methods and gives up quietly on anything else", function()
    G.s_repl_spec = "abc"
    assert.are.same({ "s_repl_spec:upper(" }, c("s_repl_spec:upp"))
    assert.are.same({}, c("no_such_global.x"))
    assert.are.same({}, c("a:b.c"))
    assert.are.same({}, c("lunet..z"))
    assert.are.same({}, c("f(x).y"))
    local angry = setmetatable({}, { __index = function() error("no") end })
    G.angry_repl_spec = angry
    assert.are.same({}, c("angry_repl_spec.a.b"))
    G.angry_repl_spec = nil
  end)
end)

describe("repl.error_message", function()
  local function run(src)
    local chunk = assert(load(src, "=stdin", "t", setmetatable({ lunet = lunet }, { __index = _G })))
    local ok, msg = xpcall(chunk, function(e)
      local m = repl.error_message(e)
      return m
    end)
    assert.is_false(ok)
    return msg
  end

  it("is only the message when the chunk or a C function raised it", function()
    assert.are.equal("stdin:1: boom", run("error('boom')"))
    assert.are.equal("stdin:1: attempt to call a nil value (global 'nope')", run("nope()"))
    assert.matches("^stdin:1: bad argument #1 to 'zeros'", run("lunet.zeros('a')"))
    assert.are.equal("(error object is a table value)", run("error({})"))
    assert.are.equal("custom", run("error(setmetatable({}, {__tostring = function() return 'custom' end}))"))
  end)

  it("adds the frames down to the chunk when Lua functions were involved", function()
    local msg = run("local function inner() error('deep') end\nlocal function outer() inner() end\nouter()")
    assert.are.equal(table.concat({
      "stdin:1: deep",
      "stack traceback:",
      "\t[C]: in function 'error'",
      "\tstdin:1: in upvalue 'inner'",
      "\tstdin:2: in local 'outer'",
      "\tstdin:3: in main chunk",
    }, "\n"), msg)
  end)

  it("keeps at most ten frames", function()
    local msg = run("local function r(n) if n == 0 then error('bottom') end r(n - 1) end r(30)")
    local lines = select(2, msg:gsub("\n", "\n"))
    assert.are.equal(12, lines)   -- message, "stack traceback:", 10 frames, "..."
    assert.matches("\n\t%.%.%.$", msg)
  end)
end)

describe("repl.run with a scripted host", function()
  -- Run the REPL over `inputs` (strings; false is a Ctrl-C), returning
  -- what it wrote to stdout and stderr and the history it kept.
  local function session(inputs)
    local out, err, history, depth, i = {}, {}, {}, 0, 0
    local host = {
      read = function(prompt)
        out[#out + 1] = prompt
        i = i + 1
        return inputs[i]
      end,
      add_history = function(s) history[#history + 1] = s end,
      interrupts = function(on) depth = depth + (on and 1 or -1) end,
    }
    local function sink(buf)
      return { write = function(self, ...) for _, s in ipairs{ ... } do buf[#buf + 1] = s end return self end,
               flush = function() end }
    end
    local stdout, stderr = io.stdout, io.stderr
    io.stdout, io.stderr = sink(out), sink(err)
    local ok, e = pcall(repl.run, host)
    io.stdout, io.stderr = stdout, stderr
    assert(ok, e)
    assert.are.equal(0, depth)
    return table.concat(out), table.concat(err), history
  end

  it("prints results, runs multi-line chunks and survives errors", function()
    local out, err, history = session({
      "1 + 1", "for i = 1, 2 do", "  n_repl_spec = i", "end", "n_repl_spec",
      "error('oops')", "n_repl_spec * 100;", "abc =", false, "'s', {k = 1}", "", "_", "x = * 2", "3",
    })
    _G.n_repl_spec, _G._ = nil, nil
    assert.are.equal(table.concat({
      "lunet> 2\n",
      "lunet>    ...    ... lunet> 2\n",
      "lunet> lunet> ",                       -- the error goes to stderr; 200 is not printed
      "lunet>    ... ",                       -- 'abc =' waits for more, Ctrl-C drops it
      "lunet> s\t{k = 1}\n",
      "lunet> lunet> s\n",                    -- _ is the last first result
      "lunet> lunet> 3\n",
      "lunet> \n",
    }), out)
    assert.are.equal("stdin:1: oops\nstdin:1: unexpected symbol near '*'\n", err)
    assert.are.same({ "1 + 1", "for i = 1, 2 do\n  n_repl_spec = i\nend", "n_repl_spec",
                      "error('oops')", "n_repl_spec * 100;", "'s', {k = 1}", "_", "x = * 2", "3" },
                    history)
  end)

  it("reports a chunk cut short by the end of input", function()
    local out, err = session({ "if true then" })
    assert.are.equal("lunet>    ... \n", out)
    assert.matches("'end' expected near <eof>", err)
  end)

  it("uses _PROMPT and _PROMPT2 when they are set", function()
    _G._PROMPT, _G._PROMPT2 = "P1 ", "P2 "
    local out = session({ "do", "end" })
    _G._PROMPT, _G._PROMPT2 = nil, nil
    assert.are.equal("P1 P2 P1 \n", out)
  end)
end)

-- ---- on a terminal ----

local shell_quote, lunet_exe = helpers.shell_quote, helpers.lunet_exe

local function command_output(cmd)
  local p = io.popen(cmd)
  local s = p:read("a")
  p:close()
  return s
end

describe("the REPL on a terminal", function()
  local socket, home, exe
  local function tmux(args)
    return os.execute("tmux -L " .. socket .. " " .. args .. " >/dev/null 2>&1")
  end
  local function screen()
    return command_output("tmux -L " .. socket .. " capture-pane -p -J -S -300 -t repl")
  end
  local function wait_for(text, timeout)
    local deadline = lunet.clock() + (timeout or 10)
    local s
    repeat
      s = screen()
      if s:find(text, 1, true) then return s end
      os.execute("sleep 0.05")
    until lunet.clock() > deadline
    error(("timed out waiting for %q; the screen:\n%s"):format(text, s), 2)
  end
  -- Type text literally (tmux reads a trailing ';' as its own separator).
  local function type_text(text)
    assert(tmux("send-keys -t repl -l " .. shell_quote(text:gsub(";$", "\\;"))))
  end
  local function keys(...)
    assert(tmux("send-keys -t repl " .. table.concat({ ... }, " ")))
  end
  local function line(text) type_text(text); keys("Enter") end
  local function start()
    local cmd = ("env -u LUNET_HISTORY HOME=%s INPUTRC=/dev/null TERM=screen %s; echo \"[exit $?]\"; sleep 60")
      :format(shell_quote(home), shell_quote(exe))
    assert(tmux("new-session -d -s repl -x 200 -y 60 " .. shell_quote(cmd)))
    wait_for("lunet> ")
  end
  local function stop() tmux("kill-session -t repl") end

  setup(function()
    assert(os.execute("command -v tmux >/dev/null"),
           "these specs need tmux (scripts/setup installs it)")
    socket = ("lunet-spec-%d-%d"):format(os.time(), math.random(1e9))
    home = command_output("mktemp -d"):gsub("%s+$", "")
    exe = lunet_exe()
    -- A session that outlives every test's: killing a test's session then
    -- never shuts the server down while the next test's new-session is
    -- connecting to it (a race that failed new-session once in CI).
    assert(tmux("new-session -d -s keep 'sleep 3600'"))
  end)

  teardown(function()
    if socket then tmux("kill-server") end
    if home then os.execute("rm -rf " .. shell_quote(home)) end
  end)

  before_each(start)
  after_each(stop)

  it("prints results, suppresses them after ';' and continues multi-line input", function()
    line("6 * 7")
    wait_for("\n42\n")
    line("1000 * 3;")
    line("for i = 1, 2 do")
    wait_for("   ... ")
    line("print('loop' .. i)")
    line("end")
    wait_for("loop2")
    assert.is_nil(screen():find("3000", 1, true))
  end)

  it("pretty prints tensors, modules and tables", function()
    line("x = lunet.ones(2, 3)")
    line("x")
    wait_for("tensor([[1., 1., 1.],\n        [1., 1., 1.]])")
    line("lunet.nn.BatchNorm1d(4)")
    wait_for("BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)")
    line("t = {b = 2, a = 'x', 10}; t.me = t")
    line("t")
    wait_for('{10, a = "x", b = 2, me = <cycle>}')
  end)

  it("reports errors and goes on", function()
    line("error('boom')")
    wait_for("stdin:1: boom")
    line("x = * 2")
    wait_for("stdin:1: unexpected symbol near '*'")
    line("500 + 5")
    wait_for("\n505\n")
  end)

  it("completes globals, fields and methods with Tab", function()
    line("x = lunet.ones(2)")
    line("bn = lunet.nn.BatchNorm1d(3)")
    type_text("x:resh")
    keys("Tab")
    wait_for("lunet> x:reshape(")
    type_text("2)")
    keys("Enter")
    wait_for("tensor([1., 1.])")
    type_text("bn.running_m")
    keys("Tab")
    wait_for("lunet> bn.running_mean")
    keys("C-u")
    type_text("bn.ep")   -- a C attribute of the module
    keys("Tab")
    wait_for("lunet> bn.eps")
    keys("Enter")
    wait_for("\n1e-05\n")
    type_text("lunet.zeros_l")
    keys("Tab")
    wait_for("lunet> lunet.zeros_like(")
    keys("C-u")
    type_text("lunet.nn.BatchNorm")
    keys("Tab", "Tab")   -- several candidates: the second Tab lists them
    wait_for("lunet.nn.BatchNorm3d(")
  end)

  it("stops a running statement with Ctrl-C and clears the line at the prompt", function()
    line("print('spin' .. 'ning') while true do end")
    wait_for("\nspinning\n")
    keys("C-c")
    wait_for("interrupted!")
    line("2 * 21")
    wait_for("\n42\n")
    type_text("this is not lua")
    keys("C-c")
    line("7 * 11")
    wait_for("\n77\n")
    assert.is_nil(screen():find("this is not lua7", 1, true))
  end)

  it("ends on Ctrl-D and keeps the history in ~/.lunet_history", function()
    line("history_check = 12345")
    line("for i = 1, 1 do")
    line("end")
    keys("C-d")
    wait_for("[exit 0]")
    local f = assert(io.open(home .. "/.lunet_history"))
    local text = f:read("a")
    f:close()
    assert.matches("history_check = 12345\n", text)
    assert.matches("for i = 1, 1 do\nend\n", text)
    stop()
    start()
    keys("Up")   -- the multi-line chunk comes back as one entry
    wait_for("lunet> for i = 1, 1 do\nend")
    keys("Up")
    wait_for("lunet> history_check = 12345")
    keys("Enter")
    line("history_check")
    wait_for("\n12345\n")
  end)
end)
