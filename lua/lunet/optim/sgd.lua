--[[
lunet.optim.SGD -- stochastic gradient descent with PyTorch's options and
update rule (torch.optim.SGD, single-tensor form):

  optim.SGD(params, {lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                     nesterov=false, maximize=false})

  g = maximize and -grad or grad;  g = g + weight_decay * p
  buf = g at the first step, then momentum * buf + (1 - dampening) * g
  g = nesterov and g + momentum * buf or buf        (when momentum ~= 0)
  p = p - lr * g

State: momentum_buffer (with momentum). The update is one fused pass
(lunet._optim.sgd_step).
]]
local lunet = require("lunet")
local Optimizer = require("lunet.optim.optimizer")

local C = lunet._optim

local function validate(g)
  for _, k in ipairs{ "lr", "momentum", "dampening", "weight_decay" } do
    if type(g[k]) ~= "number" then
      return ("SGD: option '%s' must be a number, got %s"):format(k, type(g[k]))
    end
  end
  for _, k in ipairs{ "nesterov", "maximize" } do
    if type(g[k]) ~= "boolean" then
      return ("SGD: option '%s' must be a boolean, got %s"):format(k, type(g[k]))
    end
  end
  if g.lr < 0 then return "Invalid learning rate: " .. g.lr end
  if g.momentum < 0 then return "Invalid momentum value: " .. g.momentum end
  if g.weight_decay < 0 then return "Invalid weight_decay value: " .. g.weight_decay end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    return "Nesterov momentum requires a momentum and zero dampening"
  end
end

return Optimizer.class("SGD", {
  defaults = { lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0,
               nesterov = false, maximize = false },
  validate = validate,
  init_state = function() return {} end,
  update = function(g, p, grad, state)
    local buf = C.sgd_step(p, grad, state.momentum_buffer, g)
    if g.momentum ~= 0 then state.momentum_buffer = buf end
  end,
})
