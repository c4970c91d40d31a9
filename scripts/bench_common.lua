--[[
bench_common.lua -- what the benchmark scripts share (bench_lunet.lua for
the CPU, bench_cuda.lua for the GPU): their command line, medians, and
their tables as plain text. Loaded with
  local common = dofile(arg[0]:match("^(.-)[^/]*$") .. "bench_common.lua")
]]
local M = {}

-- args[1] is the mode; "--quick" is a flag, the options named in `valued`
-- ({ "--out", ... }) take an argument (o.out); other words are files.
function M.parse(args, valued)
  local takes = {}
  for _, v in ipairs(valued) do takes[v] = true end
  local o = { files = {} }
  local i = 2
  while i <= #args do
    local a = args[i]
    if a == "--quick" then o.quick = true
    elseif takes[a] then
      o[a:sub(3)] = assert(args[i + 1], a .. " needs an argument")
      i = i + 1
    elseif a:sub(1, 2) == "--" then error("unknown option " .. a)
    else o.files[#o.files + 1] = a end
    i = i + 1
  end
  return args[1], o
end

-- The median of a list of numbers (nil when empty).
function M.median(v)
  local s = {}
  for i, x in ipairs(v) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- The header and rows as lines of text: a row of one cell is a section
-- title; the first column is left-aligned, the others right-aligned, each
-- as wide as its widest cell.
function M.plain_table(header, rows)
  local widths = {}
  for _, r in ipairs(rows) do
    if #r > 1 then for i, v in ipairs(r) do widths[i] = math.max(widths[i] or #header[i], #v) end end
  end
  local function plain(r)
    if #r == 1 then return r[1] end
    local cells = {}
    for i, v in ipairs(r) do
      cells[i] = i == 1 and v .. (" "):rep(widths[i] - #v) or (" "):rep(widths[i] - #v) .. v
    end
    return table.concat(cells, "  ")
  end
  local lines = { plain(header) }
  for _, r in ipairs(rows) do lines[#lines + 1] = plain(r) end
  return lines
end

return M
