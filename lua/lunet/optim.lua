--[[
lunet.optim -- optimizers with PyTorch's names, options and update rules.

  local opt = optim.SGD(model:parameters(), {lr=0.1, momentum=0.9})
  opt:zero_grad(); loss:backward(); opt:step()

`params` is an array of tensors, or of parameter groups
({params={...}, lr=...}) whose options override the defaults. Per-parameter
state (opt.state[p].momentum_buffer) is keyed by the tensor: lunet gives one
Lua object per tensor, and module:to() converts parameters in place, so the
optimizer keeps seeing a model's parameters after a conversion.
]]
local lunet = require("lunet")

local optim = {}

-- ---- the base class ----

local Optimizer = {}
Optimizer.__index = Optimizer
optim.Optimizer = Optimizer

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

-- Add a parameter group (its options over the defaults); errors are
-- raised at `level` (counted from the caller of add_group).
local function add_group(self, group, level)
  if type(group) ~= "table" or type(group.params) ~= "table" then
    error("a parameter group is a table with a 'params' array", level + 1)
  end
  local g = { params = {} }
  for k, v in pairs(self.defaults) do g[k] = v end
  for k, v in pairs(check_options(group, self.defaults, self.name, level + 1)) do
    if k ~= "params" then g[k] = v end
  end
  local msg = self.validate(g)
  if msg then error(msg, level + 1) end
  for i, p in ipairs(group.params) do
    if not lunet.is_tensor(p) then
      error(("%s: parameter %d is not a tensor (got %s)"):format(self.name, i, type(p)), level + 1)
    end
    g.params[i] = p
  end
  self.param_groups[#self.param_groups + 1] = g
end

-- A new optimizer of class `cls` over params, with `defaults` overridden
-- by opts; validate(group) returns a message for a bad option value.
-- Errors are raised at the caller of the class's constructor.
local function new_optimizer(cls, who, params, opts, defaults, validate)
  if type(params) ~= "table" then
    error(("bad argument #1 to '%s' (table of tensors expected, got %s)"):format(
      who, lunet.is_tensor(params) and "a single tensor" or type(params)), 3)
  end
  local self = setmetatable({ defaults = {}, param_groups = {}, state = {},
                              name = who, validate = validate }, cls)
  for k, v in pairs(defaults) do self.defaults[k] = v end
  for k, v in pairs(check_options(opts, defaults, who, 3)) do self.defaults[k] = v end
  local groups = (params[1] ~= nil and not lunet.is_tensor(params[1])) and params or { { params = params } }
  if #groups == 0 or (#groups == 1 and #groups[1].params == 0) then
    error(who .. " got an empty parameter list", 3)
  end
  for _, g in ipairs(groups) do add_group(self, g, 3) end
  return self
end

--- opt:add_param_group({params={...}, lr=...})
function Optimizer:add_param_group(group)
  add_group(self, group, 2)
end

--- opt:zero_grad([set_to_none=true]): clear (or zero) every parameter's grad.
function Optimizer:zero_grad(set_to_none)
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

-- ---- SGD ----

local SGD = {}
SGD.__index = SGD
optim.SGD = SGD

local sgd_defaults = { lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0,
                       nesterov = false, maximize = false }

local function sgd_validate(g)
  for _, k in ipairs{ "lr", "momentum", "dampening", "weight_decay" } do
    if type(g[k]) ~= "number" then
      return ("SGD: option '%s' must be a number, got %s"):format(k, type(g[k]))
    end
  end
  if g.lr < 0 then return "Invalid learning rate: " .. g.lr end
  if g.momentum < 0 then return "Invalid momentum value: " .. g.momentum end
  if g.weight_decay < 0 then return "Invalid weight_decay value: " .. g.weight_decay end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    return "Nesterov momentum requires a momentum and zero dampening"
  end
end

--- optim.SGD(params, {lr=1e-3, momentum=0, dampening=0, weight_decay=0,
--                      nesterov=false, maximize=false})
setmetatable(SGD, { __index = Optimizer, __call = function(cls, params, opts)
  local self = new_optimizer(cls, "SGD", params, opts, sgd_defaults, sgd_validate)
  return self   -- not a tail call: errors point at the caller
end })

-- PyTorch's SGD update for one parameter p with gradient d_p.
local function sgd_update(state, g, p, d_p)
  if g.maximize then d_p = -d_p end
  if g.weight_decay ~= 0 then d_p = d_p + p * g.weight_decay end
  if g.momentum ~= 0 then
    local buf = state.momentum_buffer
    if buf == nil then
      buf = d_p:clone()
      state.momentum_buffer = buf
    else
      buf:mul_(g.momentum):add_(d_p, { alpha = 1 - g.dampening })
    end
    if g.nesterov then d_p = d_p + buf * g.momentum else d_p = buf end
  end
  p:add_(d_p, { alpha = -g.lr })
end

--- opt:step([closure]): one update of every parameter that has a grad;
-- returns closure's result when a closure (re-evaluating the loss) is given.
function SGD:step(closure)
  local loss
  if closure then loss = closure() end
  lunet.no_grad(function()
    for _, g in ipairs(self.param_groups) do
      for _, p in ipairs(g.params) do
        local d_p = p.grad
        if d_p ~= nil then
          local state = self.state[p]
          if not state then
            state = {}
            self.state[p] = state
          end
          sgd_update(state, g, p, d_p)
        end
      end
    end
  end)
  return loss
end

return optim
