-- PyTorch interop: examples/train_digits.lua's models, given the weights
-- that PyTorch trained (tests/fixtures/interop/, written by
-- scripts/export_torch_digits.py with PyTorch models built module for
-- module like lunet's), load them as they are and compute PyTorch's
-- eval-mode logits. The fixtures hold the state dicts, 32 images and
-- PyTorch's logits for them; PyTorch is not needed here.
local lunet = require("lunet")
local train_digits = require("examples.train_digits")
local keys_of = require("tests.spec.helpers").keys_of

local DIR = "tests/fixtures/interop/"

for _, kind in ipairs({ "cnn", "mlp" }) do
  describe("a PyTorch-trained " .. kind .. " loaded into lunet", function()
    local path = DIR .. "digits_" .. kind .. ".safetensors"
    local sd, fix, fix_meta, model

    before_each(function()
      sd = assert(lunet.load(path))
      fix, fix_meta = assert(lunet.load(DIR .. "digits_" .. kind .. "_logits.safetensors"))
      lunet.manual_seed(0)
      model = train_digits.build_model(kind)
    end)

    it("has lunet's keys, in PyTorch's order, and lunet's module versions", function()
      local r = model:load_state_dict(sd)   -- strict: any key off by one fails
      assert.same({}, r.missing_keys)
      assert.same({}, r.unexpected_keys)
      local ours = model:state_dict()
      assert.equal(fix_meta.keys, table.concat(keys_of(ours), " "))
      assert.same(ours._metadata, sd._metadata)
    end)

    it("gives PyTorch's eval-mode logits", function()
      model:load_state_dict(sd)
      model:eval()
      local logits = lunet.no_grad(function() return model(fix.input) end)
      assert.same({ 32, 10 }, logits:size())
      assert.is_true(lunet.allclose(logits, fix.logits, { rtol = 1e-5, atol = 1e-5 }),
        ("largest difference %g"):format((logits - fix.logits):abs():max():item()))
      assert.equal(32, logits:argmax(2):eq(fix.logits:argmax(2)):sum():item())
      -- trained weights: most held-out images are classified right
      assert.is_true(logits:argmax(2):eq(fix.label):sum():item() >= 30)
    end)

    it("takes the buffers too: running statistics and batch counts", function()
      model:load_state_dict(sd)
      for name, t in pairs(model:state_dict()) do
        if name ~= "_metadata" then
          assert.equal(t.dtype, sd[name].dtype, name)
          assert.equal(t:numel(), t:eq(sd[name]):sum():item(), name)
        end
      end
      local counted = 0
      for name, t in pairs(sd) do
        if name:match("num_batches_tracked$") then
          assert.is_true(t:item() > 0, name)
          counted = counted + 1
        end
      end
      assert.equal(kind == "cnn" and 3 or 2, counted)
    end)

    it("saves back to the same tensors and versions", function()
      model:load_state_dict(sd)
      local out = os.tmpname()
      assert(lunet.save(out, model:state_dict()))
      local again = assert(lunet.load(out))
      os.remove(out)
      local a, b = keys_of(sd), keys_of(again)
      table.sort(a)
      table.sort(b)
      assert.same(a, b)
      for name, t in pairs(sd) do
        if name ~= "_metadata" then
          assert.equal(t:numel(), t:eq(again[name]):sum():item(), name)
        end
      end
      assert.same(sd._metadata, again._metadata)
    end)
  end)
end
