--[[
demo_bn.lua -- a small model with batch normalisation, trained for a few
steps on random data; `scripts/demo` runs it with `build/lunet`.

The layers are written here in Lua on lunet's tensors and autograd: Norm
does what nn.BatchNorm1d does (normalise each feature with the batch's mean
and biased variance, keep running statistics for evaluation) until the
native BatchNorm modules land.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")

lunet.manual_seed(0)

-- y = x W^T + b, initialised as PyTorch's nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
local Linear = nn.Module:extend("Linear")
function Linear:__init(n_in, n_out)
  local bound = 1 / math.sqrt(n_in)
  self.weight = nn.Parameter((lunet.rand(n_out, n_in) * 2 - 1) * bound)
  self.bias = nn.Parameter((lunet.rand(n_out) * 2 - 1) * bound)
end
function Linear:forward(x) return x:matmul(self.weight:t()) + self.bias end
function Linear:extra_repr() return ("%d, %d"):format(self.weight:size(2), self.weight:size(1)) end

local ReLU = nn.Module:extend("ReLU")
function ReLU:forward(x) return x:relu() end

-- Batch normalisation of (N, C) input over N.
local Norm = nn.Module:extend("Norm")
function Norm:__init(c)
  self.weight = nn.Parameter(lunet.ones(c))
  self.bias = nn.Parameter(lunet.zeros(c))
  self.running_mean = lunet.zeros(c)   -- tensors that are not parameters: buffers
  self.running_var = lunet.ones(c)
  self.eps, self.momentum = 1e-5, 0.1
end
function Norm:forward(x)
  local mean, var = self.running_mean, self.running_var
  if self.training then
    mean, var = x:mean(1), x:var(1, { unbiased = false })
    local unbiased = x:var(1):detach()
    lunet.no_grad(function()
      self.running_mean:mul_(1 - self.momentum):add_(mean * self.momentum)
      self.running_var:mul_(1 - self.momentum):add_(unbiased * self.momentum)
    end)
  end
  return (x - mean) / (var + self.eps):sqrt() * self.weight + self.bias
end
function Norm:extra_repr() return tostring(self.weight:size(1)) end

-- Data: 8 features on very different scales; the target depends on them
-- through a fixed random linear map.
local n, features = 512, 8
local scale = lunet.tensor({ 0.1, 0.5, 1, 2, 5, 10, 50, 100 })
local x = lunet.randn(n, features) * scale + 3
local y = ((x - 3) / scale):matmul(lunet.randn(features, 1)) + lunet.randn(n, 1) * 0.1

local model = nn.Sequential(Norm(features), Linear(features, 16), ReLU(), Linear(16, 1))
print(model)
local count = 0
for _, p in ipairs(model:parameters()) do count = count + p:numel() end
print(("%d parameters; %d samples with feature scales from 0.1 to 100\n"):format(count, n))

local function mse(a, b) return ((a - b) ^ 2):mean() end

local opt = optim.SGD(model:parameters(), { lr = 0.01, momentum = 0.9 })
local batch = 64
for epoch = 1, 8 do
  local total = 0
  for start = 1, n, batch do
    local loss = mse(model(x:narrow(1, start, batch)), y:narrow(1, start, batch))
    opt:zero_grad()
    loss:backward()
    opt:step()
    total = total + loss:item()
  end
  print(("epoch %d  training loss %.4f"):format(epoch, total / (n / batch)))
end

model:eval()
lunet.no_grad(function()
  print(("\nevaluation loss (running statistics) %.4f"):format(mse(model(x), y):item()))
end)
print("running mean of the inputs (3 + noise):", model[1].running_mean)
