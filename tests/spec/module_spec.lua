-- The module system from Lua: Lua-defined modules, registration by
-- assignment, walks, modes, Sequential, hooks, conversions, tostring,
-- errors, and optim.SGD against hand-computed updates.
local lunet = require("lunet")
local nn = require("lunet.nn")
local optim = require("lunet.optim")

local helpers = require("tests.spec.helpers")
local err, f32, f64 = helpers.err, helpers.f32, helpers.f64

local function filled(n, v)
  local t = {}
  for i = 1, n do t[i] = v end
  return f32(t)
end

local function names_of(iter)
  local out = {}
  for name in iter do out[#out + 1] = name end
  return out
end

local function assert_close(expected, t, tol)
  local got = t:tolist()
  assert.are.equal(#expected, #got)
  for i = 1, #expected do
    assert(math.abs(expected[i] - got[i]) <= (tol or 1e-12),
           ("element %d: expected %.17g, got %.17g"):format(i, expected[i], got[i]))
  end
end

-- A Lua-defined module: a child, a parameter, a nil parameter slot, a
-- persistent and a non-persistent buffer, and a plain attribute.
local Affine = nn.Module:extend("Affine")
function Affine:__init(n)
  nn.Module.__init(self)
  self.weight = nn.Parameter(filled(n, 1))
  self:register_parameter("bias", nil)
  self.running = filled(n, 0)
  self:register_buffer("scratch", f32({ 0 }), { persistent = false })
  self.n = n
end
function Affine:forward(x) return x * self.weight end
function Affine:extra_repr() return ("n=%d"):format(self.n) end

local Net = nn.Module:extend("Net")
function Net:__init()
  nn.Module.__init(self)
  self.scale = nn.Parameter(f32({ 2 }))
  self.body = nn.Sequential(Affine(3), Affine(3))
  self.head = Affine(3)
end
function Net:forward(x) return self.head(self.body(x)) * self.scale end

describe("Lua-defined modules", function()
  it("registers children, parameters and buffers by assignment", function()
    local m = Affine(3)
    assert.is_true(lunet.is_tensor(m.weight))
    assert.is_true(m.weight.requires_grad)
    assert.is_nil(m.bias)
    assert.is_true(lunet.is_tensor(m.running))
    assert.is_false(m.running.requires_grad)
    assert.are.equal(3, m.n)
    assert.are.same({ "weight" }, names_of(m:named_parameters()))
    assert.are.same({ "running", "scratch" }, names_of(m:named_buffers()))
    assert.are.equal("Affine", m:type_name())
    assert.is_true(nn.is_module(m))
    assert.is_false(nn.is_module({}))
  end)

  it("gives the same object for the same module and tensor", function()
    local net = Net()
    assert.are.equal(net.body, net.body)
    assert.are.equal(net.body[1], net:children()[1][1])
    assert.are.equal(net.head.weight, net.head.weight)
  end)

  it("keeps Lua state of children while the parent lives", function()
    local seq = nn.Sequential(Affine(3))
    seq[1].tag = "kept"
    for _, m in ipairs(seq:modules()) do m.seen = true end
    collectgarbage()
    collectgarbage()
    assert.are.equal("kept", seq[1].tag)
    assert.is_true(seq[1].seen)
    assert.are.equal(3, seq[1].n)
  end)

  it("runs a Lua forward through __call", function()
    local net = Net()
    local y = net(f32({ 1, 2, 3 }))
    assert_close({ 2, 4, 6 }, y)
  end)

  it("supports inheritance chains and calling the parent constructor", function()
    local Scaled, parent = Affine:extend("Scaled")
    assert.are.equal(Affine, parent)
    function Scaled:__init(n, k)
      Affine.__init(self, n)
      self.k = k
    end
    function Scaled:forward(x) return Affine.forward(self, x) * self.k end
    local m = Scaled(3, 10)
    assert.are.equal("Scaled", m:type_name())
    assert_close({ 10, 20, 30 }, m(f32({ 1, 2, 3 })))
    assert.are.equal("Scaled(n=3)", tostring(m))
    assert.are.same({ "weight" }, names_of(m:named_parameters()))
  end)

  it("plain nn.Module() is an empty module without a forward", function()
    local m = nn.Module()
    assert.are.equal("Module()", tostring(m))
    assert.matches('Module [Module] is missing the required "forward" function',
                   err(m, f32({ 1 })), 1, true)
  end)

  it("assigning nil empties a slot and keeps its kind", function()
    local m = Affine(3)
    m.weight = nil
    assert.is_nil(m.weight)
    assert.are.same({}, names_of(m:named_parameters()))
    m.weight = f32({ 5, 5, 5 })   -- back into the parameter slot
    assert.are.same({ "weight" }, names_of(m:named_parameters()))
    m.n = nil
    assert.is_nil(m.n)
  end)

  it("replaces a buffer by a parameter and keeps persistence on replace", function()
    local m = Affine(3)
    m.scratch = f32({ 1 })   -- still a non-persistent buffer
    assert.is_nil(m:state_dict().scratch)
    m.running = nn.Parameter(f32({ 1, 1, 1 }))
    assert.are.same({ "weight", "running" }, names_of(m:named_parameters()))
  end)
end)

describe("walks", function()
  it("names parameters, buffers, children and modules in PyTorch's order", function()
    local net = Net()
    assert.are.same({ "scale", "body.1.weight", "body.2.weight", "head.weight" },
                    names_of(net:named_parameters()))
    assert.are.same({ "body.1.running", "body.1.scratch", "body.2.running", "body.2.scratch",
                      "head.running", "head.scratch" },
                    names_of(net:named_buffers()))
    assert.are.same({ "body", "head" }, names_of(net:named_children()))
    assert.are.same({ "", "body", "body.1", "body.2", "head" }, names_of(net:named_modules()))
    assert.are.same({ "net.scale", "net.body.1.weight", "net.body.2.weight", "net.head.weight" },
                    names_of(net:named_parameters("net")))
    assert.are.same({ "net", "net.body", "net.body.1", "net.body.2", "net.head" },
                    names_of(net:named_modules("net")))
    assert.are.same({ "scale" }, names_of(net:named_parameters{ recurse = false }))
    assert.are.equal(4, #net:parameters())
    assert.are.equal(1, #net:parameters(false))
    assert.are.equal(6, #net:buffers())
    assert.are.equal(5, #net:modules())
    assert.are.equal(net.head, net:children()[2])
    assert.are.equal(net.scale, net:parameters()[1])
  end)

  it("lists a shared module or tensor once", function()
    local a = Affine(3)
    local seq = nn.Sequential(a, a)
    assert.are.equal(2, #seq)
    assert.are.same({ "1.weight" }, names_of(seq:named_parameters()))
    assert.are.same({ "", "1" }, names_of(seq:named_modules()))
  end)

  it("apply visits children first and returns the module", function()
    local net = Net()
    local order = {}
    assert.are.equal(net, net:apply(function(m) order[#order + 1] = m:type_name() end))
    assert.are.same({ "Affine", "Affine", "Sequential", "Affine", "Net" }, order)
  end)
end)

describe("train and eval", function()
  it("are recursive and return the module", function()
    local net = Net()
    assert.is_true(net.training)
    assert.are.equal(net, net:eval())
    for _, m in ipairs(net:modules()) do assert.is_false(m.training) end
    assert.are.equal(net, net:train())
    for _, m in ipairs(net:modules()) do assert.is_true(m.training) end
    net:train(false)
    assert.is_false(net.body[2].training)
  end)

  it("setting the training field changes that module only", function()
    local net = Net()
    net.training = false
    assert.is_false(net.training)
    assert.is_true(net.body.training)
    assert.is_true(net.head.training)
    assert.matches("training expects a boolean", err(function() net.training = 1 end), 1, true)
  end)

  it("setting the training field keeps the modes of shared descendants", function()
    local shared = Affine(3)
    local a, b = nn.Sequential(shared), nn.Sequential(shared)
    local root = nn.Sequential(a, b)
    b.training = false   -- b only: shared stays in training mode
    assert.is_true(shared.training)
    root.training = false
    assert.is_false(root.training)
    assert.is_true(a.training)
    assert.is_false(b.training)
    assert.is_true(shared.training)
  end)
end)

describe("nn.Sequential", function()
  it("indexes, counts and appends children", function()
    local a, b, c = Affine(3), Affine(3), Affine(3)
    local seq = nn.Sequential(a, b)
    assert.are.equal(a, seq[1])
    assert.are.equal(b, seq[2])
    assert.are.equal(b, seq[-1])
    assert.is_nil(seq[3])
    assert.are.equal(2, #seq)
    assert.are.equal(seq, seq:add(c))
    assert.are.equal(c, seq[3])
    assert.are.equal(c, seq["3"])
    assert.are.same({ "1", "2", "3" }, names_of(seq:named_children()))
    seq[2] = Affine(3)
    assert.are_not.equal(b, seq[2])
    assert.matches("out of range", err(function() seq[7] = a end), 1, true)
  end)

  it("chains the forward through each child's __call", function()
    local seq = nn.Sequential(Affine(3), Affine(3))
    lunet.no_grad(function()
      seq[1].weight:fill_(2)
      seq[2].weight:fill_(3)
    end)
    local calls = 0
    seq[2]:register_forward_hook(function() calls = calls + 1 end)
    assert_close({ 6, 12, 18 }, seq(f32({ 1, 2, 3 })))
    assert.are.equal(1, calls)
    assert_close({ 1, 2, 3 }, nn.Sequential()(f32({ 1, 2, 3 })))
  end)

  it("rejects non-modules", function()
    assert.matches("bad argument #2 to 'Sequential' (lunet.Module expected, got number)",
                   err(nn.Sequential, Affine(3), 3), 1, true)
    assert.matches("bad argument #1 to 'add' (lunet.Module expected, got string)",
                   err(function() nn.Sequential():add("x") end), 1, true)
  end)

  it("prints PyTorch's nested repr", function()
    local net = Net()
    assert.are.equal(table.concat({
      "Net(",
      "  (body): Sequential(",
      "    (1): Affine(n=3)",
      "    (2): Affine(n=3)",
      "  )",
      "  (head): Affine(n=3)",
      ")" }, "\n"), tostring(net))
  end)
end)

describe("hooks", function()
  it("pre-hooks may replace the arguments and hooks the output", function()
    local m = Affine(3)
    lunet.no_grad(function() m.weight:fill_(2) end)
    local seen = {}
    local h1 = m:register_forward_pre_hook(function(mod, x)
      seen[#seen + 1] = "pre"
      assert.are.equal(m, mod)
      return x * 10
    end)
    local hook_args
    local h2 = m:register_forward_hook(function(mod, args, out)
      seen[#seen + 1] = "post"
      assert.are.equal(m, mod)
      hook_args = args
      return out + 1
    end)
    assert_close({ 21, 41, 61 }, m(f32({ 1, 2, 3 })))
    assert.are.same({ "pre", "post" }, seen)
    assert.are.equal(1, hook_args.n)
    assert_close({ 10, 20, 30 }, hook_args[1])   -- the arguments after the pre-hooks
    h1:remove()
    assert_close({ 3, 5, 7 }, m(f32({ 1, 2, 3 })))
    h2:remove()
    h2:remove()   -- twice is fine
    assert_close({ 2, 4, 6 }, m(f32({ 1, 2, 3 })))
    assert.are.equal(3, #seen)
  end)

  it("runs hooks in registration order and lets a hook remove itself", function()
    local m = Affine(3)
    local order = {}
    local h
    h = m:register_forward_hook(function() order[#order + 1] = 1; h:remove() end)
    m:register_forward_hook(function() order[#order + 1] = 2 end)
    m(f32({ 1, 2, 3 }))
    m(f32({ 1, 2, 3 }))
    assert.are.same({ 1, 2, 2 }, order)
  end)

  it("rejects a hook that is not callable", function()
    assert.matches("bad argument #1 to 'register_forward_hook' (function expected, got number)",
                   err(function() Affine(3):register_forward_hook(1) end), 1, true)
  end)
end)

describe("conversions", function()
  it("to{dtype=} keeps tensor identity, so an optimizer sees the new tensors", function()
    local net = Net()
    local w = net.head.weight
    local opt = optim.SGD(net:parameters(), { lr = 1 })
    assert.are.equal(net, net:to{ dtype = "float64" })
    assert.are.equal(w, net.head.weight)
    assert.are.equal("float64", w.dtype)
    assert.are.equal("float64", net.head.running.dtype)
    assert.are.equal("float64", opt.param_groups[1].params[4].dtype)
    w.grad = f64({ 1, 1, 1 })
    opt:step()
    assert_close({ 0, 0, 0 }, net.head.weight)
    assert.are.equal(net, net:float())
    assert.are.equal("float32", w.dtype)
  end)

  it("rejects bad targets without changing the module", function()
    local m = Affine(3)
    assert.matches("nn.Module.to only accepts floating point dtypes", err(m.to, m, { dtype = "int64" }), 1, true)
    assert.matches("unknown device or dtype 'nonsense'", err(m.to, m, "nonsense"), 1, true)
    assert.are.equal("float32", m.weight.dtype)
  end)

  it("to(tensor) takes its dtype; to('cuda') fails clearly without a GPU", function()
    local m = Affine(3)
    assert.are.equal(m, m:to(f64({ 1 })))
    assert.are.equal("float64", m.weight.dtype)
    if not lunet.cuda.is_available() then
      assert.is_false(pcall(m.to, m, "cuda"))
      assert.are.equal("cpu", m.weight.device)
      assert.are.equal("float64", m.weight.dtype)
    end
  end)

  it("zero_grad clears gradients", function()
    local m = Affine(3)
    m.weight.grad = f32({ 1, 1, 1 })
    m:zero_grad()
    assert.is_nil(m.weight.grad)
  end)
end)

describe("errors", function()
  it("reports bad arguments and leaves the module unchanged", function()
    local m = Affine(3)
    assert.matches("bad argument #1 to 'add_module' (string expected, got number)",
                   err(function() m:add_module(1, Affine(3)) end), 1, true)
    assert.matches('module name can\'t contain ".", got: a.b',
                   err(function() m:add_module("a.b", Affine(3)) end), 1, true)
    assert.matches('parameter name can\'t contain ".", got: a.b',
                   err(function() m:register_parameter("a.b", f32({ 1 })) end), 1, true)
    assert.matches("attribute 'weight' already exists",
                   err(function() m:register_buffer("weight", f32({ 1 })) end), 1, true)
    assert.matches("bad argument #2 to 'register_parameter' (tensor expected, got number)",
                   err(function() m:register_parameter("p", 3) end), 1, true)
    assert.matches("cannot assign 'number' as parameter 'weight' (lunet.Tensor or nil expected)",
                   err(function() m.weight = 3 end), 1, true)
    assert.matches("cannot assign 'lunet.Tensor' as child module",
                   err(function()
                     local n = Net()
                     n.head = f32({ 1 })
                   end), 1, true)
    assert.matches("a module cannot be its own descendant",
                   err(function() local s = nn.Sequential(m); m.loop = s end), 1, true)
    assert.matches("module fields are named by strings", err(function() m[true] = 1 end), 1, true)
    -- C would read a name cut at a NUL byte: another name
    assert.matches("module field names cannot contain a NUL byte",
                   err(function() m["weight\0x"] = f32({ 1 }) end), 1, true)
    assert.matches("module field names cannot contain a NUL byte",
                   err(function() m:register_buffer("a\0b", f32({ 1 })) end), 1, true)
    assert.is_nil(m["weight\0x"])
    local sd = m:state_dict()
    sd["weight\0x"], sd.weight = sd.weight, nil
    assert.matches("state_dict keys cannot contain a NUL byte",
                   err(function() m:load_state_dict(sd) end), 1, true)
    -- a module never replaces a parameter (PyTorch's __setattr__)
    assert.matches("cannot assign 'lunet.Module' as parameter 'weight' (lunet.Tensor or nil "
                   .. "expected)", err(function() m.weight = nn.ReLU() end), 1, true)
    -- a slot changing kind: the errors come before the old slot is removed
    local o = Affine(3)
    o:register_buffer("stats", f32({ 1 }))
    assert.matches("a module cannot be its own descendant",
                   err(function() local s = nn.Sequential(o); o.stats = s end), 1, true)
    assert.are.same({ 1 }, o.stats:tolist())
    assert.matches("Cannot assign non-leaf Tensor to parameter 'weight'",
                   err(function() m.weight = m.weight * 2 end), 1, true)
    local released = f32({ 1 })
    getmetatable(released).__close(released)
    assert.matches("attempt to use a released tensor",
                   err(function() m.extra = released end), 1, true)
    assert.are.same({ "running", "scratch" }, names_of(m:named_buffers()))
    -- nothing changed, and the interpreter still works
    assert.are.same({ "weight" }, names_of(m:named_parameters()))
    assert.are.same({}, names_of(m:named_children()))
    assert.are.equal("Affine(n=3)", tostring(m))
    assert_close({ 1, 2, 3 }, m(f32({ 1, 2, 3 })))
  end)

  it("says how to call a method called with '.' instead of ':'", function()
    -- every public method along these classes' chains, written in Lua or
    -- in C (forward excepted: it runs on every call, unchecked)
    local seen, n = {}, 0
    for _, case in ipairs({ { nn.Sequential }, { nn.BatchNorm2d, 3 }, { nn.Linear, 3, 3 } }) do
      local cls, t = case[1], case[1]
      while type(t) == "table" do
        for k, v in pairs(t) do
          if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function"
             and k ~= "forward" and k ~= "extend" and not seen[k] then
            seen[k] = true
            n = n + 1
            -- m.name() with name a constant, so that Lua knows the called name
            local call = load(("local m = ...; return m.%s()"):format(k))
            local msg = err(call, cls(table.unpack(case, 2)))
            assert.matches(("bad argument #1 to '%s' (lunet.Module expected, got no value)")
                           :format(k), msg, 1, true)
          end
        end
        local mt = getmetatable(t)
        t = mt and rawget(mt, "__index")
      end
    end
    assert.is_true(n > 20)
    local m = nn.BatchNorm2d(3)
    local msg = err(function() m.eval() end)
    assert.matches("module_spec.lua:%d+: bad argument #1 to 'eval' %(lunet.Module expected, "
                   .. "got no value%); call it as m:eval%(%)$", msg)
    assert.matches("bad argument #1 to 'apply' (lunet.Module expected, got function); "
                   .. "call it as m:apply()", err(function() m.apply(print) end), 1, true)
    assert.matches("bad argument #1 to 'requires_grad_' (lunet.Module expected, got "
                   .. "lunet.Tensor)", err(function() m.requires_grad_(f32({ 1 })) end), 1, true)
    assert.are.equal(m, m:eval())      -- and ':' still works
  end)

  it("raises on a released module instead of crashing", function()
    local m = Affine(3)
    getmetatable(m).__close(m)
    getmetatable(m).__close(m)   -- twice is fine
    assert.matches("attempt to use a released module", err(function() return m.weight end), 1, true)
    assert.are.equal("lunet.Module (released)", tostring(m))
  end)

  it("reports errors raised inside extra_repr and forward", function()
    local Bad = nn.Module:extend("Bad")
    function Bad:extra_repr() error("repr failed") end
    function Bad:forward() error("forward failed") end
    local seq = nn.Sequential(Bad())
    assert.matches("repr failed", err(tostring, seq), 1, true)
    assert.matches("forward failed", err(seq, f32({ 1 })), 1, true)
    assert.matches("extend must be called on a class", err(nn.Module.extend, "Net"), 1, true)
    assert.are.equal("Sequential(\n  (1): Affine(n=3)\n)", tostring(nn.Sequential(Affine(3))))
  end)
end)

describe("optim.SGD", function()
  local function sgd_run(opts, steps)
    local p = nn.Parameter(f64({ 1, 2 }))
    local opt = optim.SGD({ p }, opts)
    for _ = 1, steps do
      opt:zero_grad()
      p.grad = f64({ 0.5, -1 })
      opt:step()
    end
    return p
  end

  it("plain SGD", function()
    assert_close({ 0.9, 2.2 }, sgd_run({ lr = 0.1 }, 2))
  end)

  it("momentum with weight decay", function()
    assert_close({ 0.852151, 2.284102 }, sgd_run({ lr = 0.1, momentum = 0.9, weight_decay = 0.01 }, 2))
  end)

  it("nesterov", function()
    assert_close({ 0.7695, 2.461 }, sgd_run({ lr = 0.1, momentum = 0.9, nesterov = true }, 2))
  end)

  it("dampening", function()
    assert_close({ 0.88, 2.24 }, sgd_run({ lr = 0.1, momentum = 0.9, dampening = 0.5 }, 2))
  end)

  it("skips parameters without a gradient and zero_grad clears them", function()
    local a, b = nn.Parameter(f64({ 1 })), nn.Parameter(f64({ 1 }))
    local opt = optim.SGD({ a, b }, { lr = 1 })
    a.grad = f64({ 1 })
    opt:step()
    assert_close({ 0 }, a)
    assert_close({ 1 }, b)
    opt:zero_grad()
    assert.is_nil(a.grad)
  end)

  it("parameter groups override the defaults", function()
    local a, b = nn.Parameter(f64({ 1 })), nn.Parameter(f64({ 1 }))
    local opt = optim.SGD({ { params = { a } }, { params = { b }, lr = 0.5 } }, { lr = 0.1 })
    a.grad, b.grad = f64({ 1 }), f64({ 1 })
    opt:step()
    assert_close({ 0.9 }, a)
    assert_close({ 0.5 }, b)
  end)

  it("rejects bad options with PyTorch's messages", function()
    local p = { nn.Parameter(f64({ 1 })) }
    assert.matches("Invalid learning rate: -1", err(optim.SGD, p, { lr = -1 }), 1, true)
    assert.matches("Invalid momentum value: -0.5", err(optim.SGD, p, { momentum = -0.5 }), 1, true)
    assert.matches("Nesterov momentum requires a momentum and zero dampening",
                   err(optim.SGD, p, { nesterov = true }), 1, true)
    assert.matches("unknown option 'learning_rate'", err(optim.SGD, p, { learning_rate = 1 }), 1, true)
    assert.matches("empty parameter list", err(optim.SGD, {}, { lr = 1 }), 1, true)
  end)
end)
