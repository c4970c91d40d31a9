--[[
train_ddp.lua -- data-parallel training of a small convolutional network
with SyncBatchNorm on the 8x8 digits (Debian's python3-sklearn ships them),
one process per share of each batch:

  OMPI_MCA_mpi_yield_when_idle=1 LUNET_NUM_THREADS=1 \
    mpirun --oversubscribe -np 2 build/lunet examples/train_ddp.lua [epochs]

(docs/DISTRIBUTED.md explains the flags and running on several machines;
without mpirun it trains as one process.) Every process reads the same
shuffled order (the loader's seed), takes its slice of each global batch
of 64, and normalizes with the statistics of the whole batch
(SyncBatchNorm); DistributedDataParallel starts every process from rank
0's weights and averages the gradients after each backward, so all
processes take the same steps and end with the same model, which the last
lines check.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")
local data = require("lunet.data")
local dist = require("lunet.dist")

dist.init()
local rank, world = dist.rank(), dist.world_size()
local epochs = tonumber(arg and arg[1]) or 5
local function say(fmt, ...)
  if rank == 0 then print(fmt:format(...)) end
end

local images, labels = assert(data.digits())
local train, test = data.train_test_split(labels:size(1), { test_fraction = 0.2, seed = 0 })
local train_set = data.TensorDataset(images:index_select(1, train), labels:index_select(1, train))
local test_x, test_y = images:index_select(1, test), labels:index_select(1, test)
local batch = 64
local loader = data.DataLoader(train_set, { batch_size = batch, shuffle = true, seed = 0,
                                            drop_last = true })
local per = batch // world        -- each process's share of a global batch

-- Different weights on every process: DDP replaces them with rank 0's.
lunet.manual_seed(rank)
local model = nn.Sequential(
  nn.Conv2d(1, 16, 3, { padding = 1 }), nn.BatchNorm2d(16), nn.ReLU(),
  nn.Conv2d(16, 32, 3, { padding = 1 }), nn.BatchNorm2d(32), nn.ReLU(),
  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
local ddp = nn.DistributedDataParallel(model)
local opt = optim.SGD(ddp:parameters(), { lr = 0.05, momentum = 0.9 })
local loss_fn = nn.CrossEntropyLoss()

say("%d process(es), %d images per process per step\n%s", world, per, tostring(ddp))
for epoch = 1, epochs do
  local start, sum, steps = lunet.clock(), 0, 0
  ddp:train()
  for _, xb, yb in loader:iter() do
    local x, y = xb:narrow(1, rank * per + 1, per), yb:narrow(1, rank * per + 1, per)
    opt:zero_grad()
    local loss = loss_fn(ddp(x), y)
    loss:backward()
    ddp:sync_gradients()
    opt:step()
    sum, steps = sum + loss:item(), steps + 1
  end
  local mean_loss = dist.all_reduce(lunet.tensor({ sum / steps }, { dtype = "float64" }),
                                    { op = "avg" }):item()
  ddp:eval()   -- running statistics; no collective in eval
  local correct = lunet.no_grad(function()
    return ddp(test_x):argmax(2):eq(test_y):sum():item()
  end)
  say("epoch %d  loss %.4f  test accuracy %.3f  (%.2f s)", epoch, mean_loss,
      correct / test_y:size(1), lunet.clock() - start)
end

-- Every process holds the same model: compare with rank 0's.
local diff = 0
for name, t in pairs(ddp:state_dict()) do   -- in the model's order on every process
  if name ~= "_metadata" then
    local theirs = t:clone()
    dist.broadcast(theirs, 0)
    diff = math.max(diff, (theirs:double() - t:double()):abs():max():item())
  end
end
diff = dist.all_reduce(lunet.tensor({ diff }, { dtype = "float64" }), { op = "max" }):item()
say("largest difference from rank 0's model over all processes: %g", diff)
dist.finalize()
