--[[
lunet.nn.batchnorm -- the BatchNorm family's classes (nn/batchnorm.h,
through lua/l_batchnorm.c), added to lunet.nn: BatchNorm, its lazy form,
BatchRenorm and FusedBatchNorm2d.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")

local B = lunet._batchnorm
local c_class = nn._c_class

--- The methods every BatchNorm module has (PyTorch's _NormBase).
local BatchNorm = c_class("_BatchNorm", nn.Module)
nn._BatchNorm = BatchNorm

--- bn:reset_running_stats(): running_mean 0, running_var 1,
-- num_batches_tracked 0 (when tracking); returns bn.
BatchNorm.reset_running_stats = B.reset_running_stats
--- bn:reset_parameters(): reset_running_stats(), weight 1, bias 0 (with
-- affine); nothing for a lazy module not yet initialised; returns bn.
BatchNorm.reset_parameters = B.reset_parameters

--- nn.BatchNorm1d(C [, opts]) nn.BatchNorm2d(C [, opts]) nn.BatchNorm3d(C [, opts])
--- nn.LazyBatchNorm1d([opts]) nn.LazyBatchNorm2d([opts]) nn.LazyBatchNorm3d([opts])
-- opts: eps=1e-5, momentum=0.1 (false: cumulative average), affine=true,
-- track_running_stats=true, dtype="float32", device="cpu",
-- virtual_batch_size=false (V: ghost BN, each block of V samples
-- normalized on its own in training), ema_update="internal" ("skip":
-- training leaves the running statistics and the counter alone).
--- nn.BatchRenorm1d(C [, opts]) nn.BatchRenorm2d(C [, opts]) nn.BatchRenorm3d(C [, opts])
-- the same options and rmax=3, dmax=5 (batch renormalization's clips).
for d = 1, 3 do
  local name = ("BatchNorm%dd"):format(d)
  nn[name] = c_class(name, BatchNorm, B.constructor(d))
  nn["Lazy" .. name] = c_class("Lazy" .. name, BatchNorm, B.constructor(d, "lazy"))
  local renorm = ("BatchRenorm%dd"):format(d)
  nn[renorm] = c_class(renorm, BatchNorm, B.constructor(d, "renorm"))
end

--- nn.FusedBatchNorm2d(C [, opts]), called as m(x [, addend]):
-- relu(bn(x) + addend), BatchNorm2d's options, buffers and state dict.
nn.FusedBatchNorm2d = c_class("FusedBatchNorm2d", BatchNorm, B.constructor(2, "fused"))

--- nn.functional.batch_norm(x, running_mean, running_var, weight, bias,
--                           training=false, momentum=0.1, eps=1e-5)
-- nil for an absent tensor; updates the running statistics in place when
-- training with them.
nn.functional.batch_norm = B.batch_norm
