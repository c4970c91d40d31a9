--[[
lunet.nn -- modules, scripted from Lua with PyTorch's names.

Every module is a "lunet.Module" userdata around a C ln_module (see
lua/l_module.c): its parameters, buffers and children are fields
(`model.layer1.weight`), assigning a module or a tensor to a field registers
it, and calling it (`m(x)`) runs the forward hooks around its forward.

Classes are tables; a class's metatable has __index = its parent class, so
methods are looked up along the chain. nn.Module is the root.
`local Net = nn.Module:extend("Net")` makes a class whose instances are
modules of a new C type "Net" with no C forward: the forward is the Lua
method Net:forward. `Net(...)` creates the module and calls
`Net.__init(self, ...)` (Torch7's convention); a subclass calls its parent's
constructor as `Parent.__init(self, ...)`. A class may define
`extra_repr(self)` returning the text that tostring puts in parentheses.

Modules whose type is defined in C (nn.BatchNorm2d, ...) have a class too,
found by the type's name in C.classes; calling that class runs the C
constructor. They cannot be extended from Lua.
]]
local lunet = require("lunet")
local C = lunet._module

local nn = {}
local pack, unpack = table.pack, table.unpack

-- ---- classes ----

local function class_tostring(cls)
  return "lunet.nn class " .. rawget(cls, "__name")
end

local function instantiate(cls, ...)
  local self = C.new(cls, rawget(cls, "__type"))
  local init = cls.__init
  if init then init(self, ...) end
  return self
end

-- A class table named `name` deriving from `parent` whose instances are
-- modules of the C type `ctype` (a lightuserdata), or of a new type with
-- state dict version `version` when ctype is nil.
local function new_class(name, parent, ctype, version)
  local cls = setmetatable({ __name = name, __parent = parent },
                           { __index = parent, __call = instantiate,
                             __tostring = class_tostring })
  cls.__type = ctype or C.new_type(name, cls, version)
  return cls
end

local Module = setmetatable({ __name = "Module" },
                            { __call = instantiate, __tostring = class_tostring })
Module.__type = C.new_type("Module", Module)
C.classes[""] = Module   -- the class of modules whose type has none
nn.Module = Module

--- Net = nn.Module:extend("Net" [, {version=n}]) -> Net, nn.Module
-- A Lua-defined module class; `version` is its state dict version.
function Module.extend(parent, name, opts)
  local c_class = type(parent) == "table" and C.classes[rawget(parent, "__name")] == parent
  if c_class and rawget(parent, "__type") == nil then
    error(("%s is defined in C and cannot be extended from Lua: hold one in a "
           .. "nn.Module:extend class instead"):format(parent.__name), 2)
  end
  if type(parent) ~= "table" or rawget(parent, "__type") == nil then
    error("extend must be called on a class: nn.Module:extend(name)", 2)
  end
  if type(name) ~= "string" or name == "" then
    error(("bad argument #1 to 'extend' (class name expected, got %s)"):format(
      type(name) == "string" and "empty string" or type(name)), 2)
  end
  return new_class(name, parent, nil, opts and opts.version), parent
end

function Module:__init() end

-- check(self, "eval") opens each public method written in Lua, so that
-- m.eval() says "bad argument #1 to 'eval' (lunet.Module expected, got no
-- value); call it as m:eval()" as the C methods do, not "attempt to index
-- a nil value". Not in __call or forward: they run on every call.
local check = lunet._self_checker("lunet.Module", "lunet.Module", "m")

-- Methods implemented in C (lua/l_module.c).
for _, name in ipairs{ "register_parameter", "register_buffer", "add_module", "train",
                       "to", "zero_grad", "type_name", "extra_repr", "forward",
                       "_lazy_init", "load_state_dict" } do
  Module[name] = C[name]
end

function Module:eval() check(self, "eval"); return self:train(false) end

function Module:float() check(self, "float"); return self:to{ dtype = "float32" } end
function Module:double() check(self, "double"); return self:to{ dtype = "float64" } end
function Module:half() check(self, "half"); return self:to{ dtype = "float16" } end
function Module:bfloat16() check(self, "bfloat16"); return self:to{ dtype = "bfloat16" } end
function Module:cpu() check(self, "cpu"); return self:to("cpu") end
function Module:cuda(index)
  check(self, "cuda")
  return self:to(index and ("cuda:" .. index) or "cuda")
end

function Module:requires_grad_(flag)
  check(self, "requires_grad_")
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p:requires_grad_(flag) end
  return self
end

-- ---- walking ----

-- (prefix, recurse) from m:named_x(prefix, recurse), m:named_x{prefix=,
-- recurse=} or m:x(recurse).
local function walk_options(a, b)
  if type(a) == "table" then return a.prefix, a.recurse end
  if type(a) == "boolean" then return nil, a end
  return a, b
end

local function iterate(names, values)
  local i = 0
  return function()
    i = i + 1
    local name = names[i]
    if name ~= nil then return name, values[i] end
  end
end

--- for name, p in m:named_parameters([prefix [, recurse]]) do ... end
function Module:named_parameters(...)
  check(self, "named_parameters")
  return iterate(C.named(self, "parameters", walk_options(...)))
end

function Module:named_buffers(...)
  check(self, "named_buffers")
  return iterate(C.named(self, "buffers", walk_options(...)))
end

function Module:named_children()
  check(self, "named_children")
  return iterate(C.named(self, "children"))
end

--- for name, m in model:named_modules([prefix]) do ... end: the module
-- itself first (named prefix or ""), then every descendant once.
function Module:named_modules(...)
  check(self, "named_modules")
  return iterate(C.named(self, "modules", (walk_options(...))))
end

local function values(self, what, ...)
  local _, v = C.named(self, what, nil, select(2, walk_options(...)))
  return v
end

--- Arrays (1-based) in the order of the named_ iterators.
function Module:parameters(...)
  check(self, "parameters")
  return values(self, "parameters", ...)
end
function Module:buffers(...) check(self, "buffers"); return values(self, "buffers", ...) end
function Module:children() check(self, "children"); return values(self, "children") end
function Module:modules() check(self, "modules"); return values(self, "modules") end

--- m:apply(fn): fn(child) for every descendant (children first, as
-- PyTorch), then fn(m); returns m.
function Module:apply(fn)
  check(self, "apply")
  for _, child in ipairs(self:children()) do child:apply(fn) end
  fn(self)
  return self
end

-- ---- state dicts ----

-- pairs() over a state dict visits its tensors in the module's order,
-- then the other keys (_metadata, keys added later).
local function ordered_pairs(t)
  local keys = getmetatable(t).__keys
  local listed = {}
  for _, k in ipairs(keys) do listed[k] = true end
  local i, k = 0, nil
  return function()
    while i < #keys do
      i = i + 1
      local v = rawget(t, keys[i])
      if v ~= nil then return keys[i], v end
    end
    repeat k = next(t, k) until k == nil or not listed[k]
    if k ~= nil then return k, rawget(t, k) end
  end
end

--- m:state_dict() -> {["1.weight"] = tensor, ...,
--                     _metadata = {[""] = {version=1}, ["1"] = {version=2}}}
-- The tensors are detached aliases of the module's.
function Module:state_dict()
  check(self, "state_dict")
  local sd, keys = C.state_dict(self)
  return setmetatable(sd, { __pairs = ordered_pairs, __keys = keys })
end

-- ---- calling and hooks ----

local Handle = {}
Handle.__index = Handle

--- handle:remove(): the hook no longer runs (twice is fine).
function Handle:remove()
  for i, h in ipairs(self.list) do
    if h == self.hook then
      table.remove(self.list, i)
      return
    end
  end
end

local function add_hook(self, field, fn, what)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error(("bad argument #1 to '%s' (function expected, got %s)"):format(what, type(fn)), 3)
  end
  local priv = C.private(self)
  local list = priv[field]
  if not list then
    list = {}
    priv[field] = list
  end
  local hook = { fn = fn }
  list[#list + 1] = hook
  return setmetatable({ list = list, hook = hook }, Handle)
end

--- m:register_forward_pre_hook(fn): fn(module, args...) runs before
-- forward; returning values replaces the arguments. Returns a handle.
function Module:register_forward_pre_hook(fn)
  check(self, "register_forward_pre_hook")
  return add_hook(self, "pre_hooks", fn, "register_forward_pre_hook")
end

--- m:register_forward_hook(fn): fn(module, args, output) runs after
-- forward (args is table.pack of the arguments); returning a value
-- replaces the output. Returns a handle.
function Module:register_forward_hook(fn)
  check(self, "register_forward_hook")
  return add_hook(self, "hooks", fn, "register_forward_hook")
end

--- m(...): pre-hooks, lazy initialisation, forward, hooks. A hook list is
-- copied before it runs, so a hook may remove itself.
function Module:__call(...)
  local priv = C.private(self)
  local pre, post = priv.pre_hooks, priv.hooks
  if not (pre and pre[1]) and not (post and post[1]) then
    self:_lazy_init(...)
    return self:forward(...)
  end
  local args = pack(...)
  for _, h in ipairs(pre and { unpack(pre) } or {}) do
    local r = pack(h.fn(self, unpack(args, 1, args.n)))
    if r.n > 0 and r[1] ~= nil then args = r end
  end
  self:_lazy_init(unpack(args, 1, args.n))
  local out = self:forward(unpack(args, 1, args.n))
  for _, h in ipairs(post and { unpack(post) } or {}) do
    local r = h.fn(self, args, out)
    if r ~= nil then out = r end
  end
  return out
end

-- ---- nn.Parameter ----

--- nn.Parameter(t [, requires_grad=true]) -> t, flagged as a parameter so
-- that assigning it to a module field registers a parameter.
nn.Parameter = C.parameter

--- nn.is_module(v) -> whether v is a module object.
nn.is_module = C.is_module

-- ---- containers ----

--- nn.Sequential(m1, m2, ...): children named "1", "2", ...; seq[i] is the
-- i-th child, #seq their count; forward feeds each child's output to the
-- next one (through its __call, so hooks and Lua modules work).
local Sequential = new_class("Sequential", Module, C.sequential_type)
C.classes.Sequential = Sequential
nn.Sequential = Sequential

function Sequential:__init(...)
  local n = select("#", ...)
  for i = 1, n do
    local m = select(i, ...)
    if not C.is_module(m) then
      error(("bad argument #%d to 'Sequential' (lunet.Module expected, got %s)"):format(
        i, lunet.is_tensor(m) and "lunet.Tensor" or type(m)), 3)
    end
  end
  for i = 1, n do self:add_module(tostring(i), (select(i, ...))) end
end

--- seq:add(m): append m as the next child; returns seq.
function Sequential:add(m)
  check(self, "add")
  if not C.is_module(m) then
    error(("bad argument #1 to 'add' (lunet.Module expected, got %s)"):format(type(m)), 2)
  end
  self:add_module(tostring(#self + 1), m)
  return self
end

function Sequential:forward(x)
  for i = 1, #self do
    local m = self[i]
    if m then x = m(x) end
  end
  return x
end

-- ---- classes of C module types ----

-- The class of a C module type named `name`: calling it runs `ctor` (a C
-- function that creates the module); the module's object finds the class
-- again through C.classes by its type's name, also after a lazy module
-- changes type. Without ctor it is a base class holding shared methods.
function nn._c_class(name, parent, ctor)
  local cls = setmetatable({ __name = name, __parent = parent },
                           { __index = parent, __call = ctor, __tostring = class_tostring })
  if ctor then C.classes[name] = cls end
  return cls
end

-- ---- nn.functional ----

nn.functional = {}

lunet.nn = nn
package.loaded["lunet.nn"] = nn   -- the family files below require it

-- The module families, one file each (lua/lunet/nn/*.lua).
require("lunet.nn.batchnorm")
require("lunet.nn.syncbatchnorm")
require("lunet.nn.ddp")
require("lunet.nn.layers")

return nn
