--[[
lunet.progress -- progress of a loop of known length (the batches of an
epoch): a bar redrawn in place on a terminal, plain lines elsewhere (logs,
pipes, CI), where a redrawn line would be noise.

  local progress = require("lunet.progress")
  local bar = progress.Bar(#loader, { label = "epoch 1/10" })
  for _, xb, yb in loader:iter() do
    ...
    bar:advance(xb:size(1), ("loss %.4f"):format(mean_loss))
  end
  bar:close(("loss %.4f"):format(mean_loss))

On a terminal, advance redraws (at most every `refresh` seconds, and at the
last step)
  epoch 1/10 [########------------] 18/45 loss 0.4321 2650 samples/s ETA 0:01
and close replaces the bar with the summary line, which is all that is
printed elsewhere:
  epoch 1/10 45/45 loss 0.1234 2650 samples/s 0.5 s
Off a terminal, `interval` (seconds) also prints the bar's line without the
bar that often during the loop. The rate is the items given to advance
(samples) over the time from the start to the last step (so work done
between the last step and close, such as an evaluation, does not lower
it); the ETA assumes the remaining steps take as long as the past ones
did on average. The time on the summary line runs up to close.
]]
local lunet = require("lunet")

local Bar = {}
Bar.__index = Bar
Bar.__name = "Bar"

local known = { label = true, file = true, tty = true, width = true, unit = true,
                refresh = true, interval = true, clock = true }

-- Seconds as m:ss, or h:mm:ss from an hour on.
local function clock_text(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

--- progress.Bar(total [, opts]): the class is callable.
-- opts: label (text before the counts), file (io.stdout), tty (whether
-- to draw the bar; lunet.isatty(file) by default), width (20 columns),
-- unit ("samples"), refresh (0.1 s between redraws), interval (seconds
-- between plain lines off a terminal; none by default), clock (a function
-- returning seconds, lunet.clock by default).
local function new(_, total, opts)
  if math.type(total) ~= "integer" or total < 0 then
    error("bad argument #1 to 'Bar' (non-negative integer expected)", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("bad argument #2 to 'Bar' (options table expected, got %s)"):format(type(opts)), 2)
  end
  for k in pairs(opts) do
    if not known[k] then error(("Bar: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local file = opts.file or io.stdout
  local tty = opts.tty
  if tty == nil then tty = lunet.isatty(file) end
  local clock = opts.clock or lunet.clock
  local now = clock()
  return setmetatable({
    total = total, step = 0, count = 0, label = opts.label, file = file, tty = tty,
    width = opts.width or 20, unit = opts.unit or "samples", refresh = opts.refresh or 0.1,
    interval = opts.interval, clock = clock, start = now, last_draw = -math.huge,
    last_line = now, last_step = now, text = nil,
  }, Bar)
end

-- The line for the current state: the label, the bar (when `with_bar`),
-- the counts, the caller's text, the rate, and `tail` (ETA or time taken).
function Bar:_line(with_bar, tail)
  local parts = {}
  if self.label then parts[#parts + 1] = self.label end
  if with_bar then
    local filled = self.total > 0 and self.width * self.step // self.total or self.width
    parts[#parts + 1] = "[" .. ("#"):rep(filled) .. ("-"):rep(self.width - filled) .. "]"
  end
  parts[#parts + 1] = ("%d/%d"):format(self.step, self.total)
  if self.text and self.text ~= "" then parts[#parts + 1] = self.text end
  local elapsed = self.last_step - self.start
  if elapsed > 0 and self.count > 0 then
    parts[#parts + 1] = ("%.0f %s/s"):format(self.count / elapsed, self.unit)
  end
  parts[#parts + 1] = tail
  return table.concat(parts, " ")
end

function Bar:_eta()
  if self.step == 0 then return "ETA -:--" end
  local elapsed = self.last_step - self.start
  return "ETA " .. clock_text(elapsed / self.step * (self.total - self.step))
end

--- bar:advance([count [, text]]): one more step that handled `count`
-- items (for the rate), with `text` (such as "loss 0.1234") shown after
-- the counts until the next call replaces it.
function Bar:advance(count, text)
  self.step = self.step + 1
  self.count = self.count + (count or 0)
  if text ~= nil then self.text = text end
  local now = self.clock()
  self.last_step = now
  if self.tty then
    if now - self.last_draw >= self.refresh or self.step == self.total then
      self.last_draw = now
      self.file:write("\r", self:_line(true, self:_eta()), "\27[K")
      self.file:flush()
    end
  elseif self.interval and now - self.last_line >= self.interval and self.step < self.total then
    self.last_line = now
    self.file:write(self:_line(false, self:_eta()), "\n")
    self.file:flush()
  end
end

--- bar:close([text]): the summary line (replacing the bar on a terminal),
-- with `text` in place of the last step's; returns that line.
function Bar:close(text)
  if text ~= nil then self.text = text end
  local line = self:_line(false, ("%.1f s"):format(self.clock() - self.start))
  self.file:write(self.tty and "\r" or "", line, self.tty and "\27[K\n" or "\n")
  self.file:flush()
  return line
end

return { Bar = setmetatable(Bar, { __call = new }) }
