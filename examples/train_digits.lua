--[[
train_digits.lua -- train a small convolutional network (or an MLP) with
batch normalization on the 8x8 handwritten digits that Debian's
python3-sklearn ships, checkpointing every epoch:

  build/lunet examples/train_digits.lua [options]     (scripts/demo runs it)

  --model cnn|mlp      cnn: three Conv2d-BatchNorm2d-ReLU blocks (default);
                       mlp: two Linear-BatchNorm1d-ReLU blocks
  --epochs N           train until epoch N (10)
  --batch-size N       images per step (32)
  --lr X               Adam's learning rate (0.002)
  --seed N             the weights' initialization and the shuffling (0)
  --checkpoint PATH    written after every epoch (digits_<model>.safetensors)
  --resume             continue from --checkpoint up to --epochs
  --threads N          CPU threads (1: batches of 8x8 images are too small
                       for more to pay, and one thread is not slowed down by
                       other busy processes as a team of threads waiting
                       for each other is)
  --device D           cpu (default), cuda or cuda:N: where the model, the
                       batches and Adam's state live; an error when CUDA is
                       not available
  --help

The 1797 images are split 80/20 into training and test sets with a fixed
seed. On a terminal each epoch draws a progress bar (step, loss, samples/s,
ETA); into a pipe or a log it prints one line per epoch. After each epoch
the test accuracy is printed and a checkpoint is saved (atomically): the
model's state dict, Adam's state, and in the metadata the epoch, the
global random generator's state (dropout draws from it) and the settings.
`--resume` restores all of it and sets the loader to the next epoch (the
seeded shuffle of epoch p depends only on the seed and p), so an
interrupted run resumed ends with the same parameters, to the bit, as an
uninterrupted one run with the same --threads (kernels may split their
work by the thread count) and --device. Checkpoints are written from the
CPU's copies, so one made on a GPU resumes on the CPU and the other way.

require("examples.train_digits") returns the pieces (build_model, the
data, the checkpoint functions, main) without running anything.
]]
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")
local data = require("lunet.data")
local progress = require("lunet.progress")

local M = {}

M.defaults = { model = "cnn", epochs = 10, batch_size = 32, lr = 0.002, seed = 0, threads = 1,
               device = "cpu" }

-- ---- the models ----

local function conv_block(c_in, c_out)
  return nn.Sequential(nn.Conv2d(c_in, c_out, 3, { padding = 1, bias = false }),
                       nn.BatchNorm2d(c_out), nn.ReLU())
end

local function linear_block(n_in, n_out)
  return nn.Sequential(nn.Linear(n_in, n_out, { bias = false }), nn.BatchNorm1d(n_out), nn.ReLU())
end

--- M.build_model(kind) -> a fresh model of kind "cnn" or "mlp" for
-- (N, 1, 8, 8) images, giving (N, 10) logits. The weights come from the
-- global generator. The state-dict keys are those of
-- scripts/export_torch_digits.py's PyTorch model ("1.1.weight", ...).
function M.build_model(kind)
  if kind == "cnn" then
    return nn.Sequential(
      conv_block(1, 16), conv_block(16, 16), nn.MaxPool2d(2),   -- 16 x 4 x 4
      conv_block(16, 32), nn.MaxPool2d(2),                      -- 32 x 2 x 2
      nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 2 * 2, 10))
  elseif kind == "mlp" then
    return nn.Sequential(
      nn.Flatten(), linear_block(64, 128), linear_block(128, 64),
      nn.Dropout(0.25), nn.Linear(64, 10))
  end
  error(("unknown model '%s' (cnn or mlp)"):format(tostring(kind)), 2)
end

-- ---- the data ----

--- M.load_data() -> train_set, test_x, test_y: the digits split 80/20
-- with seed 0 (scikit-learn's train_test_split); nil, message when the
-- data set is missing.
function M.load_data()
  local images, labels = data.digits()
  if not images then return nil, labels end
  local train, test = data.train_test_split(labels:size(1), { test_fraction = 0.2, seed = 0 })
  local train_set = data.TensorDataset(images:index_select(1, train), labels:index_select(1, train))
  return train_set, images:index_select(1, test), labels:index_select(1, test)
end

--- M.accuracy(model, x, y) -> correct, total: eval-mode predictions (x
-- and y on the model's device).
function M.accuracy(model, x, y)
  model:eval()
  local correct = lunet.no_grad(function() return model(x):argmax(2):eq(y):sum():item() end)
  return correct, y:size(1)
end

-- ---- checkpoints ----

-- The settings that decide a run's course, kept in the checkpoint.
local run_settings = { "model", "batch_size", "lr", "seed" }

--- M.save_checkpoint(path, cfg, epoch, model, opt) -> true | nil, message:
-- the model's state dict, the optimizer's state under "optim.", and
-- metadata (epoch, the generator's state, cfg's run settings as text).
function M.save_checkpoint(path, cfg, epoch, model, opt)
  local rng = lunet.get_rng_state()
  local meta = { epoch = ("%d"):format(epoch), rng_seed = ("%d"):format(rng.seed),
                 rng_offset = ("%d"):format(rng.offset) }
  for _, k in ipairs(run_settings) do
    meta[k] = math.type(cfg[k]) == "float" and ("%.17g"):format(cfg[k]) or tostring(cfg[k])
  end
  local t = optim.flatten_state_dict(opt:state_dict(), "optim.", model:state_dict(), meta)
  return lunet.save(path, t, { metadata = meta })
end

--- M.read_checkpoint(path) -> tensors, metadata, settings | nil, message:
-- the file, and its run settings (model, batch_size, lr, seed) as values.
function M.read_checkpoint(path)
  local t, meta = lunet.load(path)
  if not t then return nil, meta end
  local settings = {}
  for _, k in ipairs({ "epoch", "rng_seed", "rng_offset", table.unpack(run_settings) }) do
    local s = meta[k]
    local v = k == "model" and s or tonumber(s)
    if v == nil then return nil, ("%s: not a train_digits checkpoint (no '%s')"):format(path, k) end
    settings[k] = math.tointeger(v) or v
  end
  return t, meta, settings
end

--- M.restore(t, meta, model, opt, loader) -> epoch: put the model, the
-- optimizer, the generator and the loader where the checkpoint's run was
-- at the end of its last epoch (t and meta as read_checkpoint returns).
function M.restore(t, meta, model, opt, loader)
  local osd, model_sd = optim.unflatten_state_dict(t, meta, "optim.")
  model:load_state_dict(model_sd)
  opt:load_state_dict(osd)
  lunet.set_rng_state({ seed = math.tointeger(tonumber(meta.rng_seed)),
                        offset = math.tointeger(tonumber(meta.rng_offset)) })
  local epoch = math.tointeger(tonumber(meta.epoch))
  loader:set_epoch(epoch + 1)
  return epoch
end

-- ---- the command line ----

local usage = [[
usage: train_digits.lua [--model cnn|mlp] [--epochs N] [--batch-size N] [--lr X]
                        [--seed N] [--checkpoint PATH] [--resume] [--threads N]
                        [--device cpu|cuda|cuda:N]]

-- Option name -> {field, kind}: kind "int" (positive), "number"
-- (positive), "string", or "flag" (takes no value).
local options = {
  ["--model"] = { "model", "string" }, ["--epochs"] = { "epochs", "int" },
  ["--batch-size"] = { "batch_size", "int" }, ["--lr"] = { "lr", "number" },
  ["--seed"] = { "seed", "int" }, ["--checkpoint"] = { "checkpoint", "string" },
  ["--resume"] = { "resume", "flag" }, ["--threads"] = { "threads", "int" },
  ["--device"] = { "device", "string" }, ["--help"] = { "help", "flag" },
}

--- M.parse_args(argv) -> cfg, given | nil, message: the options given
-- (`given[field]` is true for each) over the defaults. --opt=value works too.
function M.parse_args(argv)
  local cfg, given, i = {}, {}, 1
  for k, v in pairs(M.defaults) do cfg[k] = v end
  while i <= #argv do
    local a = argv[i]
    local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local spec = options[name]
    if not spec then return nil, ("unknown option '%s'\n%s"):format(a, usage) end
    local field, kind = spec[1], spec[2]
    if kind == "flag" then
      if value then return nil, ("option '%s' takes no value"):format(name) end
      cfg[field] = true
    else
      if not value then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, ("option '%s' needs a value"):format(name) end
      end
      if kind == "int" then
        local n = math.tointeger(tonumber(value))
        if not n or n < (field == "seed" and 0 or 1) then
          return nil, ("option '%s' needs a %s integer, got '%s'")
                      :format(name, field == "seed" and "non-negative" or "positive", value)
        end
        value = n
      elseif kind == "number" then
        local x = tonumber(value)
        if not x or x <= 0 then
          return nil, ("option '%s' needs a positive number, got '%s'"):format(name, value)
        end
        value = x + 0.0
      end
      cfg[field] = value
    end
    given[field] = true
    i = i + 1
  end
  if cfg.model ~= "cnn" and cfg.model ~= "mlp" then
    return nil, ("unknown model '%s' (cnn or mlp)"):format(cfg.model)
  end
  if cfg.device ~= "cpu" and not cfg.device:match("^cuda$") and not cfg.device:match("^cuda:%d+$") then
    return nil, ("unknown device '%s' (cpu, cuda or cuda:N)"):format(cfg.device)
  end
  return cfg, given
end

-- On --resume, the checkpoint's settings replace the defaults; one given
-- on the command line that differs from the checkpoint's is an error
-- (the run could not end where an uninterrupted one would).
local function adopt_settings(cfg, given, settings, path)
  for _, k in ipairs(run_settings) do
    if given[k] and cfg[k] ~= settings[k] then
      return nil, ("--%s %s differs from %s's %s; resume with the checkpoint's settings")
                  :format((k:gsub("_", "-")), tostring(cfg[k]), path, tostring(settings[k]))
    end
    cfg[k] = settings[k]
  end
  return true
end

local function count_parameters(model)
  local n = 0
  for _, p in ipairs(model:parameters()) do n = n + p:numel() end
  return n
end

--- M.main(argv) -> 0 on success, or 1 after printing a message to stderr.
function M.main(argv)
  local function fail(msg)
    io.stderr:write("train_digits: ", msg, "\n")
    return 1
  end
  local cfg, given = M.parse_args(argv)
  if not cfg then return fail(given) end
  if cfg.help then
    io.stdout:write(usage, "\n")
    return 0
  end
  lunet.set_num_threads(cfg.threads)
  if cfg.device ~= "cpu" and not lunet.cuda.is_available() then
    return fail(("--device %s: CUDA is not available (lunet.cuda.is_available() is false: "
                 .. "lunet was built without CUDA, or there is no GPU or driver)"):format(cfg.device))
  end

  local ckpt_t, ckpt_meta
  if cfg.resume then
    cfg.checkpoint = cfg.checkpoint or ("digits_%s.safetensors"):format(cfg.model)
    local settings
    ckpt_t, ckpt_meta, settings = M.read_checkpoint(cfg.checkpoint)
    if not ckpt_t then return fail("cannot resume: " .. ckpt_meta) end
    local ok, msg = adopt_settings(cfg, given, settings, cfg.checkpoint)
    if not ok then return fail(msg) end
  end
  cfg.checkpoint = cfg.checkpoint or ("digits_%s.safetensors"):format(cfg.model)

  local train_set, test_x, test_y = M.load_data()
  if not train_set then return fail(test_x) end
  test_x, test_y = test_x:to(cfg.device), test_y:to(cfg.device)
  local loader = data.DataLoader(train_set, { batch_size = cfg.batch_size, shuffle = true,
                                              seed = cfg.seed })
  lunet.manual_seed(cfg.seed)
  local model = M.build_model(cfg.model):to(cfg.device)
  local opt = optim.Adam(model:parameters(), { lr = cfg.lr })
  local first = 1
  if ckpt_t then first = M.restore(ckpt_t, ckpt_meta, model, opt, loader) + 1 end

  print(("%s: %d parameters; %d training and %d test images; batch %d, Adam lr %g, %s, %d thread(s)")
        :format(cfg.model, count_parameters(model), #train_set, test_y:size(1), cfg.batch_size,
                cfg.lr, cfg.device, lunet.get_num_threads()))
  if ckpt_t then
    print(("resuming from %s after epoch %d"):format(cfg.checkpoint, first - 1))
  end
  local last = math.max(cfg.epochs, first - 1)   -- a checkpoint past --epochs: nothing to train

  local start = lunet.clock()
  for epoch = first, cfg.epochs do
    local bar = progress.Bar(#loader, { label = ("epoch %d/%d"):format(epoch, cfg.epochs) })
    local sum, steps = 0, 0
    model:train()
    for _, xb, yb in loader:iter() do
      xb, yb = xb:to(cfg.device), yb:to(cfg.device)
      local loss = nn.functional.cross_entropy(model(xb), yb)
      opt:zero_grad()
      loss:backward()
      opt:step()
      sum, steps = sum + loss:item(), steps + 1
      bar:advance(xb:size(1), ("loss %.4f"):format(sum / steps))
    end
    local correct, total = M.accuracy(model, test_x, test_y)
    bar:close(("loss %.4f test accuracy %.1f%%"):format(sum / steps, 100 * correct / total))
    local ok, msg = M.save_checkpoint(cfg.checkpoint, cfg, epoch, model, opt)
    if not ok then return fail("cannot save the checkpoint: " .. msg) end
  end

  local correct, total = M.accuracy(model, test_x, test_y)
  print(("final test accuracy %.1f%% (%d/%d) after %d epochs; %.1f s of training; checkpoint %s")
        :format(100 * correct / total, correct, total, last, lunet.clock() - start,
                cfg.checkpoint))
  return 0
end

-- Loaded with require, hand over the pieces; run as a script, train.
if ... == "examples.train_digits" then return M end
os.exit(M.main(arg or {}))
