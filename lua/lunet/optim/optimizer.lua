--[[
lunet.optim.Optimizer -- what every optimizer shares: parameter groups with
per-group options, zero_grad, the step loop, and PyTorch-shaped state dicts.

A class is made with Optimizer.class(name, spec), where spec holds
  defaults                 the options and their default values
  validate(group) -> msg   a message for a bad option value, or nil
  init_state(p, group)     the state of a parameter at its first update
  update(group, p, grad, state)  one update of p (under no autograd)
and called as cls(params, opts). `params` is an array of tensors, or of
parameter groups ({params={...}, lr=...}) whose options override opts.

Per-parameter state (opt.state[p]) is keyed by the tensor: lunet gives one
Lua object per tensor, and module:to() converts parameters in place, so the
optimizer keeps seeing a model's parameters after a conversion.

State dicts have PyTorch's shape with 1-based parameter indices, counted
across the groups in order:
  {state = {[1] = {step=3, exp_avg=tensor, ...}, ...},
   param_groups = {{lr=1e-3, betas={0.9, 0.999}, ..., params={1, 2}}, ...}}
state_dict() hands out the optimizer's own state tensors (as PyTorch does);
load_state_dict() copies what it is given (converted to each parameter's
dtype, device and layout), checks everything before changing anything, and
takes the groups' options from the state dict.
]]
local lunet = require("lunet")

local C = lunet._optim

local Optimizer = {}
Optimizer.__index = Optimizer

-- The classes Optimizer.class made (an optimizer's metatable is its class);
-- check(self, "step") opens each method, so that opt.step() says "bad
-- argument #1 to 'step' (optimizer expected, got no value); call it as
-- opt:step()" rather than "attempt to index a nil value".
local classes = setmetatable({}, { __mode = "k" })
local check = lunet._self_checker(classes, "optimizer", "opt")

-- ---- construction ----

-- Check that opts (a table or nil) names only known options; raises at
-- `level` (counted from the caller of check_options).
local function check_options(opts, defaults, who, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: options table expected, got %s"):format(who, type(opts)), level + 1)
  end
  for k in pairs(opts) do
    if defaults[k] == nil and k ~= "params" then
      error(("%s: unknown option '%s'"):format(who, tostring(k)), level + 1)
    end
  end
  return opts
end

-- A copy of an option value (betas is a table: groups must not share it).
local function copy_value(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for i, x in ipairs(v) do c[i] = x end
  return c
end

-- Add a parameter group (its options over the defaults); errors are
-- raised at `level` (counted from the caller of add_group).
local function add_group(self, group, level)
  if type(group) ~= "table" or type(group.params) ~= "table" then
    error("a parameter group is a table with a 'params' array", level + 1)
  end
  local g = { params = {} }
  for k, v in pairs(self.defaults) do g[k] = copy_value(v) end
  for k, v in pairs(check_options(group, self.defaults, self.name, level + 1)) do
    if k ~= "params" then g[k] = copy_value(v) end
  end
  local msg = self.validate(g)
  if msg then error(msg, level + 1) end
  local seen = {}
  for _, other in ipairs(self.param_groups) do
    for _, p in ipairs(other.params) do seen[p] = "group" end
  end
  for i, p in ipairs(group.params) do
    if not lunet.is_tensor(p) then
      error(("%s: parameter %d is not a tensor (got %s)"):format(self.name, i, type(p)), level + 1)
    end
    if not p.is_leaf then error("can't optimize a non-leaf Tensor", level + 1) end
    if seen[p] == "group" then
      error("some parameters appear in more than one parameter group", level + 1)
    elseif seen[p] then
      error("optimizer contains a parameter group with duplicate parameters", level + 1)
    end
    seen[p] = true
    g.params[i] = p
  end
  self.param_groups[#self.param_groups + 1] = g
end

--- Optimizer.class(name, spec) -> a class: cls(params, opts) makes one.
function Optimizer.class(name, spec)
  local function construct(cls, params, opts)
    if type(params) ~= "table" or lunet.is_tensor(params) then
      error(("bad argument #1 to '%s' (table of tensors expected, got %s)"):format(
        name, lunet.is_tensor(params) and "a single tensor" or type(params)), 2)
    end
    local self = setmetatable({ defaults = {}, param_groups = {}, state = {} }, cls)
    for k, v in pairs(spec.defaults) do self.defaults[k] = v end
    for k, v in pairs(check_options(opts, spec.defaults, name, 2)) do self.defaults[k] = v end
    local groups = params
    if params[1] == nil or lunet.is_tensor(params[1]) then groups = { { params = params } } end
    if #groups == 0 or (#groups == 1 and #groups[1].params == 0) then
      error(name .. " got an empty parameter list", 2)
    end
    for _, g in ipairs(groups) do add_group(self, g, 2) end
    return self
  end
  local cls = setmetatable({ name = name }, { __index = Optimizer, __call = construct })
  cls.__index = cls
  cls.validate, cls.init_state, cls.update = spec.validate, spec.init_state, spec.update
  classes[cls] = true
  return cls
end

--- opt:add_param_group({params={...}, lr=...})
function Optimizer:add_param_group(group)
  check(self, "add_param_group")
  add_group(self, group, 2)
end

-- ---- training ----

--- opt:zero_grad([set_to_none=true]): drop every parameter's grad (or
-- zero it in place with set_to_none=false).
function Optimizer:zero_grad(set_to_none)
  check(self, "zero_grad")
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if set_to_none == false then
        if p.grad ~= nil then p.grad:zero_() end
      else
        p.grad = nil
      end
    end
  end
end

--- opt:step([closure]) -> closure's result: one update of every parameter
-- that has a grad, with grad mode off. The closure (which re-evaluates the
-- loss and calls backward) runs first, with grad mode on.
function Optimizer:step(closure)
  check(self, "step")
  local loss
  if closure ~= nil then loss = lunet.enable_grad(closure) end
  lunet.no_grad(function()
    for _, g in ipairs(self.param_groups) do
      for _, p in ipairs(g.params) do
        local grad = p.grad
        if grad ~= nil then
          local state = self.state[p]
          if state == nil then
            state = self.init_state(p, g)
            self.state[p] = state
          end
          self.update(g, p, grad, state)
        end
      end
    end
  end)
  return loss
end

-- ---- state dicts ----

--- opt:state_dict() -> {state = {[i] = {...}}, param_groups = {{..., params = {i, ...}}}}
function Optimizer:state_dict()
  check(self, "state_dict")
  local sd, n = { state = {}, param_groups = {} }, 0
  for gi, g in ipairs(self.param_groups) do
    local packed = { params = {} }
    for k, v in pairs(g) do
      if k ~= "params" then packed[k] = copy_value(v) end
    end
    for _, p in ipairs(g.params) do
      n = n + 1
      packed.params[#packed.params + 1] = n
      local st = self.state[p]
      if st ~= nil then
        local copy = {}
        for k, v in pairs(st) do copy[k] = v end
        sd.state[n] = copy
      end
    end
    sd.param_groups[gi] = packed
  end
  return sd
end

-- The state entry `saved` for parameter p, converted: tensors become
-- copies in p's dtype, device and layout; step stays a number.
local function load_entry(p, saved, index)
  if type(saved) ~= "table" then
    error(("state for parameter %d must be a table"):format(index), 3)
  end
  local st = {}
  for k, v in pairs(saved) do
    if lunet.is_tensor(v) then
      if k == "step" then
        st[k] = v:item()
      else
        local ok, t = pcall(C.state_like, p, v)
        if not ok then error(("state '%s' of parameter %d: %s"):format(k, index, t), 3) end
        st[k] = t
      end
    else
      st[k] = v
    end
  end
  if type(st.step) == "number" then st.step = math.tointeger(st.step) or st.step end
  return st
end

--- opt:load_state_dict(sd): restore the state and the groups' options.
function Optimizer:load_state_dict(sd)
  check(self, "load_state_dict")
  if type(sd) ~= "table" or type(sd.state) ~= "table" or type(sd.param_groups) ~= "table" then
    error("bad argument #1 to 'load_state_dict' "
          .. "(a table with 'state' and 'param_groups' expected)", 2)
  end
  local saved_groups = sd.param_groups
  if #saved_groups ~= #self.param_groups then
    error("loaded state dict has a different number of parameter groups", 2)
  end
  local by_index, groups = {}, {}
  for gi, g in ipairs(self.param_groups) do
    local sg = saved_groups[gi]
    if type(sg) ~= "table" or type(sg.params) ~= "table" or #sg.params ~= #g.params then
      error("loaded state dict contains a parameter group "
            .. "that doesn't match the size of optimizer's group", 2)
    end
    local ng = { params = g.params }
    for k, v in pairs(g) do
      if k ~= "params" then
        if sg[k] ~= nil then ng[k] = copy_value(sg[k]) else ng[k] = v end
      end
    end
    local msg = self.validate(ng)
    if msg then error("loaded state dict: " .. msg, 2) end
    for i, index in ipairs(sg.params) do by_index[index] = g.params[i] end
    groups[gi] = ng
  end
  local state = {}
  for index, saved in pairs(sd.state) do
    local p = by_index[index]
    if p == nil then
      error(("loaded state dict has state for parameter %s, which no group lists")
            :format(tostring(index)), 2)
    end
    state[p] = load_entry(p, saved, index)
  end
  self.param_groups, self.state = groups, state
end

return Optimizer
