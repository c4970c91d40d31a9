--[[
lunet.nn.ddp -- nn.DistributedDataParallel: data-parallel training over a
process group (lunet.dist), as torch.nn.parallel.DistributedDataParallel.

  local ddp = nn.DistributedDataParallel(model, {group=g, bucket_cap_mb=25})
  local loss = loss_fn(ddp(x), y)     -- ddp(x) is model(x)
  opt:zero_grad()
  loss:backward()
  ddp:sync_gradients()                -- average the gradients over the group
  opt:step()

Construction broadcasts the model's parameters and buffers from the group's
rank 0 (one broadcast per dtype), so every process starts from the same
state. lunet's autograd has no hooks that run after a backward, so the
training loop calls ddp:sync_gradients() after loss:backward(): it averages
every gradient over the group with bucketed all-reduces (one collective per
bucket of bucket_cap_mb, a handful per step; dist.all_reduce_coalesced).
A parameter that requires grad but got none gets a zero gradient first, so
that every process reduces the same list.

Everything else goes to the model: ddp:parameters(), ddp:train(),
ddp:state_dict() (its keys are the model's, without PyTorch's "module."
prefix, so a checkpoint loads into the bare model), ddp.fc1, ... ddp.module
is the model.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")
local dist = require("lunet.dist")

local DDP = {}
local meta = {}

-- Methods of the model called on the wrapper run on the model; one that
-- returns the model (train, eval, to) returns the wrapper instead.
function meta.__index(self, k)
  local own = DDP[k]
  if own ~= nil then return own end
  local model = rawget(self, "module")
  local v = model[k]
  if type(v) ~= "function" then return v end
  return function(first, ...)
    if first ~= self then return v(first, ...) end
    local r = table.pack(v(model, ...))
    if r.n == 1 and r[1] == model then return self end
    return table.unpack(r, 1, r.n)
  end
end

-- ddp.sync_gradients() gets "bad argument #1 to 'sync_gradients' ...".
local check = lunet._self_checker({ [meta] = true }, "DistributedDataParallel", "ddp")

function meta.__newindex(self, k, v) rawget(self, "module")[k] = v end

function meta.__call(self, ...) return rawget(self, "module")(...) end

function meta.__tostring(self)
  local inner = tostring(rawget(self, "module")):gsub("\n", "\n  ")
  return "DistributedDataParallel(\n  (module): " .. inner .. "\n)"
end

-- Overwrite `tensors` with those of global rank src, one broadcast per
-- dtype and device: each kind is packed into one flat tensor in order.
local function broadcast_coalesced(tensors, src, group)
  local kinds, order = {}, {}
  for _, t in ipairs(tensors) do
    local k = t.dtype .. "@" .. t.device
    if not kinds[k] then
      kinds[k] = {}
      order[#order + 1] = k
    end
    table.insert(kinds[k], t)
  end
  lunet.no_grad(function()
    for _, k in ipairs(order) do
      local list, flat = kinds[k], {}
      for i, t in ipairs(list) do flat[i] = t:detach():reshape(-1) end
      local buf = lunet.cat(flat, 1)
      dist.broadcast(buf, src, { group = group })
      local at = 1
      for _, t in ipairs(list) do
        t:detach():copy_(buf:narrow(1, at, t:numel()):view_as(t))
        at = at + t:numel()
      end
    end
  end)
end

local option_names = { group = true, bucket_cap_mb = true }

--- nn.DistributedDataParallel(model [, {group=g, bucket_cap_mb=25}])
function nn.DistributedDataParallel(model, opts)
  if not nn.is_module(model) then
    error(("bad argument #1 to 'DistributedDataParallel' (lunet.Module expected, got %s)"):format(
      type(model)), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("bad argument #2 to 'DistributedDataParallel' (options table expected, got %s)"):format(
      type(opts)), 2)
  end
  for k in pairs(opts) do
    if not option_names[k] then
      error(("DistributedDataParallel: unknown option '%s'"):format(tostring(k)), 2)
    end
  end
  local self = setmetatable({ module = model, process_group = opts.group,
                              bucket_cap_mb = opts.bucket_cap_mb or 25 }, meta)
  local states = model:parameters()
  for _, b in ipairs(model:buffers()) do states[#states + 1] = b end
  local src = opts.group and dist.get_global_rank(opts.group, 0) or 0
  broadcast_coalesced(states, src, opts.group)
  return self
end

--- ddp:sync_gradients() -> the number of collectives issued: every
-- gradient of the model's parameters that require grad becomes its average
-- over the group. Call it after loss:backward(), before the optimizer step.
function DDP:sync_gradients()
  check(self, "sync_gradients")
  local grads = {}
  for _, p in ipairs(rawget(self, "module"):parameters()) do
    if p.requires_grad then
      if p.grad == nil then p.grad = lunet.zeros_like(p) end
      grads[#grads + 1] = p.grad
    end
  end
  return dist.all_reduce_coalesced(grads, { op = "avg", group = rawget(self, "process_group"),
                                            bucket_cap_mb = rawget(self, "bucket_cap_mb") })
end

--- ddp:forward(...) is model(...), as ddp(...).
function DDP:forward(...) return rawget(self, "module")(...) end
