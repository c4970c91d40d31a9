--[[
lunet.data.DataLoader -- batches of a dataset, in order or shuffled.

  local loader = data.DataLoader(ds, {batch_size=32, shuffle=true, seed=0})
  for epoch = 1, epochs do
    for i, xb, yb in loader:iter() do ... end     -- i = 1 .. #loader
  end

Options (PyTorch's names and defaults): batch_size=1, shuffle=false,
drop_last=false (drop a last batch smaller than batch_size), seed
(shuffle from lunet's generator keyed by this seed, leaving the global
generator alone; without it each epoch draws from the global generator,
so lunet.manual_seed governs it), collate (function(samples) -> fields,
for datasets without get_batch whose samples default collation cannot
stack).

With a seed, pass p's order depends only on (seed, p): loader.epoch is
the number of the next pass (1 at first), each iter() takes it and counts
it up, and loader:set_epoch(p) chooses it (to resume a run at pass p).
#loader is the number of batches. Datasets with get_batch (TensorDataset,
Subset of one) give each batch in one gather per field; others are read
sample by sample and collated: tensors stacked along a new first dim,
integers to an int64 tensor, other numbers to float64 (PyTorch's
default_collate), booleans to bool, strings to a table.
]]
local lunet = require("lunet")
local dataset = require("lunet.data.dataset")

local DataLoader = {}
DataLoader.__index = DataLoader
DataLoader.__name = "DataLoader"

local known = { batch_size = true, shuffle = true, drop_last = true, seed = true, collate = true }

--- data.DataLoader(ds, opts): the class is callable.
local function new(_, ds, opts)
  local ok, n = pcall(function() return #ds end)
  if not ok or math.type(n) ~= "integer" or (ds.get == nil and ds.get_batch == nil) then
    error("bad argument #1 to 'DataLoader' (dataset expected: a value with # and get(i))", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("bad argument #2 to 'DataLoader' (options table expected, got %s)")
          :format(type(opts)), 2)
  end
  for k in pairs(opts) do
    if not known[k] then error(("DataLoader: unknown option '%s'"):format(tostring(k)), 2) end
  end
  local bs = opts.batch_size or 1
  if math.type(bs) ~= "integer" or bs <= 0 then
    error(("batch_size should be a positive integer value, but got batch_size=%s")
          :format(tostring(bs)), 2)
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error("DataLoader: seed must be an integer", 2)
  end
  if opts.collate ~= nil and type(opts.collate) ~= "function" then
    error("DataLoader: collate must be a function", 2)
  end
  return setmetatable({ dataset = ds, batch_size = bs, shuffle = opts.shuffle == true,
                        drop_last = opts.drop_last == true, seed = opts.seed,
                        collate = opts.collate, epoch = 1 }, DataLoader)
end

function DataLoader.__len(self)
  local n = #self.dataset
  if self.drop_last then return n // self.batch_size end
  return (n + self.batch_size - 1) // self.batch_size
end

--- loader:set_epoch(p): the next iter() makes pass p (its shuffle order).
function DataLoader:set_epoch(p)
  if math.type(p) ~= "integer" or p < 1 then
    error("bad argument #1 to 'set_epoch' (positive integer expected)", 2)
  end
  self.epoch = p
end

-- ---- default collation ----

local function stack(list)
  local parts = {}
  for k, t in ipairs(list) do parts[k] = t:unsqueeze(1) end
  return lunet.cat(parts, 1)
end

-- One field of every sample (list) as one batch value.
local function collate_field(list, field)
  local first = list[1]
  if lunet.is_tensor(first) then return stack(list) end
  local ty = type(first)
  if ty == "number" then
    local int = true
    for _, v in ipairs(list) do int = int and math.type(v) == "integer" end
    return lunet.tensor(list, { dtype = int and "int64" or "float64" })
  end
  if ty == "boolean" then return lunet.tensor(list, { dtype = "bool" }) end
  if ty == "string" then return list end
  error(("DataLoader: cannot collate field %d of type %s (give a collate function)")
        :format(field, ty), 0)
end

local function default_collate(samples)
  local out = {}
  for f = 1, samples[1].n do
    local list = {}
    for k, s in ipairs(samples) do list[k] = s[f] end
    out[f] = collate_field(list, f)
  end
  return table.unpack(out, 1, samples[1].n)
end

-- ---- iteration ----

-- The fields of the batch of samples at idx (an int64 tensor).
function DataLoader:fetch(idx)
  local ds = self.dataset
  if ds.get_batch ~= nil and self.collate == nil then return ds:get_batch(idx) end
  local samples = {}
  for k, i in ipairs(idx:tolist()) do samples[k] = table.pack(ds:get(i)) end
  return (self.collate or default_collate)(samples)
end

--- loader:iter() -> an iterator for `for i, field1, field2, ... in loader:iter()`.
function DataLoader:iter()
  local n, bs = #self.dataset, self.batch_size
  local order
  if self.shuffle then
    if self.seed ~= nil then
      order = dataset.seeded_randperm(n, self.seed, self.epoch)
    else
      order = lunet.randperm(n)
    end
  end
  self.epoch = self.epoch + 1
  local batches, b = #self, 0
  return function()
    if b >= batches then return nil end
    b = b + 1
    local start = (b - 1) * bs + 1
    local len = math.min(bs, n - start + 1)
    local idx = order and order:narrow(1, start, len) or lunet.arange(start, start + len)
    return b, self:fetch(idx)
  end
end

return setmetatable(DataLoader, { __call = new })
