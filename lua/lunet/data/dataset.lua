--[[
lunet.data's datasets. A dataset is any value with a length (#ds, through
__len for objects) and ds:get(i) -> the fields of sample i (1-based), such
as an image and its label. A dataset may also have ds:get_batch(idx) ->
the fields of the samples whose indices the int64 tensor idx holds, each
field stacked along a new first dim: DataLoader then fetches a batch in
one call instead of one get per sample.

  data.TensorDataset(x, y, ...)   sample i is x[i], y[i], ...
  data.Subset(ds, indices)        sample i is ds's sample indices[i]
  data.train_test_split(n, {test_fraction=0.2, seed=0, shuffle=true})
      -> train, test: int64 index tensors (1-based) splitting 1..n
]]
local lunet = require("lunet")

local M = {}

--- The permutation of 1..n drawn from the generator seeded with `seed`,
-- at stream `stream` (each stream has 2^32 counters to itself), leaving
-- lunet's global generator as it was.
function M.seeded_randperm(n, seed, stream)
  local saved = lunet.get_rng_state()
  lunet.set_rng_state({ seed = seed, offset = stream << 32 })
  local ok, perm = pcall(lunet.randperm, n)
  lunet.set_rng_state(saved)
  if not ok then error(perm, 2) end
  return perm
end

-- An int64 index tensor from a tensor or a table of integers.
local function index_tensor(idx, who)
  if lunet.is_tensor(idx) then
    if idx.dtype ~= "int64" or idx:dim() ~= 1 then
      error(("bad argument #2 to '%s' (1-D int64 index tensor expected)"):format(who), 3)
    end
    return idx
  end
  if type(idx) ~= "table" then
    error(("bad argument #2 to '%s' (index tensor or table expected, got %s)")
          :format(who, type(idx)), 3)
  end
  return lunet.tensor(idx, { dtype = "int64" }):view(-1)
end

-- ---- TensorDataset ----

local TensorDataset = {}
TensorDataset.__index = TensorDataset
TensorDataset.__len = function(self) return self.n end
TensorDataset.__name = "TensorDataset"

--- data.TensorDataset(x, y, ...): sample i is x[i], y[i], ... (views).
-- The tensors are detached: batches never carry autograd history.
function M.TensorDataset(...)
  local tensors = table.pack(...)
  if tensors.n == 0 then
    error("bad argument #1 to 'TensorDataset' (tensor expected, got no value)", 2)
  end
  for i = 1, tensors.n do
    local t = tensors[i]
    if not lunet.is_tensor(t) then
      error(("bad argument #%d to 'TensorDataset' (tensor expected, got %s)"):format(i, type(t)), 2)
    end
    if t:dim() == 0 then
      error(("bad argument #%d to 'TensorDataset' (a 0-dim tensor has no samples)"):format(i), 2)
    end
    if t:size(1) ~= tensors[1]:size(1) then error("Size mismatch between tensors", 2) end
    tensors[i] = t:detach()
  end
  tensors.n = nil
  return setmetatable({ tensors = tensors, n = tensors[1]:size(1) }, TensorDataset)
end

function TensorDataset:get(i)
  local out = {}
  for k, t in ipairs(self.tensors) do out[k] = t[i] end
  return table.unpack(out)
end

function TensorDataset:get_batch(idx)
  local out = {}
  for k, t in ipairs(self.tensors) do out[k] = t:index_select(1, idx) end
  return table.unpack(out)
end

-- ---- Subset ----

local Subset = {}
Subset.__index = Subset
Subset.__len = function(self) return #self.list end
Subset.__name = "Subset"

-- A Subset batches when its dataset does (set per object, so that
-- DataLoader's test `ds.get_batch ~= nil` tells the truth).
local function subset_get_batch(self, idx)
  return self.dataset:get_batch(self.indices:index_select(1, idx))
end

--- data.Subset(ds, indices): the samples of ds at indices (1-based; an
-- int64 tensor, such as train_test_split returns, or a table).
function M.Subset(ds, indices)
  local idx = index_tensor(indices, "Subset")
  local list, n = idx:tolist(), #ds
  for k, i in ipairs(list) do
    if i < 1 or i > n then
      error(("Subset: index %d (at %d) is out of range for a dataset of %d samples")
            :format(i, k, n), 2)
    end
  end
  local self = setmetatable({ dataset = ds, indices = idx, list = list }, Subset)
  if ds.get_batch ~= nil then self.get_batch = subset_get_batch end
  return self
end

function Subset:get(i)
  local j = self.list[i]
  if j == nil then
    error(("index %s is out of range for a Subset of %d samples")
          :format(tostring(i), #self.list), 2)
  end
  return self.dataset:get(j)
end

-- ---- train_test_split ----

--- data.train_test_split(n, {test_fraction=0.2, seed=0, shuffle=true})
-- -> train, test: the indices 1..n split in two int64 tensors, as
-- sklearn's train_test_split: ceil(test_fraction * n) test samples taken
-- first from a seeded permutation (lunet's generator, global state left
-- alone), the rest for training; without shuffle, the last ones test.
function M.train_test_split(n, opts)
  if math.type(n) ~= "integer" or n < 0 then
    error(("bad argument #1 to 'train_test_split' (non-negative integer expected, got %s)")
          :format(tostring(n)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "test_fraction" and k ~= "seed" and k ~= "shuffle" then
      error(("train_test_split: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local frac = opts.test_fraction or 0.2
  if type(frac) ~= "number" or frac < 0 or frac >= 1 then
    error(("test_fraction=%s should be in the range [0, 1)"):format(tostring(frac)), 2)
  end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("train_test_split: seed must be an integer", 2) end
  local n_test = math.ceil(frac * n)
  if n - n_test <= 0 then
    error(("With n_samples=%d and test_fraction=%s, the resulting train set will be empty")
          :format(n, frac), 2)
  end
  local order
  if opts.shuffle == false then
    order = lunet.arange(1, n + 1)
    return order:narrow(1, 1, n - n_test):clone(), order:narrow(1, n - n_test + 1, n_test):clone()
  end
  order = M.seeded_randperm(n, seed, 0)
  return order:narrow(1, n_test + 1, n - n_test):clone(), order:narrow(1, 1, n_test):clone()
end

return M
