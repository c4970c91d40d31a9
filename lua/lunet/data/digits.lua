--[[
lunet.data.digits -- the 8x8 handwritten digits (UCI; 1797 images) that
Debian's python3-sklearn ships as digits.csv.gz: 64 pixel values (0..16)
and the digit (0..9) per line.

  local images, labels, digits = assert(data.digits({path=?}))
  -- images: float32 (1797, 1, 8, 8), pixel / 16 in [0, 1]
  -- labels: int64 (1797), the class index digit + 1 (1..10), as
  --         nn.functional.cross_entropy takes 1-based class indices
  -- digits: int64 (1797), the digit itself (0..9)

A missing or unreadable file returns nil and a message naming the package
(as io.open does); the .gz file is read through `gzip -dc`, a path not
ending in .gz is read as plain CSV.
]]
local lunet = require("lunet")

local DEFAULT_PATH = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"

local function shell_quote(s)
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

-- The file's text, decompressed when it ends in .gz; nil, message on failure.
local function read_text(path)
  local f = io.open(path, "rb")
  if not f then
    return nil, ("digits data not found at %s: install Debian's python3-sklearn "
                 .. "(scripts/setup does)"):format(path)
  end
  if not path:match("%.gz$") then
    local text = f:read("a")
    f:close()
    return text
  end
  f:close()
  local p = io.popen("gzip -dc < " .. shell_quote(path) .. " 2>/dev/null", "r")
  if not p then return nil, "could not run gzip to read " .. path end
  local text = p:read("a")
  local ok, how, code = p:close()
  if not ok then
    return nil, ("could not decompress %s: gzip -dc %s %s%s"):format(path,
      how == "exit" and "exited with status" or "was killed by signal", code,
      code == 127 and " (is gzip installed?)" or "")
  end
  return text
end

--- data.digits({path=DEFAULT_PATH}) -> images, labels, digits | nil, message
return function(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'digits' (options table expected, got %s)"):format(type(opts)), 2)
  end
  for k in pairs(opts) do
    if k ~= "path" then error(("digits: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local path = opts.path or DEFAULT_PATH
  if type(path) ~= "string" then error("digits: path must be a string", 2) end
  local text, msg = read_text(path)
  if not text then return nil, msg end
  local pixels, labels, digits, n = {}, {}, {}, 0
  for line in text:gmatch("[^\r\n]+") do
    n = n + 1
    local k = 0
    for field in line:gmatch("[^,]+") do
      k = k + 1
      local v = math.tointeger(tonumber(field))
      if v == nil or v < 0 or (k <= 64 and v > 16) or (k == 65 and v > 9) or k > 65 then
        return nil, ("bad digits data at line %d of %s"):format(n, path)
      end
      if k <= 64 then pixels[#pixels + 1] = v else labels[n], digits[n] = v + 1, v end
    end
    if k ~= 65 then
      return nil, ("bad digits data at line %d of %s: %d fields, expected 65"):format(n, path, k)
    end
  end
  if n == 0 then return nil, "no digits data in " .. path end
  local images = lunet.tensor(pixels, { dtype = "float32" }):view(n, 1, 8, 8):div_(16)
  local int64 = { dtype = "int64" }
  return images, lunet.tensor(labels, int64), lunet.tensor(digits, int64)
end
