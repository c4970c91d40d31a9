-- The generic ops on CUDA tensors against the same ops on the CPU: every
-- op of core/ops.h (unary, binary with broadcasting, scalars and type
-- promotion, in place, compare, reductions over dims with keepdim, max/min
-- with indices, argmax/argmin, matmul 1-D to batched and its backward,
-- cat), creation and fill, copies between dtypes, layouts and devices, the
-- random generator (a CUDA draw is the CPU's draw for the same seed), and
-- lunet.cuda's functions and memory statistics. Without a CUDA device
-- every test is pending ("skipped: no CUDA device"), never passed.
local lunet = require("lunet")

local helpers = require("tests.spec.helpers")
local err, assert_close, assert_agree, assert_same = helpers.err, helpers.assert_close,
                                                     helpers.assert_agree, helpers.assert_same
local cuda_it = helpers.cuda_it(it, pending)
local gpu_it = helpers.cuda_it(it, pending, true)   -- needs the real device
local DEV, DEV_NAME = helpers.dev, helpers.dev_name
helpers.note_no_cuda("cuda_ops_spec.lua")

local FLOATS = { "float32", "float64", "float16", "bfloat16" }

-- Elementwise results: the CPU and CUDA may differ by an ulp or two of
-- the compute type before the final rounding to the stored dtype.
local EW_TOL = {
  float64 = { rtol = 1e-12, atol = 1e-12 },
  float32 = { rtol = 1e-5, atol = 1e-6 },
  float16 = { rtol = 2e-3, atol = 1e-3 },
  bfloat16 = { rtol = 1.6e-2, atol = 8e-3 },
}
-- Reductions and products add up in another order on the GPU.
local SUM_TOL = {
  float64 = { rtol = 1e-10, atol = 1e-10 },
  float32 = { rtol = 1e-5, atol = 1e-5 },
  float16 = { rtol = 4e-3, atol = 4e-3 },
  bfloat16 = { rtol = 2e-2, atol = 3e-2 },
}
local MATMUL_TOL = {
  float64 = { rtol = 1e-10, atol = 1e-10 },
  float32 = { rtol = 1e-4, atol = 1e-4 },
  float16 = { rtol = 1e-2, atol = 1e-2 },
  bfloat16 = { rtol = 4e-2, atol = 6e-2 },
}

local function is_float(dtype) return EW_TOL[dtype] ~= nil end

-- The device's counterpart of an argument: tensors are copied to the
-- device (with their layout), anything else is passed as it is.
local function on_dev(v)
  if lunet.is_tensor(v) then return v:to(DEV) end
  return v
end

-- want (CPU) and got (CUDA) agree: within tols[dtype] for floating
-- results, exactly otherwise.
local function agree(want, got, tols, what)
  if is_float(want.dtype) then assert_agree(want, got, tols[want.dtype], what)
  else assert_same(want, got, what) end
end

-- fn(args...) on the CPU and fn on the CUDA copies of the tensor
-- arguments: either both refuse, or both give results that agree (fn may
-- return several tensors).
local function check(fn, args, tols, what)
  local want = table.pack(pcall(fn, table.unpack(args, 1, args.n or #args)))
  local gargs = {}
  for i = 1, args.n or #args do gargs[i] = on_dev(args[i]) end
  local got = table.pack(pcall(fn, table.unpack(gargs, 1, args.n or #args)))
  if not want[1] then
    assert.is_false(got[1], ("%s: the CPU refuses (%s) and CUDA does not")
                            :format(what, tostring(want[2])))
    return
  end
  assert(got[1], what .. ": " .. tostring(got[2]))
  for i = 2, want.n do
    if lunet.is_tensor(want[i]) then agree(want[i], got[i], tols, what .. " #" .. (i - 1))
    else assert.are.same(want[i], got[i], what .. " #" .. (i - 1)) end
  end
end

-- A new leaf that requires grad: t's values on `device` (the specs'
-- device by default), never t itself.
local function leaf(t, device)
  return t:to(device or DEV):clone():requires_grad_(true)
end

local function randn(shape, dtype)
  if #shape == 0 then return lunet.tensor(lunet.randn(1):item(), { dtype = dtype }) end
  return lunet.randn(shape, { dtype = "float64" }):to(dtype)
end

-- Positive values away from 0 (for sqrt, log and pow's base).
local function positive(shape, dtype)
  return (randn(shape, "float64"):abs() + 0.1):to(dtype)
end

-- Distinct values, exact in every dtype (integers up to 256): no ties
-- for max, min, argmax and sorting to disagree on.
local function distinct(shape, dtype)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  assert(n <= 256)
  return (lunet.randperm(n) - n // 2):view(shape):to(dtype)
end

describe("CUDA tensors: creation, copies and conversions", function()
  cuda_it("creates tensors on the device with every creation function", function()
    local opts = { device = DEV }
    assert_same(lunet.zeros(2, 3), lunet.zeros(2, 3, opts), "zeros")
    assert_same(lunet.ones{ 4 }, lunet.ones({ 4 }, opts), "ones")
    assert_same(lunet.full({ 2, 2 }, 7), lunet.full({ 2, 2 }, 7, opts), "full int64")
    assert_same(lunet.full({ 3 }, 2.5), lunet.full({ 3 }, 2.5, opts), "full float32")
    assert_same(lunet.arange(10), lunet.arange(10, opts), "arange")
    assert_same(lunet.arange(1, 2, 0.25), lunet.arange(1, 2, 0.25, opts), "arange float")
    assert_same(lunet.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "float64" }),
                lunet.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "float64", device = DEV }),
                "tensor")
    local e = lunet.empty(5, 0, { device = DEV })
    assert.are.equal(DEV_NAME, e.device)
    assert.are.same({ 5, 0 }, e:size())
    assert.are.equal(DEV == "cuda", e.is_cuda)
    for _, dt in ipairs(FLOATS) do
      local x = lunet.zeros(3, { dtype = dt, device = DEV })
      assert.are.equal(dt, x.dtype)
      assert_same(lunet.ones_like(x:cpu()), lunet.ones_like(x), "ones_like " .. dt)
      assert.are.equal(DEV_NAME, lunet.zeros_like(x).device)
    end
  end)

  cuda_it("copies every dtype to the device and back exactly", function()
    local src = {
      float32 = randn({ 3, 5 }, "float32"), float64 = randn({ 3, 5 }, "float64"),
      float16 = randn({ 3, 5 }, "float16"), bfloat16 = randn({ 3, 5 }, "bfloat16"),
      int64 = lunet.randperm(15):view(3, 5), bool = randn({ 3, 5 }, "float32"):gt(0),
    }
    for dt, x in pairs(src) do
      local g = x:to(DEV)
      assert_same(x, g, dt .. " x:to(DEV)")
      assert_same(x, x:to(DEV), dt .. " x:to('cuda')")
      assert_same(x, x:to{ device = DEV }, dt .. " x:to{device=}")
      local back = g:cpu()
      assert.are.equal("cpu", back.device)
      assert.are.same(x:tolist(), back:tolist(), dt .. " back")
      assert.are.equal(g, g:to(DEV), "x:to(DEV) of a CUDA tensor is itself")
      assert.are.same(x:tolist(), g:clone():cpu():tolist(), dt .. " clone on the device")
    end
  end)

  cuda_it("converts dtypes on the device as the CPU does", function()
    local dts = { "float32", "float64", "float16", "bfloat16", "int64", "bool" }
    local x = lunet.tensor({ { -2.75, -1, 0, 0.5 }, { 1.5, 3.25, 70000, -0.1 } },
                           { dtype = "float64" })
    for _, from in ipairs(dts) do
      local a = x:to(from)
      for _, to in ipairs(dts) do
        assert_same(a:to(to), a:to(DEV):to(to), from .. " -> " .. to)
        assert_same(a:to(to), a:to(DEV, to), from .. " -> cuda " .. to)
      end
    end
  end)

  cuda_it("copies strided and channels-last tensors between devices", function()
    local x = randn({ 2, 3, 4, 5 }, "float32")
    local views = {
      transposed = x:transpose(2, 4), narrowed = x:narrow(3, 2, 2),
      selected = x:select(2, 2), expanded = randn({ 1, 3, 1, 5 }, "float32"):expand(2, 3, 4, 5),
      channels_last = x:contiguous("channels_last"), permuted = x:permute(1, 3, 4, 2),
    }
    for name, v in pairs(views) do
      local g = v:to(DEV)
      assert_same(v:contiguous(), g:contiguous(), name .. " to the device")
      assert.are.same(v:tolist(), g:cpu():tolist(), name .. " back")
      -- a strided view of a CUDA tensor copied back and made contiguous there
      assert_same(v:contiguous(), g:contiguous(), name .. " contiguous on the device")
    end
    local cl = x:to(DEV):contiguous("channels_last")
    assert.is_true(cl:is_contiguous("channels_last"))
    assert.are.same(x:contiguous("channels_last"):stride(), cl:stride())
    assert.is_true(cl:clone():is_contiguous("channels_last"), "clone keeps the format")
    assert.is_true(cl:cpu():is_contiguous("channels_last"), "the copy back keeps the format")
    local v = x:to(DEV):transpose(1, 2)
    assert_same(x:transpose(1, 2):contiguous(), v:contiguous(), "transposed view on the device")
    local x5 = randn({ 2, 3, 2, 3, 4 }, "float32")
    local cl3 = x5:to(DEV):contiguous("channels_last_3d")
    assert.are.same(x5:contiguous("channels_last_3d"):stride(), cl3:stride())
    assert_same(x5, cl3:contiguous(), "channels_last_3d round trip")
  end)

  cuda_it("copy_ between devices, dtypes and layouts, with broadcasting", function()
    local src = randn({ 3, 1, 5 }, "float64")
    for _, dt in ipairs(FLOATS) do
      local want = lunet.zeros({ 3, 4, 5 }, { dtype = dt }):copy_(src)
      local dst = lunet.zeros({ 3, 4, 5 }, { dtype = dt, device = DEV })
      assert.are.equal(dst, dst:copy_(src), "copy_ returns its tensor")
      assert_same(want, dst, "CPU -> CUDA " .. dt)
      local dst2 = lunet.zeros({ 3, 4, 5 }, { dtype = dt, device = DEV })
      dst2:copy_(src:to(DEV))
      assert_same(want, dst2, "CUDA -> CUDA " .. dt)
      local back = lunet.zeros({ 3, 4, 5 }, { dtype = "float64" }):copy_(dst)
      assert.are.same(want:double():tolist(), back:tolist(), "CUDA -> CPU " .. dt)
    end
    -- into a strided view of a CUDA tensor: only the view changes
    local a = lunet.zeros(4, 6, { device = DEV })
    a:narrow(2, 2, 3):copy_(lunet.ones(4, 3))
    local want = lunet.zeros(4, 6)
    want:narrow(2, 2, 3):copy_(lunet.ones(4, 3))
    assert_same(want, a, "copy_ into a narrowed view")
    local t = lunet.zeros(5, 4, { device = DEV })
    t:t():copy_(lunet.arange(20):view(4, 5))
    assert_same(lunet.arange(20):view(4, 5):t():float():contiguous(), t, "copy_ into a transpose")
    -- x[i] = v on the device
    local r = lunet.zeros(3, 2, { device = DEV })
    r[2] = 5
    r[3] = lunet.tensor({ 1, 2 })
    assert.are.same({ { 0, 0 }, { 5, 5 }, { 1, 2 } }, r:tolist())
  end)

  cuda_it("fills on the device: fill_, zero_, and views", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "bfloat16", "int64", "bool" }) do
      local want = lunet.zeros({ 3, 4 }, { dtype = dt }):fill_(dt == "bool" and 1 or 3)
      local got = lunet.zeros({ 3, 4 }, { dtype = dt, device = DEV })
      assert.are.equal(got, got:fill_(dt == "bool" and 1 or 3))
      assert_same(want, got, "fill_ " .. dt)
      assert_same(lunet.zeros({ 3, 4 }, { dtype = dt }), got:zero_(), "zero_ " .. dt)
    end
    local x = lunet.zeros(4, 5, { device = DEV })
    x:narrow(2, 2, 2):fill_(-1.5)
    x:select(1, 4):fill_(2)
    local want = lunet.zeros(4, 5)
    want:narrow(2, 2, 2):fill_(-1.5)
    want:select(1, 4):fill_(2)
    assert_same(want, x, "fill_ of views")
    local big = lunet.empty(3 * 1024 * 1024 + 7, { device = DEV }):fill_(0.25)
    assert.are.equal(0.25, big:min():item())
    assert.are.equal(0.25, big:max():item())
  end)

  gpu_it("x:cuda(), elements, printing, and no mixing of devices", function()
    local x = lunet.tensor({ { 1.5, 2 }, { 3, 4 } })
    local g = x:cuda()
    assert.are.equal("cuda:0", g.device)
    assert.are.equal("cuda:0", x:cuda(0).device)
    assert.are.equal("cuda:0", x:to("cuda:0").device)
    assert.are.equal("cpu", g:cpu().device)
    assert.are.equal(4, g[2][2]:item())
    assert.are.same({ { 1.5, 2 }, { 3, 4 } }, g:tolist())
    assert.matches("device='cuda:0'", tostring(g), 1, true)
    assert.is_true(lunet.allclose(g, g + 1e-9))
    local c = lunet.ones(2, 2)
    err(function() return g + c end)
    err(function() return lunet.cat({ g, c }) end)
    err(function() return g:matmul(c) end)
    err(function() return lunet.zeros(2, { device = "cuda:" .. lunet.cuda.device_count() }) end)
    err(function() return c:cuda(lunet.cuda.device_count()) end)
  end)
end)

describe("CUDA elementwise ops", function()
  local UNARY = { "neg", "abs", "sqrt", "exp", "log", "relu", "sign" }
  local DOMAIN = { sqrt = positive, log = positive }

  for _, dt in ipairs(FLOATS) do
    cuda_it("unary ops, " .. dt .. ", contiguous and strided", function()
      for _, op in ipairs(UNARY) do
        local x = (DOMAIN[op] or randn)({ 5, 7, 9 }, dt)
        check(function(a) return a[op](a) end, { x }, EW_TOL, op .. " " .. dt)
        check(function(a) return a[op](a) end, { x:transpose(1, 3) }, EW_TOL,
              op .. " transposed " .. dt)
        check(function(a) return lunet[op](a) end, { x:narrow(2, 2, 4) }, EW_TOL,
              "lunet." .. op .. " narrowed " .. dt)
        check(function(a) return -a end, { x }, EW_TOL, "unary minus " .. dt)
      end
      -- large enough for many blocks, with an odd tail
      local big = randn({ 1 << 20 | 3 }, dt)
      check(function(a) return a:relu():abs():exp() end, { big }, EW_TOL, "chain " .. dt)
      check(function(a) return a:exp() end, { lunet.empty(0, 3, { dtype = dt }) }, EW_TOL,
            "empty " .. dt)
    end)
  end

  cuda_it("unary ops on int64 and bool, as the CPU does or refuses", function()
    local i = lunet.randperm(40):view(5, 8) - 20
    for _, op in ipairs(UNARY) do
      check(function(a) return a[op](a) end, { i }, EW_TOL, op .. " int64")
      check(function(a) return a[op](a) end, { i:gt(0) }, EW_TOL, op .. " bool")
    end
  end)

  local BINARY = { "add", "sub", "mul", "div", "pow", "maximum", "minimum" }
  -- broadcasting pairs of shapes, including 0-dim and empty ones
  local SHAPES = { { { 4, 5 }, { 4, 5 } }, { { 4, 1, 5 }, { 3, 1 } }, { { 1 }, { 6, 2 } },
                   { {}, { 3, 4 } }, { { 2, 3, 4, 5 }, { 3, 1, 1 } }, { { 0, 3 }, { 1, 3 } } }

  for _, dt in ipairs(FLOATS) do
    cuda_it("binary ops with broadcasting, " .. dt, function()
      for _, op in ipairs(BINARY) do
        for _, s in ipairs(SHAPES) do
          local a = op == "pow" and positive(s[1], dt) or randn(s[1], dt)
          local b = op == "div" and positive(s[2], dt) or randn(s[2], dt)
          local what = ("%s %s (%s) (%s)"):format(op, dt, table.concat(s[1], ","),
                                                 table.concat(s[2], ","))
          check(function(x, y) return x[op](x, y) end, { a, b }, EW_TOL, what)
          check(function(x, y) return lunet[op](y, x) end, { a, b }, EW_TOL, what .. " swapped")
        end
        local a = randn({ 6, 5 }, dt)
        check(function(x, y) return x[op](x, y) end, { a:t(), randn({ 5, 6 }, dt) }, EW_TOL,
              op .. " transposed " .. dt)
      end
      local x = positive({ 3, 4 }, dt)
      check(function(a) return a + 2 end, { x }, EW_TOL, "x + 2 " .. dt)
      check(function(a) return 2 * a end, { x }, EW_TOL, "2 * x " .. dt)
      check(function(a) return 1.5 - a end, { x }, EW_TOL, "1.5 - x " .. dt)
      check(function(a) return a / 3 end, { x }, EW_TOL, "x / 3 " .. dt)
      check(function(a) return 3 / a end, { x }, EW_TOL, "3 / x " .. dt)
      check(function(a) return a ^ 2 end, { x }, EW_TOL, "x ^ 2 " .. dt)
      check(function(a) return a ^ 0.5 end, { x }, EW_TOL, "x ^ 0.5 " .. dt)
      check(function(a) return 2 ^ a end, { x }, EW_TOL, "2 ^ x " .. dt)
    end)
  end

  cuda_it("type promotion: mixed dtypes, integers, booleans and scalars", function()
    local v = {
      float32 = randn({ 3, 4 }, "float32"), float64 = randn({ 3, 4 }, "float64"),
      float16 = randn({ 3, 4 }, "float16"), bfloat16 = randn({ 3, 4 }, "bfloat16"),
      int64 = lunet.randperm(12):view(3, 4) - 6, bool = randn({ 3, 4 }, "float32"):gt(0),
    }
    local names = { "float32", "float64", "float16", "bfloat16", "int64", "bool" }
    for _, p in ipairs(names) do
      for _, q in ipairs(names) do
        for _, op in ipairs({ "add", "sub", "mul", "div", "maximum" }) do
          local what = ("%s %s %s"):format(p, op, q)
          local want = table.pack(pcall(function() return v[p][op](v[p], v[q]) end))
          if want[1] then
            local got = v[p]:to(DEV)[op](v[p]:to(DEV), v[q]:to(DEV))
            assert.are.equal(want[2].dtype, got.dtype, what .. ": promoted dtype")
          end
          check(function(x, y) return x[op](x, y) end, { v[p], v[q] }, SUM_TOL, what)
        end
      end
      check(function(x) return x + 1 end, { v[p] }, SUM_TOL, p .. " + 1")
      check(function(x) return x * 0.5 end, { v[p] }, SUM_TOL, p .. " * 0.5")
    end
    local i = v.int64
    check(function(x, y) return x / y end, { i, lunet.full({ 3, 4 }, 3) }, SUM_TOL,
          "int64 / int64 gives float32")
    check(function(x) return x ^ 2 end, { i }, SUM_TOL, "int64 ^ 2")
  end)

  for _, dt in ipairs(FLOATS) do
    cuda_it("in-place ops, " .. dt, function()
      for _, op in ipairs({ "add_", "sub_", "mul_", "div_", "pow_" }) do
        local a, b = positive({ 4, 6 }, dt), positive({ 6 }, dt)
        local want, got = a:clone(), a:to(DEV)
        assert.are.equal(got, got[op](got, b:to(DEV)), op .. " returns its tensor")
        want[op](want, b)
        agree(want, got, EW_TOL, op .. " " .. dt)
      end
      local a, b = randn({ 4, 6 }, dt), randn({ 4, 6 }, dt)
      local want, got = a:clone(), a:to(DEV)
      want:add_(b, { alpha = -0.5 })
      got:add_(b:to(DEV), { alpha = -0.5 })
      agree(want, got, EW_TOL, "add_ alpha " .. dt)
      want:sub_(b, { alpha = 2 })
      got:sub_(b:to(DEV), { alpha = 2 })
      agree(want, got, EW_TOL, "sub_ alpha " .. dt)
      -- into a strided view, with another dtype on the right
      local w2, g2 = a:clone(), a:to(DEV)
      w2:narrow(2, 2, 3):mul_(randn({ 4, 3 }, "float64"):fill_(3))
      g2:narrow(2, 2, 3):mul_(lunet.full({ 4, 3 }, 3.0, { dtype = "float64", device = DEV }))
      agree(w2, g2, EW_TOL, "mul_ into a view " .. dt)
    end)
  end

  cuda_it("comparisons give bool on the device, with broadcasting", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "bfloat16", "int64" }) do
      -- small integers: equal elements are common
      local a = (lunet.rand({ 4, 1, 6 }) * 4):long():to(dt)
      local b = (lunet.rand({ 5, 1 }) * 4):long():to(dt)
      for _, op in ipairs({ "eq", "ne", "lt", "le", "gt", "ge" }) do
        check(function(x, y) return x[op](x, y) end, { a, b }, EW_TOL, op .. " " .. dt)
        check(function(x) return x[op](x, 2) end, { a }, EW_TOL, op .. " scalar " .. dt)
        check(function(x, y) return lunet[op](x, y) end, { a, a:to("float64") }, EW_TOL,
              op .. " mixed " .. dt)
      end
    end
  end)
end)

describe("CUDA reductions", function()
  local DIMS = { false, 1, 2, -1, { 1, 3 }, { 2, 3 }, { 1, 2, 3 } }

  local function dims_text(d)
    if type(d) == "table" then return "{" .. table.concat(d, ",") .. "}" end
    return tostring(d)
  end

  for _, dt in ipairs(FLOATS) do
    cuda_it("sum, mean, var and std over dims with keepdim, " .. dt, function()
      local x = randn({ 6, 7, 33 }, dt)
      for _, src in ipairs({ x, x:transpose(1, 3), x:narrow(3, 3, 20) }) do
        for _, d in ipairs(DIMS) do
          for _, keep in ipairs({ false, true }) do
            local what = ("%s dims=%s keepdim=%s"):format(dt, dims_text(d), tostring(keep))
            for _, op in ipairs({ "sum", "mean" }) do
              if d then
                check(function(a) return a[op](a, d, keep) end, { src }, SUM_TOL, op .. " " .. what)
              else
                check(function(a) return a[op](a) end, { src }, SUM_TOL, op .. " " .. what)
              end
            end
            for _, unbiased in ipairs({ true, false }) do
              for _, op in ipairs({ "var", "std" }) do
                local o = { unbiased = unbiased, keepdim = keep }
                check(function(a) if d then return a[op](a, d, o) end return a[op](a, o) end,
                      { src }, SUM_TOL, ("%s unbiased=%s %s"):format(op, unbiased, what))
              end
            end
          end
        end
      end
    end)

    cuda_it("max, min (values and indices), argmax and argmin, " .. dt, function()
      local x = distinct({ 4, 5, 6 }, dt)
      for _, src in ipairs({ x, x:permute(3, 1, 2) }) do
        for _, op in ipairs({ "max", "min", "argmax", "argmin" }) do
          check(function(a) return a[op](a) end, { src }, EW_TOL, op .. " all " .. dt)
          for _, d in ipairs({ 1, 2, 3, -1 }) do
            for _, keep in ipairs({ false, true }) do
              check(function(a) return a[op](a, d, keep) end, { src }, EW_TOL,
                    ("%s dim=%d keepdim=%s %s"):format(op, d, keep, dt))
            end
          end
        end
      end
    end)
  end

  cuda_it("large reductions: one channel of 2^22 values and many short rows", function()
    local x = lunet.rand({ 1 << 22 }, { dtype = "float32" })
    check(function(a) return a:sum() end, { x }, SUM_TOL, "sum 2^22")
    check(function(a) return a:mean() end, { x }, SUM_TOL, "mean 2^22")
    check(function(a) return a:var() end, { x }, SUM_TOL, "var 2^22")
    check(function(a) return a:max() end, { x }, SUM_TOL, "max 2^22")
    check(function(a) return a:argmax() end, { x }, SUM_TOL, "argmax 2^22")
    local rows = lunet.rand({ 1 << 16, 3 }, { dtype = "float32" })
    check(function(a) return a:sum(1) end, { rows }, SUM_TOL, "sum over 2^16 rows, 3 columns")
    check(function(a) return a:sum(2) end, { rows }, SUM_TOL, "sum of 2^16 rows of 3")
    check(function(a) return a:var(1, { unbiased = false }) end, { rows }, SUM_TOL, "var over rows")
    -- data far from zero keep their precision
    local far = lunet.randn({ 1 << 16 }, { dtype = "float32" }) * 0.01 + 1e4
    check(function(a) return a:var() end, { far }, { float32 = { rtol = 1e-3, atol = 1e-6 } },
          "var of 1e4 + 0.01 randn")
  end)

  cuda_it("integer and boolean reductions, and empty ones", function()
    local i = lunet.randperm(60):view(3, 4, 5) - 30
    check(function(a) return a:sum() end, { i }, SUM_TOL, "int64 sum")
    check(function(a) return a:sum(2, true) end, { i }, SUM_TOL, "int64 sum dim")
    check(function(a) return a:max(3) end, { i }, SUM_TOL, "int64 max dim")
    check(function(a) return a:argmin() end, { i }, SUM_TOL, "int64 argmin")
    check(function(a) return a:gt(0):sum() end, { i }, SUM_TOL, "bool sum")
    local e = lunet.zeros(0, 4)
    check(function(a) return a:sum() end, { e }, SUM_TOL, "empty sum")
    check(function(a) return a:sum(1) end, { e }, SUM_TOL, "empty sum over the empty dim")
    check(function(a) return a:mean(1) end, { e }, SUM_TOL, "empty mean (nan)")
    check(function(a) return a:max() end, { e }, SUM_TOL, "max of nothing (refused)")
    check(function(a) return a:sum(2) end, { e }, SUM_TOL, "sum over a full dim of nothing")
  end)
end)

describe("CUDA matmul", function()
  local SHAPES = {
    { { 7 }, { 7 } }, { { 5, 7 }, { 7 } }, { { 7 }, { 7, 3 } }, { { 5, 7 }, { 7, 3 } },
    { { 4, 5, 7 }, { 4, 7, 3 } }, { { 4, 5, 7 }, { 7, 3 } }, { { 5, 7 }, { 4, 7, 3 } },
    { { 2, 1, 5, 7 }, { 3, 7, 2 } }, { { 0, 7 }, { 7, 3 } }, { { 5, 0 }, { 0, 3 } },
    { { 65, 130 }, { 130, 67 } }, { { 3, 200, 64 }, { 3, 64, 33 } },
  }

  for _, dt in ipairs(FLOATS) do
    cuda_it("forward and backward for every operand rank, " .. dt, function()
      for _, s in ipairs(SHAPES) do
        local what = ("%s (%s) x (%s)"):format(dt, table.concat(s[1], ","), table.concat(s[2], ","))
        local a, b = randn(s[1], dt), randn(s[2], dt)
        check(function(x, y) return x:matmul(y) end, { a, b }, MATMUL_TOL, what)
        -- backward: the gradients of both operands
        local ok = pcall(function() return a:matmul(b) end)
        if ok then
          local ac, bc = leaf(a, "cpu"), leaf(b, "cpu")
          local ag, bg = leaf(a), leaf(b)
          local yc = ac:matmul(bc)
          local gy = randn(yc:size(), dt)
          yc:backward(gy)
          ag:matmul(bg):backward(gy:to(DEV))
          agree(ac.grad, ag.grad, MATMUL_TOL, what .. " grad a")
          agree(bc.grad, bg.grad, MATMUL_TOL, what .. " grad b")
        end
      end
      -- transposed and strided operands (cuBLAS's op flags or a copy)
      local a, b = randn({ 9, 6 }, dt), randn({ 8, 9 }, dt)
      check(function(x, y) return x:t():matmul(y:t()) end, { a, b }, MATMUL_TOL, dt .. " a^T b^T")
      check(function(x, y) return lunet.matmul(x:narrow(2, 2, 4):t(), y:narrow(1, 2, 9)) end,
            { a, randn({ 12, 5 }, dt) }, MATMUL_TOL, dt .. " narrowed")
      check(function(x, y) return x:transpose(2, 3):matmul(y) end,
            { randn({ 3, 6, 5 }, dt), randn({ 3, 6, 4 }, dt) }, MATMUL_TOL, dt .. " batched transposed")
    end)
  end

  cuda_it("mixed dtypes and devices are refused as on the CPU", function()
    check(function(x, y) return x:matmul(y) end,
          { randn({ 3, 4 }, "float32"), randn({ 4, 2 }, "float64") }, MATMUL_TOL, "float32 x float64")
    check(function(x, y) return x:matmul(y) end,
          { randn({ 3, 4 }, "float32"), randn({ 5, 2 }, "float32") }, MATMUL_TOL, "size mismatch")
  end)
end)

describe("CUDA cat", function()
  cuda_it("joins along every dim, strided, empty and mixed inputs", function()
    for _, dt in ipairs(FLOATS) do
      local a, b, c = randn({ 2, 3, 4 }, dt), randn({ 2, 5, 4 }, dt), randn({ 2, 1, 4 }, dt)
      check(function(x, y, z) return lunet.cat({ x, y, z }, 2) end, { a, b, c }, EW_TOL,
            "dim 2 " .. dt)
      check(function(x, y) return lunet.cat({ x, y }) end, { a, a }, EW_TOL, "dim 1 " .. dt)
      check(function(x, y) return lunet.cat({ x, y }, -1) end, { a, a }, EW_TOL, "dim -1 " .. dt)
      check(function(x, y) return lunet.cat({ x:transpose(1, 3), y:transpose(1, 3) }, 1) end,
            { a, a }, EW_TOL, "transposed " .. dt)
      check(function(x, y) return lunet.cat({ x, y }, 1) end,
            { a:transpose(2, 3):contiguous():transpose(2, 3), lunet.zeros({ 0, 3, 4 }, { dtype = dt }) },
            EW_TOL, "with an empty tensor " .. dt)
      check(function(x) return lunet.cat({ x }, 2) end, { a }, EW_TOL, "one tensor " .. dt)
    end
    check(function(x, y) return lunet.cat({ x, y }) end,
          { randn({ 2, 3 }, "float16"), randn({ 1, 3 }, "float64") }, EW_TOL, "mixed dtypes")
    check(function(x, y) return lunet.cat({ x, y }) end,
          { randn({ 2, 3 }, "float32"), randn({ 1, 4 }, "float32") }, EW_TOL, "size mismatch")
    local big = randn({ 300, 1000 }, "float32")
    check(function(x, y) return lunet.cat({ x, y }, 2) end, { big, big }, EW_TOL, "large")
    -- the gradient splits back onto the device
    local x = randn({ 2, 3 }, "float32"):to(DEV):requires_grad_(true)
    local y = randn({ 2, 2 }, "float32"):to(DEV):requires_grad_(true)
    lunet.cat({ x, y }, 2):sum():backward()
    assert_same(lunet.ones(2, 3), x.grad, "cat grad x")
    assert_same(lunet.ones(2, 2), y.grad, "cat grad y")
  end)
end)

describe("CUDA autograd", function()
  cuda_it("gradients through elementwise ops and reductions agree with the CPU", function()
    for _, dt in ipairs(FLOATS) do
      local x, w, b = randn({ 8, 5 }, dt), positive({ 5 }, dt), randn({ 1, 5 }, dt)
      local function run(device)
        local xs, ws, bs = leaf(x, device), leaf(w, device), leaf(b, device)
        local h = (xs * ws + bs):relu()
        local loss = (h:exp() - (h + 0.5):sqrt() + ws:log() / 3):pow(2):mean() + h:var(1):sum()
                     + h:max() - xs:abs():sum(2):mean() + lunet.maximum(xs, bs):sum()
        loss:backward()
        return loss:detach(), xs.grad, ws.grad, bs.grad
      end
      local want = { run("cpu") }
      local got = { run(DEV) }
      local names = { "loss", "x.grad", "w.grad", "b.grad" }
      for i = 1, 4 do agree(want[i], got[i], SUM_TOL, names[i] .. " " .. dt) end
    end
  end)

  cuda_it("backward with a CUDA gradient, and grads accumulating on the device", function()
    local x = randn({ 3, 4 }, "float32"):to(DEV):requires_grad_(true)
    local g = randn({ 3, 4 }, "float32")
    local y1, y2 = x * 2, x * 2
    y1:backward(g:to(DEV))
    y2:backward(g:to(DEV))
    assert_agree(g * 4, x.grad, SUM_TOL.float32, "accumulated grad")
  end)
end)

describe("CUDA random numbers", function()
  cuda_it("rand, randn and their _like forms draw the CPU's values for the same seed", function()
    for _, dt in ipairs(FLOATS) do
      for _, fn in ipairs({ "rand", "randn" }) do
        lunet.manual_seed(1234)
        local want = lunet[fn]({ 1000, 3 }, { dtype = dt })
        local want2 = lunet[fn]({ 77 }, { dtype = dt })
        lunet.manual_seed(1234)
        local got = lunet[fn]({ 1000, 3 }, { dtype = dt, device = DEV })
        local got2 = lunet[fn]({ 77 }, { dtype = dt, device = DEV })
        assert_agree(want, got, EW_TOL[dt], fn .. " " .. dt)
        assert_agree(want2, got2, EW_TOL[dt], fn .. " " .. dt .. ", the draw after")
        lunet.manual_seed(7)
        local wl = lunet[fn .. "_like"](want)
        lunet.manual_seed(7)
        local gl = lunet[fn .. "_like"](got)
        assert_agree(wl, gl, EW_TOL[dt], fn .. "_like " .. dt)
      end
    end
  end)

  cuda_it("one generator: CPU and CUDA draws take turns as CPU draws would", function()
    lunet.manual_seed(99)
    local a, b, c = lunet.randn(10), lunet.randn(1001), lunet.rand(5)
    lunet.manual_seed(99)
    local ga = lunet.randn(10, { device = DEV })
    local gb = lunet.randn(1001)
    local gc = lunet.rand(5, { device = DEV })
    assert_agree(a, ga, EW_TOL.float32, "first draw")
    assert_close(b, gb, EW_TOL.float32, "second draw (CPU)")
    assert_agree(c, gc, EW_TOL.float32, "third draw")
    local s = lunet.get_rng_state()
    local d = lunet.randn(33, { device = DEV })
    lunet.set_rng_state(s)
    assert_agree(d:cpu(), lunet.randn(33, { device = DEV }), EW_TOL.float32, "set_rng_state")
  end)

  cuda_it("uniform_ and normal_ fill device tensors as the CPU's", function()
    for _, dt in ipairs(FLOATS) do
      lunet.manual_seed(3)
      local want_u = lunet.empty({ 513 }, { dtype = dt }):uniform_(-2, 3)
      local want_n = lunet.empty({ 4, 129 }, { dtype = dt }):normal_(1, 0.5)
      lunet.manual_seed(3)
      local got_u = lunet.empty({ 513 }, { dtype = dt, device = DEV }):uniform_(-2, 3)
      local got_n = lunet.empty({ 4, 129 }, { dtype = dt, device = DEV }):normal_(1, 0.5)
      assert_agree(want_u, got_u, EW_TOL[dt], "uniform_ " .. dt)
      assert_agree(want_n, got_n, EW_TOL[dt], "normal_ " .. dt)
    end
    -- a large draw: the statistics are those of N(0, 1)
    local n = lunet.randn({ 1 << 22 }, { device = DEV })
    assert.is_true(math.abs(n:mean():item()) < 5e-3)
    assert.is_true(math.abs(n:std():item() - 1) < 5e-3)
  end)
end)

describe("lunet.cuda", function()
  gpu_it("counts devices, names them and synchronizes", function()
    assert.is_true(lunet.cuda.is_available())
    assert.is_true(lunet.cuda.device_count() >= 1)
    local name = lunet.cuda.get_device_name()
    assert.are.equal("string", type(name))
    assert.is_true(#name > 0)
    assert.are.equal(name, lunet.cuda.get_device_name(0))
    local x = lunet.randn({ 1 << 20 }, { device = DEV }) * 2
    lunet.cuda.synchronize()
    lunet.cuda.synchronize(0)
    assert.are.equal(DEV_NAME, x.device)
    err(lunet.cuda.synchronize, lunet.cuda.device_count())
    err(lunet.cuda.get_device_name, -1)
  end)

  gpu_it("memory_stats()['cuda:0'] counts device allocations", function()
    collectgarbage()
    collectgarbage()
    lunet.reset_peak_memory_stats("cuda:0")
    local before = lunet.memory_stats()["cuda:0"]
    assert.is_table(before)
    local cpu_before = lunet.memory_stats().cpu.in_use
    local x = lunet.empty(1 << 20, { device = DEV })   -- 4 MiB
    local during = lunet.memory_stats()["cuda:0"]
    assert.is_true(during.in_use >= before.in_use + 4 * (1 << 20), "in_use grows")
    assert.is_true(during.peak >= during.in_use, "peak")
    assert.is_true(during.allocations >= before.allocations + 1, "allocations")
    assert.is_true(lunet.memory_stats().cpu.in_use < cpu_before + (1 << 20),
                   "a device tensor takes no host memory")
    x = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local after = lunet.memory_stats()["cuda:0"]
    assert.are.equal(before.in_use, after.in_use, "freed (cached blocks do not count)")
    assert.is_true(after.peak >= before.in_use + 4 * (1 << 20), "the peak stays")
    lunet.empty_cache()
    assert.are.equal(before.in_use, lunet.memory_stats()["cuda:0"].in_use)
    lunet.reset_peak_memory_stats()
    assert.are.equal(after.in_use, lunet.memory_stats()["cuda:0"].peak)
  end)

  gpu_it("reuses freed device memory: a loop of allocations does not grow", function()
    collectgarbage()
    local base = lunet.memory_stats()["cuda:0"].in_use
    for _ = 1, 200 do
      local y <close> = lunet.randn(1 << 16, { device = DEV }) + 1
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(base, lunet.memory_stats()["cuda:0"].in_use)
  end)
end)
