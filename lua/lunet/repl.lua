--[[
lunet.repl -- what the REPL does with the text it reads: compiling lines
into chunks, pretty printing results, completing names, and the loop.

The terminal side (readline, history, Ctrl-C) is C, in lua/repl.c; it
calls repl.run(host) with a `host` table of primitives (see run below), so
that everything here can be used, and tested, without a terminal.

  repl.compile(src)   -> fn, quiet | nil, message, incomplete
  repl.format(v)      -> text (tensors and modules as tostring shows them,
                         tables nested with sorted keys)
  repl.complete(text) -> sorted candidates for the word before the cursor
  repl.options        -- depth, items and width of the pretty printer
]]
local M = {}

M.options = {
  depth = 4,    -- nested tables deeper than this print as {...}
  items = 100,  -- entries shown per table, then "... (N more)"
  width = 80,   -- a table fits on one line when it is this short
}

local CHUNKNAME = "=stdin"

-- ---- compiling ----

-- A syntax error caused only by the text ending too early.
local function is_incomplete(msg)
  return msg:sub(-5) == "<eof>"
end

--- repl.compile(src) -> fn, quiet | nil, message, incomplete
-- The text is tried first as an expression list (`return <src>`), so that
-- its values print, then as statements. A leading '=' (lua5.1's habit) is
-- accepted; a trailing ';' compiles the same but `quiet` says not to print.
-- `incomplete` is true when more lines could still make it compile.
function M.compile(src)
  if src:sub(1, 1) == "=" then src = src:sub(2) end
  local body, semi = src:match("^(.-)%s*(;?)%s*$")
  local quiet = semi == ";"
  local fn = load("return " .. body, CHUNKNAME, "t")
  if fn then return fn, quiet end
  local err
  fn, err = load(src, CHUNKNAME, "t")
  if fn then return fn, quiet end
  return nil, err, is_incomplete(err)
end

-- ---- pretty printing ----

local lunet_ok, lunet = pcall(require, "lunet")
if not lunet_ok then lunet = nil end

local function is_tensor(v)
  return lunet ~= nil and lunet.is_tensor(v)
end

local function is_module(v)
  if type(v) ~= "userdata" then return false end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") == "lunet.Module"
end

local escapes = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\%d"):format(c:byte())
  end) .. '"'
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

-- Keys other than 1..n: numbers first (ascending), then strings, then
-- the rest by their text.
local key_rank = { number = 1, string = 2 }
local function key_less(a, b)
  local ra, rb = key_rank[type(a)] or 3, key_rank[type(b)] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

local format_value

-- "{...}" text of table t: the sequence 1..n, then the other keys sorted,
-- or in the order of t's __pairs when it has one (a state dict lists its
-- tensors in the module's order). `path` holds the tables being printed
-- (a cycle prints <cycle>); `depth` is how deep t is.
local function format_table(t, depth, path)
  if path[t] then return "<cycle>" end
  if next(t) == nil then return "{}" end
  if depth > M.options.depth then return "{...}" end
  path[t] = true
  local n = rawlen(t)
  local keys = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  local mt = getmetatable(t)
  if not (type(mt) == "table" and rawget(mt, "__pairs")) then table.sort(keys, key_less) end
  local parts, total, multiline = {}, n + #keys, false
  local function add(key_text, v)
    local text = format_value(v, depth + 1, path, true)
    if key_text then text = key_text .. " = " .. text end
    multiline = multiline or text:find("\n", 1, true) ~= nil
    parts[#parts + 1] = text
  end
  local shown = math.min(total, M.options.items)
  for i = 1, math.min(n, shown) do add(nil, rawget(t, i)) end
  for i = 1, shown - math.min(n, shown) do
    local k = keys[i]
    local key_text = is_identifier(k) and k or "[" .. format_value(k, depth + 1, path, true) .. "]"
    add(key_text, t[k])
  end
  if total > shown then parts[#parts + 1] = ("... (%d more)"):format(total - shown) end
  path[t] = nil
  local line = "{" .. table.concat(parts, ", ") .. "}"
  if not multiline and #line <= M.options.width then return line end
  for i, p in ipairs(parts) do parts[i] = "  " .. p:gsub("\n", "\n  ") end
  return "{\n" .. table.concat(parts, ",\n") .. "\n}"
end

function format_value(v, depth, path, nested)
  local tv = type(v)
  if tv == "string" then return nested and quote(v) or v end
  if tv == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__tostring") then return tostring(v) end
    return format_table(v, depth, path)
  end
  return tostring(v)   -- tensors and modules print their repr
end

--- repl.format(v) -> text: what the REPL prints for a result. Strings print
-- as they are at the top level and quoted inside tables.
function M.format(v)
  return format_value(v, 1, {}, false)
end

-- ---- completion ----

local keywords = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
  "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
  "true", "until", "while",
}

-- lunet's submodules load on first access and so are not keys yet.
local lazy = { "nn", "optim", "data", "dist" }

local function safe_index(v, k)
  local ok, r = pcall(function() return v[k] end)
  if ok then return r end
end

-- Add the keys of table t and of its __index chain to `out`.
local function add_table_keys(t, out, seen)
  seen = seen or {}
  while type(t) == "table" and not seen[t] do
    seen[t] = true
    for k, v in next, t do
      if type(k) == "string" and out[k] == nil then out[k] = v end
    end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
  end
end

-- The fields of a module: slots, attributes, Lua fields, class methods.
local function add_module_keys(m, out, host)
  local C = lunet._module
  for _, what in ipairs{ "parameters", "buffers", "children" } do
    local names, values = C.named(m, what, "", false)
    for i, name in ipairs(names) do out[name] = values[i] end
  end
  out.training = m.training
  for _, name in ipairs(host and host.module_attrs and host.module_attrs(m) or {}) do
    out[name] = safe_index(m, name)
  end
  local _ = m.__name   -- makes the module find and keep its class
  local priv = C.private(m)
  add_table_keys(priv.attrs, out)
  add_table_keys(priv.class, out)
end

-- name -> value of everything reachable as v.name (or v:name).
local function fields(v, host)
  local out = {}
  if type(v) == "table" then
    add_table_keys(v, out)
    if lunet and v == lunet then
      for _, name in ipairs(lazy) do out[name] = out[name] or safe_index(v, name) end
    end
  elseif is_module(v) then
    add_module_keys(v, out, host)
  elseif type(v) == "string" then
    add_table_keys(string, out)
  elseif type(v) == "userdata" then
    local mt = getmetatable(v)
    if type(mt) == "table" then
      if type(rawget(mt, "methods")) == "table" then   -- lunet.Tensor
        add_table_keys(rawget(mt, "methods"), out)
        for k in pairs(rawget(mt, "getters") or {}) do out[k] = out[k] or true end
      else
        add_table_keys(rawget(mt, "__index"), out)
      end
    end
  end
  return out
end

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil and type(v) ~= "userdata"
end

--- repl.complete(text [, host]) -> sorted list of completions of `text`,
-- the word before the cursor ("x:si", "lunet.ze", "mod"): each is the
-- whole word, with "(" after a function. Names starting with "_" appear
-- only when the typed part starts with "_". `host` gives module
-- attributes (see run).
function M.complete(text, host)
  local base, sep, partial = text:match("^(.-)([.:]?)([%a_]?[%w_]*)$")
  if base == nil then return {} end
  local candidates
  if sep == "" then
    if base ~= "" then return {} end
    candidates = fields(_G, host)
    for _, k in ipairs(keywords) do candidates[k] = candidates[k] or false end
  else
    local v = _G
    for name in (base .. "."):gmatch("([^.]*)%.") do
      if not is_identifier(name) or (type(v) ~= "table" and type(v) ~= "userdata") then
        return {}
      end
      v = safe_index(v, name)
    end
    if v == nil then return {} end
    candidates = fields(v, host)
  end
  local out = {}
  for name, value in pairs(candidates) do
    local method_ok = sep ~= ":" or type(value) == "function"
    local visible = name:sub(1, 1) ~= "_" or partial:sub(1, 1) == "_"
    if method_ok and visible and is_identifier(name) and name:sub(1, #partial) == partial then
      out[#out + 1] = base .. sep .. name .. (is_callable(value) and "(" or "")
    end
  end
  table.sort(out)
  return out
end

-- ---- running ----

-- One traceback line for the frame `info` (as luaL_traceback words it).
local function frame_line(info)
  local where = info.currentline > 0 and ("%s:%d:"):format(info.short_src, info.currentline)
                or info.short_src .. ":"
  local what
  if info.what == "main" then what = "in main chunk"
  elseif info.name then
    local kind = (info.namewhat == "" or info.namewhat == "global") and "function" or info.namewhat
    what = ("in %s '%s'"):format(kind, info.name)
  elseif info.what == "C" then what = "in ?"
  else what = ("in function <%s:%d>"):format(info.short_src, info.linedefined) end
  return "\t" .. where .. " " .. what
end

--- repl.error_message(err) -> the message of err with a short traceback:
-- the frames from where it was raised down to the chunk the REPL ran (at
-- most 10), or none when only C functions (error, a lunet function that
-- checks its arguments) and the chunk itself are involved. Call it from
-- the message handler of the xpcall that runs the chunk, not as a tail
-- call: the frames are read from level 3 up to xpcall's.
local MAX_FRAMES = 10
function M.error_message(err)
  local msg = err
  if type(err) ~= "string" then
    local mt = getmetatable(err)
    msg = (type(mt) == "table" and mt.__tostring) and tostring(err)
          or ("(error object is a %s value)"):format(type(err))
  end
  local lines, any_lua = { msg, "stack traceback:" }, false
  for level = 3, math.huge do
    local info = debug.getinfo(level, "Slnft")
    if info == nil or info.func == xpcall then break end
    if #lines - 2 == MAX_FRAMES then
      lines[#lines + 1] = "\t..."
      break
    end
    any_lua = any_lua or info.what == "Lua"
    lines[#lines + 1] = frame_line(info)
    if info.istailcall then lines[#lines + 1] = "\t(...tail calls...)" end
  end
  return any_lua and table.concat(lines, "\n") or msg
end

local function prompt(first)
  local p = rawget(_G, first and "_PROMPT" or "_PROMPT2")
  if p ~= nil then return tostring(p) end
  return first and "lunet> " or "   ... "
end

-- Print the results r (a table.pack) of a chunk; `_` keeps the first.
local function show(r)
  if r.n == 0 then return end
  local texts, multiline = {}, false
  for i = 1, r.n do
    texts[i] = M.format(r[i])
    multiline = multiline or texts[i]:find("\n", 1, true) ~= nil
  end
  io.stdout:write(table.concat(texts, multiline and "\n" or "\t"), "\n")
  if r[1] ~= nil then rawset(_G, "_", r[1]) end
end

local function report(msg)
  io.stdout:flush()
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end

-- Read lines until they compile. Returns "chunk", fn, quiet; or "error"
-- (the text does not compile: reported); or "interrupted" (Ctrl-C: the
-- text is dropped); or "eof" at end of input.
local function read_chunk(host)
  local src = host.read(prompt(true))
  if src == nil then return "eof" end
  if src == false then return "interrupted" end
  while true do
    local fn, quiet_or_err, incomplete = M.compile(src)
    if fn or not incomplete then
      if src:find("%S") then host.add_history(src) end
      if fn then return "chunk", fn, quiet_or_err end
      report(quiet_or_err)
      return "error"
    end
    local line = host.read(prompt(false))
    if line == false then return "interrupted" end
    if line == nil then   -- end of input inside a chunk
      host.add_history(src)
      report(quiet_or_err)
      return "eof"
    end
    src = src .. "\n" .. line
  end
end

-- Run fn with Ctrl-C enabled; report its error or show its results.
local function execute(host, fn, quiet)
  local handler = function(e)
    local msg = M.error_message(e)
    return msg   -- not a tail call: error_message counts this frame
  end
  host.interrupts(true)
  local r = table.pack(xpcall(fn, handler))
  host.interrupts(false)
  if not r[1] then
    report(r[2])
  elseif not quiet then
    local ok, err = pcall(show, table.pack(table.unpack(r, 2, r.n)))
    if not ok then report("error printing the result: " .. tostring(err)) end
  end
end

--- repl.run(host): the loop, until end of input. `host` provides
--   read(prompt) -> line | nil (end of input) | false (Ctrl-C)
--   add_history(text)          -- a chunk that was read
--   interrupts(on)             -- Ctrl-C stops running code while on
--   set_completer(fn)          -- fn(word) -> completions (optional)
--   module_attrs(m) -> names   -- a module's C attributes (optional)
-- Errors are reported with a short traceback and the loop goes on. The
-- global `lunet` is set to require("lunet") when it is not set.
function M.run(host)
  if rawget(_G, "lunet") == nil and lunet then rawset(_G, "lunet", lunet) end
  if host.set_completer then
    host.set_completer(function(text) return M.complete(text, host) end)
  end
  while true do
    local what, fn, quiet = read_chunk(host)
    if what == "eof" then break end
    if what == "chunk" then execute(host, fn, quiet) end
  end
  io.stdout:write("\n")
  io.stdout:flush()
end

return M
