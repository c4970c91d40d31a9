--[[
lunet.data -- datasets and batches for training loops.

  local data = require("lunet.data")                        -- or lunet.data
  local images, labels = assert(data.digits())              -- lunet/data/digits.lua
  local train, test = data.train_test_split(labels:size(1), {test_fraction=0.2, seed=0})
  local ds = data.TensorDataset(images:index_select(1, train), labels:index_select(1, train))
  local loader = data.DataLoader(ds, {batch_size=64, shuffle=true, seed=0})
  for i, xb, yb in loader:iter() do ... end                 -- lunet/data/loader.lua

  data.TensorDataset(x, y, ...)  data.Subset(ds, indices)   -- lunet/data/dataset.lua
  data.DataLoader(ds, {batch_size=1, shuffle=false, drop_last=false, seed=nil, collate=nil})
  data.train_test_split(n, {test_fraction=0.2, seed=0, shuffle=true}) -> train, test
  data.digits({path=...}) -> images, labels (1..10), digits (0..9) | nil, message

A dataset is any value with # and get(i) (1-based), optionally
get_batch(idx) for one-call batches; see lunet/data/dataset.lua.
]]
local dataset = require("lunet.data.dataset")

return {
  TensorDataset = dataset.TensorDataset,
  Subset = dataset.Subset,
  DataLoader = require("lunet.data.loader"),
  train_test_split = dataset.train_test_split,
  digits = require("lunet.data.digits"),
}
