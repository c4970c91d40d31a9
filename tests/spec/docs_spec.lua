-- The API reference (docs/api/*.md) documents every public Lua name.
--
-- The names are found at run time, so a new function is caught the day it
-- appears: the fields of the lunet table (and of its plain tables such as
-- lunet.cuda), the tensor metatable's methods, properties and operators,
-- every module under lua/lunet/ (lunet.nn and nn.functional, lunet.optim,
-- lunet.data, lunet.dist, lunet.repl), the classes they hold and the
-- methods along each class's chain, the methods of objects that
-- constructors return, and the methods of every lunet.* metatable in the
-- registry. Names starting with "_" are private.
--
-- A name is documented when a heading of the docs (a line starting with
-- '#') names it: "lunet.zeros", "x:size", "x.dtype", "nn.BatchNorm2d",
-- "nn.functional.batch_norm", "optim.SGD", "dist.init", "repl.format".
-- A method of a module, optimizer, data set or process group may use any
-- receiver ("m:train", "bn:reset_parameters", "opt:step", "g:rank") in
-- the headings of its module's files (docs/api/nn*.md for lunet.nn, ...).
local lunet = require("lunet")

local DOCS = "docs/api"

-- ---- reading the docs ----

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

-- file name -> the text of its headings, one per line
local headings = {}
for _, path in ipairs(lines_of("ls " .. DOCS .. "/*.md 2>/dev/null")) do
  local hs = {}
  for line in read(path):gmatch("[^\n]+") do
    if line:match("^#") then hs[#hs + 1] = line end
  end
  headings[path:match("[^/]+$")] = table.concat(hs, "\n") .. "\n"
end

-- Whether `token` occurs in `text` as a whole name: not followed by a name
-- character (when it ends with one) and, with `receiver`, right after a
-- receiver ("x", "m", "bn", "seq[1]", "f()") and a ':' or '.' that
-- `token` starts with.
local function occurs(text, token, receiver)
  local init = 1
  while true do
    local s, e = text:find(token, init, true)
    if not s then return false end
    local after_ok = not token:sub(-1):match("[%w_]") or not text:sub(e + 1, e + 1):match("[%w_]")
    local before_ok = not receiver or text:sub(s - 1, s - 1):match("[%w_%]%)]") ~= nil
    if after_ok and before_ok then return true end
    init = s + 1
  end
end

-- Whether `token` occurs in the headings of the files whose names start
-- with `prefix` (all files when prefix is nil).
local function in_headings(token, prefix, receiver)
  for name, text in pairs(headings) do
    if (prefix == nil or name:sub(1, #prefix) == prefix) and occurs(text, token, receiver) then
      return true
    end
  end
  return false
end

-- ---- finding the names ----

local missing = {}
local checked = 0

-- `name` must appear in some heading, not followed by a name character.
local function expect(name)
  checked = checked + 1
  if not in_headings(name) then missing[#missing + 1] = name end
end

-- A method `name` (called with ':' or '.') on any receiver, in the
-- headings of the files of `prefix`.
local function expect_method(name, prefix, label)
  checked = checked + 1
  if not (in_headings(":" .. name, prefix, true) or in_headings("." .. name, prefix, true)) then
    missing[#missing + 1] = ("%s (a method, in %s/%s*.md)"):format(label, DOCS, prefix)
  end
end

local function public(k)
  return type(k) == "string" and k:sub(1, 1) ~= "_"
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do if public(k) then ks[#ks + 1] = k end end
  table.sort(ks)
  return ks
end

-- Functions reachable from a class or object table along its chain (its
-- own keys, then its metatable's __index when that is a table), as a
-- sorted list of {name, owner} where owner is the table defining it.
local function chain_functions(t)
  local found, seen = {}, {}
  while type(t) == "table" and not seen[t] do
    seen[t] = true
    for k, v in pairs(t) do
      if public(k) and found[k] == nil and type(v) == "function" then found[k] = t end
    end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
  end
  local out = {}
  for _, k in ipairs(sorted_keys(found)) do out[#out + 1] = { k, found[k] } end
  return out
end

-- Each method is checked once, where it is defined: owner -> name -> true.
local method_checked = setmetatable({}, { __mode = "k" })

-- Check method `name` of `owner`, found through `label_class`.
local function expect_owned(name, owner, files, label_class)
  method_checked[owner] = method_checked[owner] or {}
  if method_checked[owner][name] then return end
  method_checked[owner][name] = true
  local owner_name = rawget(owner, "__name")
  local label = owner_name and files .. "." .. owner_name or label_class
  expect_method(name, files, label .. ":" .. name)
end

local function is_class(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  return rawget(v, "__name") ~= nil or rawget(v, "__index") ~= nil
         or (type(mt) == "table" and rawget(mt, "__call") ~= nil)
end

-- The Lua modules under lua/lunet/ (lunet.nn, lunet.optim, ...), loading
-- their family files too so that everything they add is there.
local function lunet_modules()
  local mods = {}
  for _, path in ipairs(lines_of("cd lua && find lunet -name '*.lua' | sort")) do
    local name = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    require(name)
    local top = name:match("^lunet%.([%w_]+)$")
    if top then mods[#mods + 1] = top end
  end
  return mods
end

-- The short prefix a module's names are documented under ("nn.Linear").
local function doc_prefix(mod)
  return mod == "repl" and "repl" or mod
end

local function has_function(t)
  for _, v in pairs(t) do if type(v) == "function" then return true end end
  return false
end

-- Every public name of module table `t`, documented as "<prefix>.<key>";
-- classes also bring their methods.
local function walk_module(t, prefix, files)
  for _, k in ipairs(sorted_keys(t)) do
    local v = t[k]
    local qualified = prefix .. "." .. k
    if is_class(v) then
      expect(qualified)
      for _, m in ipairs(chain_functions(v)) do expect_owned(m[1], m[2], files, qualified) end
    elseif type(v) == "table" and getmetatable(v) == nil and has_function(v) then
      walk_module(v, qualified, files)   -- nn.functional and the like
    else
      expect(qualified)
    end
  end
end

-- Operators on tensors and how the docs write them.
local operators = {
  __add = "x + y", __sub = "x - y", __mul = "x * y", __div = "x / y", __pow = "x ^ y",
  __unm = "-x", __mod = "x % y", __idiv = "x // y", __len = "#x", __concat = "x .. y",
  __eq = "x == y", __lt = "x < y", __le = "x <= y", __call = "x(...)",
  __tostring = "tostring(x)", __band = "x & y", __bor = "x | y", __bxor = "x ~ y",
  __shl = "x << y", __shr = "x >> y", __bnot = "~x",
}
local internal_meta = { __gc = true, __close = true, __index = true, __newindex = true,
                        __name = true, __metatable = true, __mode = true }

describe("docs/api", function()
  it("documents every exported name", function()
    local mods = lunet_modules()

    -- lunet.*: functions and values, and the fields of plain tables
    local is_mod = {}
    for _, m in ipairs(mods) do is_mod[m] = true end
    for _, k in ipairs(sorted_keys(lunet)) do
      local v = lunet[k]
      if not is_mod[k] then
        if type(v) == "table" then walk_module(v, "lunet." .. k, "lunet")
        else expect("lunet." .. k) end
      end
    end

    -- tensors: x:method, x.property, operators, x[i]
    local mt = debug.getregistry()["lunet.Tensor"]
    for _, k in ipairs(sorted_keys(mt.methods)) do expect("x:" .. k) end
    local props = {}
    for k in pairs(mt.getters) do props[k] = true end
    for k in pairs(mt.setters) do props[k] = true end
    for _, k in ipairs(sorted_keys(props)) do expect("x." .. k) end
    for k in pairs(mt) do
      if type(k) == "string" and k:sub(1, 2) == "__" and not internal_meta[k] then
        expect(operators[k] or k)
      end
    end
    expect("x[i]")

    -- lunet.nn, lunet.optim, lunet.data, lunet.dist, lunet.repl, ...
    for _, m in ipairs(mods) do
      walk_module(require("lunet." .. m), doc_prefix(m), m)
    end

    -- objects that constructor functions return
    local data = require("lunet.data")
    local ds = data.TensorDataset(lunet.zeros(4, 2))
    local samples = {
      { "data", "dataset", ds },
      { "data", "subset", data.Subset(ds, { 1, 2 }) },
      { "data", "loader", data.DataLoader(ds) },
      { "optim", "opt", lunet.optim.SGD({ lunet.zeros(1) }, { lr = 0.1 }) },
    }
    for _, s in ipairs(samples) do
      for _, m in ipairs(chain_functions(getmetatable(s[3]) and getmetatable(s[3]).__index or {})) do
        expect_owned(m[1], m[2], s[1], s[2])
      end
    end

    -- methods of other lunet.* userdata (process groups, ...)
    for k, v in pairs(debug.getregistry()) do
      if type(k) == "string" and k:match("^lunet%.%u") and k ~= "lunet.Tensor"
         and k ~= "lunet.Module" and type(v) == "table" then
        local methods = type(rawget(v, "__index")) == "table" and rawget(v, "__index") or v
        for _, m in ipairs(sorted_keys(methods)) do
          if type(methods[m]) == "function" then
            checked = checked + 1
            if not (in_headings(":" .. m, nil, true) or in_headings("." .. m, nil, true)) then
              missing[#missing + 1] = ("%s:%s (a method of %s)"):format(k, m, k)
            end
          end
        end
      end
    end

    assert.is_true(checked > 100, "too few names found: is the spec run from the repository root?")
    table.sort(missing)
    assert(#missing == 0, ("%d of %d names are not documented in a heading of %s/*.md:\n  %s")
      :format(#missing, checked, DOCS, table.concat(missing, "\n  ")))
  end)

  it("has a page for each module and an index that links them", function()
    local index = read(DOCS .. "/README.md")
    for name in pairs(headings) do
      if name ~= "README.md" then
        assert.truthy(index:find("(" .. name .. ")", 1, true), "README.md does not link " .. name)
      end
    end
  end)
end)
