--[[
normalize.lua -- the Lua half of the embedding example (embed_bn.c): the
host runs this file once, then calls these functions with its tensors.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")

--- normalize(x) -> y: x (N, C) normalised per feature with a fresh
-- nn.BatchNorm1d in training mode (batch mean and biased variance).
function normalize(x)
  local bn = nn.BatchNorm1d(x:size(2), { dtype = x.dtype })
  return bn(x)
end

--- affine(x, a, b) -> a * x + b, a new tensor.
function affine(x, a, b)
  return x * a + b
end

--- z: a tensor made in Lua for the host to fetch.
z = lunet.arange(6):view(2, 3)
