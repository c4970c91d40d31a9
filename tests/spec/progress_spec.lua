-- lunet.progress.Bar (a redrawn bar on a terminal, plain lines elsewhere)
-- and lunet.isatty, which decides between them. A fake clock makes the
-- rates, ETAs and times exact.
local lunet = require("lunet")
local progress = require("lunet.progress")
local helpers = require("tests.spec.helpers")

-- A bar writing into a temporary file with a clock the test moves;
-- returns the bar, a function setting the time, and one reading the file.
local function fake(total, opts)
  local f, now = io.tmpfile(), 0
  opts = opts or {}
  opts.file, opts.clock = f, function() return now end
  local bar = progress.Bar(total, opts)
  local function written()
    f:seek("set")
    return f:read("a")
  end
  return bar, function(t) now = t end, written
end

describe("lunet.isatty", function()
  it("tells files and pipes from terminals", function()
    local f = io.tmpfile()
    assert.is_false(lunet.isatty(f))
    f:close()
    assert.truthy(helpers.err(lunet.isatty, f):find("attempt to use a closed file", 1, true))
    assert.truthy(helpers.err(lunet.isatty, 1):find("FILE* expected, got number", 1, true))
    local p = io.popen("true", "r")
    assert.is_false(lunet.isatty(p))
    p:close()
  end)
end)

describe("progress.Bar", function()
  it("prints one summary line off a terminal", function()
    local bar, at, written = fake(4, { label = "epoch 1/2", tty = false })
    for step = 1, 4 do
      at(step * 0.5)
      bar:advance(32, ("loss %.2f"):format(1 / step))
    end
    assert.equal("", written())
    at(2.5)   -- evaluation after the last step: not in the rate
    assert.equal("epoch 1/2 4/4 loss 0.25 64 samples/s 2.5 s", bar:close())
    assert.equal("epoch 1/2 4/4 loss 0.25 64 samples/s 2.5 s\n", written())
  end)

  it("replaces the closing text, and prints every interval when asked", function()
    local bar, at, written = fake(10, { tty = false, interval = 2, unit = "images" })
    for step = 1, 10 do
      at(step)
      bar:advance(10, "x")
    end
    bar:close("done")
    assert.equal("2/10 x 10 images/s ETA 0:08\n4/10 x 10 images/s ETA 0:06\n"
                 .. "6/10 x 10 images/s ETA 0:04\n8/10 x 10 images/s ETA 0:02\n"
                 .. "10/10 done 10 images/s 10.0 s\n", written())
  end)

  it("redraws a bar in place on a terminal, at most every refresh seconds", function()
    local bar, at, written = fake(4, { label = "e", tty = true, width = 8, refresh = 1 })
    at(0.5)
    bar:advance(100, "a")      -- drawn: the first
    at(1.0)
    bar:advance(100, "b")      -- not: 0.5 s since the last drawing
    at(1.5)
    bar:advance(100, "c")      -- drawn
    at(1.6)
    bar:advance(100, "d")      -- drawn: the last step
    bar:close()
    assert.equal("\re [##------] 1/4 a 200 samples/s ETA 0:02\27[K"
                 .. "\re [######--] 3/4 c 200 samples/s ETA 0:01\27[K"
                 .. "\re [########] 4/4 d 250 samples/s ETA 0:00\27[K"
                 .. "\re 4/4 d 250 samples/s 1.6 s\27[K\n", written())
  end)

  it("shows hours in the ETA and copes with empty loops", function()
    local bar, at, written = fake(3, { tty = true, width = 3 })
    at(3700)
    bar:advance()
    assert.equal("\r[#--] 1/3 ETA 2:03:20\27[K", written())
    local empty, _, written2 = fake(0, { tty = false })
    assert.equal("0/0 0.0 s", empty:close())
    assert.equal("0/0 0.0 s\n", written2())
  end)

  it("checks its arguments", function()
    assert.truthy(helpers.err(progress.Bar, -1):find("non-negative integer expected", 1, true))
    assert.truthy(helpers.err(progress.Bar, 2.5):find("non-negative integer expected", 1, true))
    assert.truthy(helpers.err(progress.Bar, 3, { colour = true })
                  :find("Bar: unknown option 'colour'", 1, true))
    assert.truthy(helpers.err(progress.Bar, 3, "x"):find("options table expected", 1, true))
  end)
end)
