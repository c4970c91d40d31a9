-- examples/train_digits.lua, run as a user runs it (the lunet executable
-- in a subprocess, output into a pipe: plain lines): the CNN learns the
-- digits to at least 97% with the default settings, checkpoints every
-- epoch, and a run stopped after an epoch and resumed with --resume ends
-- with the same parameters and optimizer state, to the bit, as the
-- uninterrupted run.
local lunet = require("lunet")
local helpers = require("tests.spec.helpers")
local train_digits = require("examples.train_digits")

local q = helpers.shell_quote
local gpu_it = helpers.cuda_it(it, pending, true)   -- needs the real device

-- Run the example with `args`; returns its stdout, stderr and exit status.
local function run(args)
  local err = os.tmpname()
  local cmd = ("%s examples/train_digits.lua %s 2>%s"):format(q(helpers.lunet_exe()), args, q(err))
  local p = io.popen(cmd)
  local out = p:read("a")
  local _, _, code = p:close()
  local f = io.open(err)
  local errs = f:read("a")
  f:close()
  os.remove(err)
  return out, errs, code
end

-- The epoch lines of an output: {[epoch] = {loss=, accuracy=, text=}},
-- text being the line after "epoch e/N" up to the rate (which varies from
-- run to run).
local function epochs_of(out)
  local found = {}
  for line in out:gmatch("[^\n]+") do
    local e, loss, acc =
      line:match("^epoch (%d+)/%d+ %d+/%d+ loss ([%d.]+) test accuracy ([%d.]+)%%")
    if e then
      found[tonumber(e)] = { loss = tonumber(loss), accuracy = tonumber(acc),
                             text = line:match("^epoch %d+/%d+ (.-%%)") }
    end
  end
  return found
end

-- Every tensor of checkpoint a equal, bit for bit, to b's; the same names.
local function assert_same_checkpoint(a, b)
  local ta, ma = assert(lunet.load(a))
  local tb, mb = assert(lunet.load(b))
  local n = 0
  for name, t in pairs(ta) do
    if name ~= "_metadata" then
      n = n + 1
      assert.is_not_nil(tb[name], name)
      assert.equal(t.dtype, tb[name].dtype, name)
      assert.equal(t:numel(), t:eq(tb[name]):sum():item(), name .. " differs")
    end
  end
  for name in pairs(tb) do assert.is_not_nil(ta[name], name) end
  assert.is_true(n > 20)
  assert.same(ma, mb)
end

describe("examples/train_digits.lua", function()
  local dir

  setup(function()
    local p = io.popen("mktemp -d")
    dir = p:read("l")
    p:close()
  end)

  teardown(function()
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("trains the CNN past 97% test accuracy, loss falling, a checkpoint each epoch", function()
    local full = dir .. "/full.safetensors"
    local out, errs, code = run("--checkpoint " .. q(full))
    assert.equal(0, code, errs)
    assert.truthy(out:find("^cnn: 8474 parameters; 1437 training and 360 test images"), out)
    local ep = epochs_of(out)
    assert.equal(10, #ep, out)
    assert.is_true(ep[10].loss < ep[5].loss and ep[5].loss < ep[1].loss, out)
    local acc, correct = out:match("final test accuracy ([%d.]+)%% %((%d+)/360%)")
    assert.is_true(tonumber(correct) >= 0.97 * 360, out)
    assert.equal(ep[10].accuracy, tonumber(acc))

    local t, meta = assert(lunet.load(full))
    assert.equal("10", meta.epoch)
    assert.equal("cnn", meta.model)
    assert.equal("32", meta.batch_size)
    assert.is_not_nil(t["optim.state.1.exp_avg"])
    assert.is_not_nil(t["1.2.running_mean"])

    -- the checkpoint is the model: it evaluates to the printed accuracy
    local train_set, test_x, test_y = train_digits.load_data()
    assert.is_not_nil(train_set)
    local model = train_digits.build_model("cnn")
    local opt = lunet.optim.Adam(model:parameters())
    local loader = lunet.data.DataLoader(train_set)
    assert.equal(10, train_digits.restore(t, meta, model, opt, loader))
    assert.equal(tonumber(correct), (train_digits.accuracy(model, test_x, test_y)))
    assert.equal(11, loader.epoch)

    -- stopped after 7 epochs, then resumed to 10: the same run, to the bit
    local part = dir .. "/part.safetensors"
    local out1, errs1, code1 = run("--epochs 7 --checkpoint " .. q(part))
    assert.equal(0, code1, errs1)
    local _, meta7 = assert(lunet.load(part))
    assert.equal("7", meta7.epoch)
    local out2, errs2, code2 = run("--resume --epochs 10 --checkpoint " .. q(part))
    assert.equal(0, code2, errs2)
    assert.truthy(out2:find("resuming from " .. part .. " after epoch 7", 1, true), out2)
    local ep1, ep2 = epochs_of(out1), epochs_of(out2)
    for e = 1, 7 do assert.equal(ep[e].text, ep1[e].text) end
    assert.is_nil(ep2[7])
    for e = 8, 10 do assert.equal(ep[e].text, ep2[e].text) end
    assert_same_checkpoint(full, part)
  end)

  it("trains the MLP and resumes it alike", function()
    local full, part = dir .. "/mlp_full.safetensors", dir .. "/mlp_part.safetensors"
    local out, errs, code = run("--model mlp --epochs 3 --batch-size 64 --checkpoint " .. q(full))
    assert.equal(0, code, errs)
    assert.truthy(out:find("^mlp: "), out)
    local ep = epochs_of(out)
    assert.equal(3, #ep, out)
    assert.is_true(ep[3].loss < ep[1].loss, out)
    local _, errs1, code1 = run("--model mlp --epochs 1 --batch-size 64 --checkpoint " .. q(part))
    assert.equal(0, code1, errs1)
    -- the settings come from the checkpoint
    local out2, errs2, code2 = run("--resume --epochs 3 --checkpoint " .. q(part))
    assert.equal(0, code2, errs2)
    assert.truthy(out2:find("^mlp: .* batch 64"), out2)
    assert_same_checkpoint(full, part)
    -- a setting that would change the run's course is refused
    local out3, errs3, code3 = run("--resume --batch-size 16 --epochs 4 --checkpoint " .. q(part))
    assert.equal(1, code3, out3)
    assert.truthy(errs3:find("--batch-size 16 differs from " .. part .. "'s 64", 1, true), errs3)
  end)

  gpu_it("trains on --device cuda as on the CPU, and its checkpoint resumes on the CPU", function()
    local cpu_ckpt, gpu_ckpt = dir .. "/cpu3.safetensors", dir .. "/gpu3.safetensors"
    local out, errs, code = run("--epochs 3 --checkpoint " .. q(cpu_ckpt))
    assert.equal(0, code, errs)
    local gout, gerrs, gcode = run("--epochs 3 --device cuda --checkpoint " .. q(gpu_ckpt))
    assert.equal(0, gcode, gerrs)
    assert.truthy(gout:find("^cnn: 8474 parameters; .*, cuda, "), gout)
    local ep, gep = epochs_of(out), epochs_of(gout)
    assert.equal(3, #gep, gout)
    for e = 1, 3 do   -- the same run up to float32 rounding in another order
      assert.is_true(math.abs(ep[e].loss - gep[e].loss) < 0.02, gout)
      assert.is_true(math.abs(ep[e].accuracy - gep[e].accuracy) < 3, gout)
    end
    local out2, errs2, code2 = run("--resume --epochs 4 --checkpoint " .. q(gpu_ckpt))
    assert.equal(0, code2, errs2)
    assert.truthy(out2:find("resuming from " .. gpu_ckpt .. " after epoch 3", 1, true), out2)
  end)

  it("refuses bad options and a missing checkpoint", function()
    local _, errs, code = run("--epochs 0")
    assert.equal(1, code)
    assert.truthy(errs:find("option '--epochs' needs a positive integer, got '0'", 1, true), errs)
    _, errs, code = run("--model resnet")
    assert.equal(1, code)
    assert.truthy(errs:find("unknown model 'resnet' (cnn or mlp)", 1, true), errs)
    _, errs, code = run("--frobnicate")
    assert.equal(1, code)
    assert.truthy(errs:find("unknown option '--frobnicate'", 1, true), errs)
    _, errs, code = run("--resume --checkpoint " .. q(dir .. "/none.safetensors"))
    assert.equal(1, code)
    assert.truthy(errs:find("cannot resume: ", 1, true), errs)
    _, errs, code = run("--device tpu")
    assert.equal(1, code)
    assert.truthy(errs:find("unknown device 'tpu' (cpu, cuda or cuda:N)", 1, true), errs)
    if not lunet.cuda.is_available() then
      _, errs, code = run("--device cuda --epochs 1")
      assert.equal(1, code)
      assert.truthy(errs:find("--device cuda: CUDA is not available", 1, true), errs)
    end
    local out
    out, _, code = run("--help")
    assert.equal(0, code)
    assert.truthy(out:find("^usage: train_digits.lua"), out)
  end)
end)
