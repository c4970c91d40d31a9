--[[
bench_cuda.lua -- lunet's half of `scripts/bench --cuda` (issue 7), and the
GPU report.

  lunet bench_cuda.lua run --dir DIR --out FILE [--quick]
      Writes DIR/manifest.tsv (the cases and the sampling parameters, which
      bench_torch_cuda.py follows: the case list lives only here), then
      times each case's measures with lunet's own kernels
      (lunet.backends.cudnn.enabled = false) and with cuDNN (true), and a
      device-to-device copy of the input (the roofline's reference).
  lunet bench_cuda.lua cudnn --dir DIR --bin PROGRAM --out FILE [--quick]
      Runs scripts/bench_cudnn.c's program (built by scripts/bench) on
      each case of DIR/manifest.tsv and writes its medians as samples.
  lunet bench_cuda.lua report [--markdown FILE] FILE...
      Prints the table from the sample files of lunet, PyTorch and
      bench_cudnn: medians, ratios, fraction of the copy bandwidth, targets.

Timing: every sample is lunet.cuda.synchronize(), the clock, `reps` calls,
synchronize, the clock again, divided by reps (reps makes a sample last a
few milliseconds); a measure's time is the median of its samples. Sample
files are tab-separated lines:
  sample <case> <measure> <who> <seconds per call>
  meta <key> <value>
who is "lunet" (own kernels), "lunet+cudnn", "torch:<params>" (PyTorch
with float32 parameters, "mixed", or parameters of the input's dtype,
"same") or "cudnn" (scripts/bench_cudnn.c, which times each call between
two CUDA events and prints the median: one sample per measure); measure
"copy" is the device-to-device copy of the input's bytes.
]]
local lunet = require("lunet")
local common = dofile(arg[0]:match("^(.-)[^/]*$") .. "bench_common.lua")
local median = common.median

-- The cases of issue 7. bytes: elements times the element size.
local CASES = {
  { key = "2d-f16-cl", label = "BatchNorm2d (32,256,56,56) float16 channels-last",
    module = "BatchNorm2d", shape = { 32, 256, 56, 56 }, dtype = "float16", format = "channels_last" },
  { key = "2d-f32", label = "BatchNorm2d (32,256,56,56) float32 NCHW",
    module = "BatchNorm2d", shape = { 32, 256, 56, 56 }, dtype = "float32", format = "contiguous" },
  { key = "2d-bf16-cl", label = "BatchNorm2d (64,64,112,112) bfloat16 channels-last",
    module = "BatchNorm2d", shape = { 64, 64, 112, 112 }, dtype = "bfloat16", format = "channels_last" },
  { key = "1d-f32", label = "BatchNorm1d (100000,32) float32",
    module = "BatchNorm1d", shape = { 100000, 32 }, dtype = "float32", format = "contiguous" },
}
local ELEMENT = { float32 = 4, float16 = 2, bfloat16 = 2, float64 = 8 }

-- What each measure must move in input sizes: forward reads x and writes
-- y; backward reads x and dy and writes dx. Targets (issue 7): at least
-- 1.0x cuDNN and PyTorch everywhere, 70% of the copy bandwidth on the
-- large shapes (all four are).
local MEASURES = {
  { key = "train_fwd", label = "train forward", moves = 2 },
  { key = "train_fwd_bwd", label = "train forward+backward", moves = 5 },
  { key = "eval_fwd", label = "eval forward", moves = 2 },
}
local TARGET = { ratio = 1.0, roofline = 0.7 }


-- Samples of fn: warm-up, then `p.samples` samples of `reps` calls
-- between two synchronizations, reps chosen so that a sample lasts about
-- p.sample_s seconds.
local function time(fn, p)
  local sync, clock = lunet.cuda.synchronize, lunet.clock
  for _ = 1, p.warm do fn() end
  sync()
  local t0 = clock()
  fn()
  sync()
  local reps = math.max(1, math.min(1000, math.ceil(p.sample_s / math.max(clock() - t0, 1e-6))))
  local out = {}
  for i = 1, p.samples do
    sync()
    t0 = clock()
    for _ = 1, reps do fn() end
    sync()
    out[i] = (clock() - t0) / reps
  end
  return out
end

-- The step of each measure on a case's module and inputs. Outputs are
-- closed at once (their memory goes back to the caching allocator, as
-- PyTorch's does when a result is dropped); gradients are reset to nil.
local function steps_for(m, x, dy)
  local xg = x:detach():requires_grad_(true)
  local function forward()
    local y <close> = m(x)
  end
  return {
    train_fwd = forward,
    eval_fwd = forward,
    train_fwd_bwd = function()
      xg.grad, m.weight.grad, m.bias.grad = nil, nil, nil
      local y <close> = m(xg)
      y:backward(dy)
    end,
  }
end

local function run(o)
  assert(o.dir and o.out, "run needs --dir DIR and --out FILE")
  assert(lunet.cuda.is_available(), "bench_cuda.lua: no CUDA device")
  local out = assert(io.open(o.out, "w"))
  local function emit(...)
    local t = table.pack(...)
    for i = 1, t.n do t[i] = tostring(t[i]) end
    out:write(table.concat(t, "\t"), "\n")
    out:flush()
  end
  local p = o.quick and { warm = 2, samples = 3, sample_s = 0.002 }
                     or { warm = 10, samples = 15, sample_s = 0.02 }
  local manifest = assert(io.open(o.dir .. "/manifest.tsv", "w"))
  manifest:write(("params\t%d\t%d\t%s\n"):format(p.warm, p.samples, p.sample_s))
  local mkeys = {}
  for _, ms in ipairs(MEASURES) do mkeys[#mkeys + 1] = ms.key end
  manifest:write("measures\t", table.concat(mkeys, ","), "\n")
  for _, c in ipairs(CASES) do
    manifest:write(table.concat({ "case", c.key, c.module, table.concat(c.shape, ","), c.dtype,
                                  c.format }, "\t"), "\n")
  end
  manifest:close()

  local cudnn = lunet.backends and lunet.backends.cudnn
  local variants = { { who = "lunet", cudnn = false } }
  if cudnn and (cudnn.is_available == nil or cudnn.is_available()) then
    variants[2] = { who = "lunet+cudnn", cudnn = true }
  end
  emit("meta", "device", lunet.cuda.get_device_name and lunet.cuda.get_device_name(0) or "?")
  emit("meta", "lunet", lunet.version)
  emit("meta", "cudnn", cudnn and cudnn.version and tostring(cudnn.version()) or "-")
  lunet.manual_seed(0)
  for _, c in ipairs(CASES) do
    io.stderr:write("  ", c.label, "\n")
    local d = { dtype = c.dtype, device = "cuda" }
    local x = lunet.randn(c.shape, d)
    local dy = lunet.randn(c.shape, d)
    if c.format ~= "contiguous" then
      x, dy = x:contiguous(c.format), dy:contiguous(c.format)
    end
    local n = 1
    for _, s in ipairs(c.shape) do n = n * s end
    emit("meta", "bytes:" .. c.key, n * ELEMENT[c.dtype])
    local dst = x:clone()
    for _, s in ipairs(time(function() dst:copy_(x) end, p)) do emit("sample", c.key, "copy", "lunet", s) end
    for _, v in ipairs(variants) do
      if cudnn then cudnn.enabled = v.cudnn end
      local m = lunet.nn[c.module](c.shape[2], { dtype = c.dtype, device = "cuda" })
      local steps = steps_for(m, x, dy)
      for _, ms in ipairs(MEASURES) do
        m:train(ms.key ~= "eval_fwd")
        for _, s in ipairs(time(steps[ms.key], p)) do emit("sample", c.key, ms.key, v.who, s) end
      end
    end
    if cudnn then cudnn.enabled = true end
    x, dy, dst = nil, nil, nil
    collectgarbage()
    lunet.empty_cache()
  end
  out:close()
end

-- bench_cudnn's cases for ours, and its layouts for our memory formats.
local CUDNN_CASE = { train = "train_fwd", train_backward = "train_fwd_bwd", eval = "eval_fwd" }
local CUDNN_LAYOUT = { contiguous = "nchw", channels_last = "nhwc" }

-- Each case of the manifest through the bench_cudnn program: its lines
-- "bench_cudnn case=... median_ms=..." become samples; a case cuDNN
-- refuses ("error=...") is reported and left out.
local function run_cudnn(o)
  assert(o.dir and o.bin and o.out, "cudnn needs --dir DIR --bin PROGRAM --out FILE")
  local out = assert(io.open(o.out, "w"))
  local runs = o.quick and "--runs 5 --warmup 2" or "--runs 50 --warmup 10"
  for line in io.lines(o.dir .. "/manifest.tsv") do
    local key, shape, dtype, format = line:match("^case\t([^\t]+)\t[^\t]+\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if key then
      local cmd = ("%q --shape %s --dtype %s --layout %s --cases train,train_backward,eval %s")
                  :format(o.bin, shape, dtype, CUDNN_LAYOUT[format], runs)
      local p = assert(io.popen(cmd .. " 2>&1"))
      for l in p:lines() do
        local case, ms = l:match("^bench_cudnn case=(%S+) .* median_ms=(%S+)")
        if case and CUDNN_CASE[case] then
          out:write(("sample\t%s\t%s\tcudnn\t%s\n"):format(key, CUDNN_CASE[case], tonumber(ms) / 1e3))
        else
          io.stderr:write("  bench_cudnn: ", l, "\n")
        end
      end
      p:close()
    end
  end
  out:close()
end

-- ---- report ----

local function read_files(files)
  local d = { samples = {}, meta = {}, whos = {} }
  for _, f in ipairs(files) do
    for line in io.lines(f) do
      local t = {}
      for field in line:gmatch("[^\t]+") do t[#t + 1] = field end
      if t[1] == "sample" and #t == 5 then
        local k = t[2] .. "|" .. t[3] .. "|" .. t[4]
        d.samples[k] = d.samples[k] or {}
        table.insert(d.samples[k], tonumber(t[5]))
        d.whos[t[4]] = true
      elseif t[1] == "meta" then
        d.meta[t[2]] = d.meta[t[2]] or t[3]
      end
    end
  end
  return d
end

local function fmt_ms(s) return s and ("%.3f"):format(s * 1e3) or "-" end

local function report(o)
  assert(#o.files >= 1, "report needs sample files")
  local d = read_files(o.files)
  local function med(case, measure, who) return median(d.samples[case .. "|" .. measure .. "|" .. who] or {}) end
  -- PyTorch: the faster of its parameter configurations.
  local function torch(case, measure)
    local best, which
    for who in pairs(d.whos) do
      local t = who:match("^torch:") and med(case, measure, who)
      if t and (best == nil or t < best) then best, which = t, who:sub(7) end
    end
    return best, which
  end
  local header = { "case", "lunet ms", "+cudnn ms", "torch ms", "cudnn ms", "torch/lunet",
                   "cudnn/lunet", "roofline", "" }
  local rows, misses = {}, 0
  for _, c in ipairs(CASES) do
    rows[#rows + 1] = { c.label }
    local copy = med(c.key, "copy", "lunet") or med(c.key, "copy", "torch:mixed")
    for _, ms in ipairs(MEASURES) do
      -- lunet as a user gets it: the faster of its kernels and cuDNN
      local own, withc = med(c.key, ms.key, "lunet"), med(c.key, ms.key, "lunet+cudnn")
      local l = own and withc and math.min(own, withc) or own or withc
      local t, tw = torch(c.key, ms.key)
      local k = med(c.key, ms.key, "cudnn")
      local rt, rk = t and l and t / l, k and l and k / l
      local roof = copy and l and ms.moves / 2 * copy / l
      local ok = l ~= nil and (rt or 0) >= TARGET.ratio and (k == nil or rk >= TARGET.ratio)
                 and (roof or 0) >= TARGET.roofline
      if not ok then misses = misses + 1 end
      rows[#rows + 1] = { "  " .. ms.label, fmt_ms(own), fmt_ms(withc),
        t and ("%s (%s)"):format(fmt_ms(t), tw) or "-", fmt_ms(k),
        rt and ("%.2fx"):format(rt) or "-", rk and ("%.2fx"):format(rk) or "-",
        roof and ("%d%%"):format(math.floor(roof * 100 + 0.5)) or "-", ok and "pass" or "MISS" }
    end
  end
  local lines = common.plain_table(header, rows)
  local notes = {
    "",
    "ms: median per call (each sample: synchronize, reps calls, synchronize); lunet: own kernels",
    "(lunet.backends.cudnn.enabled=false), +cudnn: enabled=true; ratios and roofline use the faster",
    "of the two; torch: the faster of float32 parameters (mixed) and parameters of the input's",
    "dtype (same); cudnn: scripts/bench_cudnn.c; roofline: bytes that must move (forward 2, forward+",
    "backward 5 input sizes) over time, against a device-to-device copy of the input measured in",
    ("this run. targets: >= %.1fx PyTorch and cuDNN, >= %d%% roofline."):format(TARGET.ratio,
                                                                               TARGET.roofline * 100),
  }
  for _, c in ipairs(CASES) do
    local copy = med(c.key, "copy", "lunet")
    local bytes = tonumber(d.meta["bytes:" .. c.key])
    if copy and bytes then
      notes[#notes + 1] = ("copy of %-48s %7.1f MB: %.3f ms, %.0f GB/s (read + write)")
                          :format(c.label, bytes / 1e6, copy * 1e3, 2 * bytes / copy / 1e9)
    end
  end
  notes[#notes + 1] = ("device: %s; lunet %s; cuDNN %s; torch %s; %d target(s) missed")
                      :format(d.meta.device or "?", d.meta.lunet or "?", d.meta.cudnn or "?",
                              d.meta.torch or "?", misses)
  for _, n in ipairs(notes) do lines[#lines + 1] = n end
  print(table.concat(lines, "\n"))
  if o.markdown then
    local f = assert(io.open(o.markdown, "w"))
    local function md(r) return "| " .. table.concat(r, " | ") .. " |" end
    f:write(md(header), "\n", md({ "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "---" }), "\n")
    for _, r in ipairs(rows) do
      if #r == 1 then f:write(md({ "**" .. r[1] .. "**", "", "", "", "", "", "", "", "" }), "\n")
      else
        local m = { table.unpack(r) }
        m[1] = m[1]:gsub("^%s+", "")
        f:write(md(m), "\n")
      end
    end
    for _, n in ipairs(notes) do f:write(n, "  \n") end
    f:close()
  end
end

local mode, o = common.parse(arg, { "--out", "--dir", "--markdown", "--bin" })
if mode == "run" then run(o)
elseif mode == "cudnn" then run_cudnn(o)
elseif mode == "report" then report(o)
else
  io.stderr:write("usage: lunet bench_cuda.lua run --dir DIR --out FILE [--quick]\n",
                  "       lunet bench_cuda.lua cudnn --dir DIR --bin PROGRAM --out FILE [--quick]\n",
                  "       lunet bench_cuda.lua report [--markdown FILE] FILE...\n")
  os.exit(2)
end
