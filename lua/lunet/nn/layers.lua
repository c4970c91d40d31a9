--[[
lunet.nn.layers -- the layers and losses a training script needs
(nn/layers.h, through lua/l_layers.c), added to lunet.nn: the classes
nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Dropout, nn.MaxPool2d,
nn.AdaptiveAvgPool2d, nn.CrossEntropyLoss, nn.MSELoss and their
nn.functional forms. PyTorch's names, defaults and initialisation, with
Lua's conventions: dims and class indices are 1-based, None is false,
options come in a trailing table.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")

local L = lunet._layers
local c_class = nn._c_class
local F = nn.functional

--- nn.Linear(in_features, out_features [, {bias=true, dtype="float32", device="cpu"}])
-- weight (out, in) and bias (out), both uniform in +-1/sqrt(in_features).
nn.Linear = c_class("Linear", nn.Module, L.Linear)
--- m:reset_parameters(): draw weight and bias again; returns m.
nn.Linear.reset_parameters = L.reset_parameters

--- nn.Conv2d(in_channels, out_channels, kernel_size [, opts])
-- kernel_size, stride, padding, dilation: an int or {h, w}; padding may be
-- "same" or "valid". opts: stride=1, padding=0, dilation=1, groups=1,
-- bias=true, padding_mode="zeros", dtype, device.
nn.Conv2d = c_class("Conv2d", nn.Module, L.Conv2d)
nn.Conv2d.reset_parameters = L.reset_parameters

--- nn.ReLU([{inplace=false}]) (also nn.ReLU(true))
nn.ReLU = c_class("ReLU", nn.Module, L.ReLU)

--- nn.Flatten([{start_dim=2, end_dim=-1}]) (also nn.Flatten(start_dim, end_dim)):
-- keeps the batch dim and flattens the rest by default.
nn.Flatten = c_class("Flatten", nn.Module, L.Flatten)

--- nn.Dropout([p=0.5] [, {p=0.5, inplace=false}]): identity in eval mode.
nn.Dropout = c_class("Dropout", nn.Module, L.Dropout)

--- nn.MaxPool2d(kernel_size [, {stride=kernel_size, padding=0, dilation=1, ceil_mode=false}])
nn.MaxPool2d = c_class("MaxPool2d", nn.Module, L.MaxPool2d)

--- nn.AdaptiveAvgPool2d(output_size): an int or {h, w}, false keeping the input's size.
nn.AdaptiveAvgPool2d = c_class("AdaptiveAvgPool2d", nn.Module, L.AdaptiveAvgPool2d)

--- nn.CrossEntropyLoss([{weight=nil, ignore_index=-100, reduction="mean"}]);
-- loss(logits, target) with 1-based class indices in target.
nn.CrossEntropyLoss = c_class("CrossEntropyLoss", nn.Module, L.CrossEntropyLoss)

--- nn.MSELoss([{reduction="mean"}]); loss(input, target).
nn.MSELoss = c_class("MSELoss", nn.Module, L.MSELoss)

--- F.linear(x, weight [, bias]): x @ weight^T + bias.
F.linear = L.linear
--- F.conv2d(x, weight [, bias] [, {stride=1, padding=0, dilation=1, groups=1}])
F.conv2d = L.conv2d
--- F.relu(x [, inplace]): with inplace, x is overwritten and returned.
F.relu = L.relu
--- F.dropout(x [, p=0.5] [, {p, training=true, inplace=false}])
F.dropout = L.dropout
--- F.max_pool2d(x, kernel_size [, {stride=kernel_size, padding=0, dilation=1, ceil_mode=false}])
F.max_pool2d = L.max_pool2d
--- F.adaptive_avg_pool2d(x, output_size)
F.adaptive_avg_pool2d = L.adaptive_avg_pool2d
--- F.log_softmax(x, dim), F.softmax(x, dim)
F.log_softmax = L.log_softmax
F.softmax = L.softmax
--- F.cross_entropy(logits, target [, {weight=nil, ignore_index=-100, reduction="mean"}])
-- logits (N, C), (C) or (N, C, d1, ...); target int64 of 1-based class
-- indices, (N), () or (N, d1, ...). reduction "mean", "sum" or "none".
F.cross_entropy = L.cross_entropy
--- F.mse_loss(input, target [, {reduction="mean"}])
F.mse_loss = L.mse_loss

--- F.flatten(x [, start_dim=1 [, end_dim=-1]]): torch.flatten (all dims by default).
function F.flatten(x, start_dim, end_dim)
  return x:flatten(start_dim, end_dim)
end
