-- State dicts from Lua: keys, _metadata versions, ordered iteration,
-- strict and non-strict loading with PyTorch's messages, copy-nothing on
-- failure, and a round trip through lunet.save / lunet.load.
local lunet = require("lunet")
local nn = require("lunet.nn")

local helpers = require("tests.spec.helpers")
local err, f32, f64 = helpers.err, helpers.f32, helpers.f64
local keys_of = helpers.keys_of

local function values(t) return t:tolist() end

-- A Lua module with a parameter, a nil parameter, a persistent and a
-- non-persistent buffer; its state dict version is 2.
local Norm = nn.Module:extend("Norm", { version = 2 })
function Norm:__init(n)
  local ones, zeros = {}, {}
  for i = 1, n do ones[i], zeros[i] = 1, 0 end
  self.weight = nn.Parameter(f32(ones))
  self:register_parameter("bias", nil)
  self.running_mean = f32(zeros)
  self:register_buffer("cache", f32(zeros), { persistent = false })
end
function Norm:forward(x) return x * self.weight end

local Net = nn.Module:extend("Net")
function Net:__init()
  self.features = nn.Sequential(Norm(3), Norm(3))
  self.head = Norm(2)
end

describe("state_dict", function()
  it("has dotted keys in the module's order and versions per prefix", function()
    local sd = Net():state_dict()
    assert.are.same({ "features.1.weight", "features.1.running_mean",
                      "features.2.weight", "features.2.running_mean",
                      "head.weight", "head.running_mean" }, keys_of(sd))
    assert.are.same({
      [""] = { version = 1 },
      ["features"] = { version = 1 },
      ["features.1"] = { version = 2 },
      ["features.2"] = { version = 2 },
      ["head"] = { version = 2 },
    }, sd._metadata)
  end)

  it("of a Sequential uses the children's numbers", function()
    local sd = nn.Sequential(Norm(2), Norm(2)):state_dict()
    assert.are.same({ "1.weight", "1.running_mean", "2.weight", "2.running_mean" }, keys_of(sd))
    assert.are.same({ [""] = { version = 1 }, ["1"] = { version = 2 }, ["2"] = { version = 2 } },
                    sd._metadata)
  end)

  it("holds detached aliases of the module's tensors", function()
    local m = Norm(3)
    local sd = m:state_dict()
    assert.is_false(sd.weight.requires_grad)
    sd.weight:fill_(5)
    assert.are.same({ 5, 5, 5 }, values(m.weight))
  end)

  it("lists keys added later after the module's own", function()
    local sd = Norm(1):state_dict()
    sd.extra = f32({ 1 })
    assert.are.same({ "weight", "running_mean", "extra" }, keys_of(sd))
  end)
end)

describe("load_state_dict", function()
  it("copies values into the existing tensors, converting dtype", function()
    local m = Norm(3)
    local w = m.weight
    local r = m:load_state_dict({ weight = f64({ 1, 2, 3 }), running_mean = f64({ 4, 5, 6 }) })
    assert.are.same({ missing_keys = {}, unexpected_keys = {} }, r)
    assert.are.equal(w, m.weight)
    assert.are.equal("float32", m.weight.dtype)
    assert.are.same({ 1, 2, 3 }, values(m.weight))
    assert.are.same({ 4, 5, 6 }, values(m.running_mean))
  end)

  it("round-trips a model's state dict into another model", function()
    local a, b = Net(), Net()
    lunet.no_grad(function() a.head.weight:fill_(7) end)
    b:load_state_dict(a:state_dict())
    assert.are.same({ 7, 7 }, values(b.head.weight))
  end)

  it("raises PyTorch's message for missing keys in strict mode", function()
    local m = Norm(3)
    local e = err(m.load_state_dict, m, { weight = f32({ 1, 2, 3 }) })
    assert.matches('Error(s) in loading state_dict for Norm:\n\tMissing key(s) in state_dict: "running_mean".',
                   e, 1, true)
  end)

  it("raises PyTorch's message for unexpected keys in strict mode", function()
    local m = Norm(1)
    local e = err(m.load_state_dict, m, { weight = f32({ 1 }), running_mean = f32({ 0 }),
                                          zz = f32({ 1 }), aa = f32({ 1 }) })
    assert.matches('Error(s) in loading state_dict for Norm:\n\tUnexpected key(s) in state_dict: "aa", "zz".',
                   e, 1, true)
  end)

  it("raises PyTorch's message for a size mismatch, strict or not", function()
    local m = Norm(4)
    local sd = { weight = f32({ 1, 2, 3 }), running_mean = f32({ 0, 0, 0, 0 }) }
    local expected = "size mismatch for weight: copying a param with shape {3} from checkpoint, "
                     .. "the shape in current model is {4}."
    assert.matches(expected, err(m.load_state_dict, m, sd), 1, true)
    assert.matches(expected, err(m.load_state_dict, m, sd, { strict = false }), 1, true)
  end)

  it("copies nothing when a load fails", function()
    local net = Net()
    local sd = net:state_dict()
    local good = {}
    for k, v in pairs(sd) do
      if k ~= "_metadata" then good[k] = v:clone() end
    end
    lunet.no_grad(function()
      for k, v in pairs(good) do v:fill_(9) end
    end)
    good["head.weight"] = f32({ 1, 2, 3 })   -- wrong size, after the good entries
    err(net.load_state_dict, net, good)
    assert.are.same({ 1, 1, 1 }, values(net.features[1].weight))
    assert.are.same({ 0, 0, 0 }, values(net.features[2].running_mean))
    good["head.weight"] = nil
    err(net.load_state_dict, net, good)   -- missing key, strict
    assert.are.same({ 1, 1, 1 }, values(net.features[1].weight))
  end)

  it("reports missing and unexpected keys without strict", function()
    local m = Norm(2)
    local r = m:load_state_dict({ weight = f32({ 3, 4 }), other = f32({ 1 }) }, { strict = false })
    assert.are.same({ "running_mean" }, r.missing_keys)
    assert.are.same({ "other" }, r.unexpected_keys)
    assert.are.same({ 3, 4 }, values(m.weight))
    r = m:load_state_dict({ weight = f32({ 5, 6 }) }, false)
    assert.are.same({ "running_mean" }, r.missing_keys)
    assert.are.same({ 5, 6 }, values(m.weight))
  end)

  it("rejects state dicts that are not tables of tensors", function()
    local m = Norm(1)
    assert.matches("bad argument #1 to 'load_state_dict' (table expected, got number)",
                   err(function() m:load_state_dict(3) end), 1, true)
    assert.matches("state_dict value for key 'weight' must be a tensor, got number",
                   err(m.load_state_dict, m, { weight = 1 }), 1, true)
    assert.matches("state_dict keys must be strings, got number",
                   err(m.load_state_dict, m, { f32({ 1 }) }), 1, true)
    assert.matches("state_dict._metadata must be a table",
                   err(m.load_state_dict, m, { _metadata = 1 }), 1, true)
    assert.are.same({ 1 }, values(m.weight))
  end)
end)

describe("state dicts on disk", function()
  local path = os.tmpname()
  after_each(function() os.remove(path) end)

  it("round-trip through lunet.save and lunet.load with _metadata", function()
    local a = Net()
    lunet.no_grad(function()
      a.features[2].weight:copy_(f32({ 1, 2, 3 }))
      a.head.running_mean:fill_(0.5)
    end)
    local sd = a:state_dict()
    assert.is_true(lunet.save(path, sd))
    local loaded = lunet.load(path)
    assert.are.same(sd._metadata, loaded._metadata)
    assert.are.same(keys_of(sd), (function()
      local ks = keys_of(loaded)
      local order = {}
      for i, k in ipairs(keys_of(sd)) do order[k] = i end
      table.sort(ks, function(x, y) return order[x] < order[y] end)
      return ks
    end)())
    local b = Net()
    local r = b:load_state_dict(loaded)
    assert.are.same({}, r.missing_keys)
    assert.are.same({}, r.unexpected_keys)
    assert.are.same({ 1, 2, 3 }, values(b.features[2].weight))
    assert.are.same({ 0.5, 0.5 }, values(b.head.running_mean))
  end)
end)
