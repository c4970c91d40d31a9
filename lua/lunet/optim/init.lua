--[[
lunet.optim -- optimizers with PyTorch's names, options and update rules.

  local opt = optim.SGD(model:parameters(), {lr=0.1, momentum=0.9})
  opt:zero_grad(); loss:backward(); opt:step()

  optim.SGD(params, opts)     lunet/optim/sgd.lua
  optim.Adam(params, opts)    lunet/optim/adam.lua
  optim.AdamW(params, opts)   lunet/optim/adam.lua
  opt:zero_grad([set_to_none=true])   opt:step([closure]) -> loss
  opt:add_param_group({params={...}, lr=...})
  opt:state_dict()   opt:load_state_dict(sd)       lunet/optim/optimizer.lua
  optim.flatten_state_dict / optim.unflatten_state_dict: an optimizer's
      state in a lunet.save checkpoint          lunet/optim/checkpoint.lua
  optim.Optimizer.class(name, spec): a new optimizer class
]]
local adam = require("lunet.optim.adam")
local checkpoint = require("lunet.optim.checkpoint")

return {
  Optimizer = require("lunet.optim.optimizer"),
  SGD = require("lunet.optim.sgd"),
  Adam = adam.Adam,
  AdamW = adam.AdamW,
  flatten_state_dict = checkpoint.flatten_state_dict,
  unflatten_state_dict = checkpoint.unflatten_state_dict,
}
