--[[
lunet.nn.syncbatchnorm -- nn.SyncBatchNorm (nn/syncbatchnorm.h, through
lua/l_syncbn.c), added to lunet.nn.

  local bn = nn.SyncBatchNorm(C, {process_group=g, eps=, momentum=, affine=,
                                  track_running_stats=, dtype=, device=})
  model = nn.SyncBatchNorm.convert_sync_batchnorm(model [, g])

In training, on a process group of more than one process, the statistics
are those of the group's global batch (see docs/DISTRIBUTED.md); otherwise
it is a BatchNorm. Any input of at least 2 dims.
]]
local nn = require("lunet.nn")
local lunet = require("lunet")

local S = lunet._syncbn
local B = lunet._batchnorm

-- Raise "bad argument #n to 'fn' (... process group expected ...)" at the
-- caller's caller unless g is nil or a process group.
local function check_group(g, n, fn, what)
  local mt = getmetatable(g)
  if g ~= nil and not (type(mt) == "table" and mt.__name == "lunet.ProcessGroup") then
    error(("bad argument #%d to '%s' (%sprocess group expected, got %s)"):format(
      n, fn, what, type(g)), 3)
  end
end

--- nn.SyncBatchNorm(C [, opts]): BatchNorm's options plus process_group
-- (a group from dist.new_group; absent: the whole world). bn.process_group
-- may be reassigned; it takes effect at the next forward.
local function new(cls, num_features, opts, ...)
  if select("#", ...) > 0 then
    error("bad argument #3 to 'SyncBatchNorm' (no more arguments expected)", 2)
  end
  local rest, group = {}, nil
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("bad argument #2 to 'SyncBatchNorm' (options table expected, got %s)"):format(
        type(opts)), 2)
    end
    for k, v in pairs(opts) do
      if k == "process_group" then group = v else rest[k] = v end
    end
  end
  check_group(group, 2, "SyncBatchNorm", "option 'process_group': ")
  -- a BatchNorm1d made from the options checks them as BatchNorm's do
  local ok, bn = pcall(nn.BatchNorm1d, num_features, rest)
  if not ok then
    error((tostring(bn):gsub("^[^:]*:%d+: ", ""):gsub("to '[^']*'", "to 'SyncBatchNorm'", 1)), 2)
  end
  local m = S.from(bn, group)
  if group ~= nil then m.process_group = group end
  return m
end

local SyncBatchNorm = nn._c_class("SyncBatchNorm", nn._BatchNorm, new)
nn.SyncBatchNorm = SyncBatchNorm

-- The module's process_group field (a Lua attribute, as PyTorch's plain
-- attribute) is handed to C at each forward, so that assigning it works.
function SyncBatchNorm:forward(x, ...)
  if select("#", ...) > 0 then
    error(("SyncBatchNorm.forward expects 1 input, got %d"):format(select("#", ...) + 1), 2)
  end
  S.set_group(self, self.process_group)
  return nn.Module.forward(self, x)
end

--- nn.SyncBatchNorm.convert_sync_batchnorm(module [, process_group]) -> module
-- Every BatchNorm1d/2d/3d (and SyncBatchNorm) in module's tree becomes a
-- SyncBatchNorm on process_group (absent: the world) sharing its weight,
-- bias and buffers, in its training mode, under the same child name. A
-- BatchNorm given directly gives a new SyncBatchNorm; anything else is
-- returned itself, converted in place.
function SyncBatchNorm.convert_sync_batchnorm(module, process_group)
  if not nn.is_module(module) then
    error(("bad argument #1 to 'convert_sync_batchnorm' (module expected, got %s)"):format(
      type(module)), 2)
  end
  check_group(process_group, 2, "convert_sync_batchnorm", "")
  local out = module
  if B.is_batchnorm(module) or S.is_sync_batchnorm(module) then
    out = S.from(module, process_group)
    if process_group ~= nil then out.process_group = process_group end
  end
  for name, child in module:named_children() do
    out:add_module(name, SyncBatchNorm.convert_sync_batchnorm(child, process_group))
  end
  return out
end
