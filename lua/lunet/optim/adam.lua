--[[
lunet.optim.Adam and lunet.optim.AdamW -- PyTorch's update rules
(torch.optim.Adam / AdamW, single-tensor form):

  optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0,
                      amsgrad=false, maximize=false,
                      decoupled_weight_decay=false})
  optim.AdamW(params, {...same, weight_decay=1e-2})  -- decoupled decay

  step = step + 1;  g = maximize and -grad or grad
  weight decay: AdamW p = p * (1 - lr * weight_decay), Adam g = g + weight_decay * p
  m = m + (1 - beta1) * (g - m)          v = beta2 * v + (1 - beta2) * g * g
  (amsgrad: vmax = max(vmax, v), used instead of v below)
  p = p - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)

State: step (a number), exp_avg, exp_avg_sq, and max_exp_avg_sq with
amsgrad. The update is one fused pass (lunet._optim.adam_step).
]]
local lunet = require("lunet")
local Optimizer = require("lunet.optim.optimizer")

local C = lunet._optim

-- validate(group) for Adam or AdamW: PyTorch's messages, 1-based beta index.
local function validator(name)
  return function(g)
    for _, k in ipairs{ "lr", "eps", "weight_decay" } do
      if type(g[k]) ~= "number" then
        return ("%s: option '%s' must be a number, got %s"):format(name, k, type(g[k]))
      end
    end
    for _, k in ipairs{ "amsgrad", "maximize", "decoupled_weight_decay" } do
      if type(g[k]) ~= "boolean" then
        return ("%s: option '%s' must be a boolean, got %s"):format(name, k, type(g[k]))
      end
    end
    local b = g.betas
    if type(b) ~= "table" or #b ~= 2 or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
      return name .. ": option 'betas' must be a table of two numbers"
    end
    if not (g.lr >= 0) then return "Invalid learning rate: " .. g.lr end
    if not (g.eps >= 0) then return "Invalid epsilon value: " .. g.eps end
    for i = 1, 2 do
      if not (b[i] >= 0 and b[i] < 1) then
        return ("Invalid beta parameter at index %d: %s"):format(i, b[i])
      end
    end
    if not (g.weight_decay >= 0) then return "Invalid weight_decay value: " .. g.weight_decay end
  end
end

local function init_state(p, g)
  return { step = 0, exp_avg = C.state_like(p), exp_avg_sq = C.state_like(p),
           max_exp_avg_sq = g.amsgrad and C.state_like(p) or nil }
end

local function update(g, p, grad, state)
  if g.amsgrad and state.max_exp_avg_sq == nil then   -- amsgrad switched on later
    state.max_exp_avg_sq = C.state_like(p)
  end
  state.step = state.step + 1
  C.adam_step(p, grad, state, g)
end

local function class(name, weight_decay, decoupled)
  return Optimizer.class(name, {
    defaults = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = weight_decay,
                 amsgrad = false, maximize = false, decoupled_weight_decay = decoupled },
    validate = validator(name),
    init_state = init_state,
    update = update,
  })
end

return { Adam = class("Adam", 0, false), AdamW = class("AdamW", 1e-2, true) }
