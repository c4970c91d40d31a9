--[[
lunet.optim's checkpoint helpers: an optimizer's state dict as the flat
tensors and string metadata that lunet.save writes (safetensors), and back.

  local t, meta = optim.flatten_state_dict(opt:state_dict(), "optim.",
                                           model:state_dict(), {})
  assert(lunet.save(path, t, { metadata = meta }))
  ...
  local t, meta = assert(lunet.load(path))
  local osd, rest = optim.unflatten_state_dict(t, meta, "optim.")
  model:load_state_dict(rest)
  opt:load_state_dict(osd)

Names, under the prefix (default "optim."):
  tensors   state.<i>.<key>           (exp_avg, momentum_buffer, ...)
  metadata  state.<i>.<key>           non-tensor state (step)
            param_groups.<g>.<key>    each group's options and params
Metadata values are text: numbers in the shortest form that reads back to
the same double, true/false, and arrays of numbers as [a,b] (params,
betas), so Python tools can read them too.
]]
local lunet = require("lunet")

local M = {}

-- The shortest of %.15g..%.17g that reads back as the same number.
local function number_text(x)
  if math.type(x) == "integer" then return ("%d"):format(x) end
  if x ~= x or x == math.huge or x == -math.huge then
    error("cannot store a non-finite number (" .. tostring(x) .. ") in a checkpoint", 4)
  end
  for digits = 15, 17 do
    local s = ("%." .. digits .. "g"):format(x)
    if tonumber(s) == x then
      if not s:find("[.eEn]") then s = s .. ".0" end   -- stays a float
      return s
    end
  end
end

local function encode(v, name)
  local ty = type(v)
  if ty == "number" then return number_text(v) end
  if ty == "boolean" then return tostring(v) end
  if ty == "table" then
    local parts, count = {}, 0
    for _ in pairs(v) do count = count + 1 end
    for i = 1, #v do
      if type(v[i]) ~= "number" then break end
      parts[i] = number_text(v[i])
    end
    if #parts == #v and count == #v then return "[" .. table.concat(parts, ",") .. "]" end
  end
  error(("flatten_state_dict: cannot store '%s' (a %s) in a checkpoint"):format(name, ty), 3)
end

local function decode(s, name)
  if s == "true" then return true elseif s == "false" then return false end
  local list = s:match("^%[(.*)%]$")
  if list then
    local v = {}
    for item in list:gmatch("[^,]+") do
      v[#v + 1] = tonumber(item) or error(("bad number '%s' in '%s'"):format(item, name), 3)
    end
    return v
  end
  return tonumber(s) or error(("unflatten_state_dict: cannot read '%s' = '%s'"):format(name, s), 3)
end

local function check_prefix(prefix, arg)
  if prefix == nil then return "optim." end
  if type(prefix) ~= "string" then
    error(("bad argument #%d (prefix string expected, got %s)"):format(arg, type(prefix)), 3)
  end
  return prefix
end

--- optim.flatten_state_dict(sd [, prefix="optim." [, tensors [, metadata]]])
-- -> tensors, metadata: sd's entries added to the given tables (new
-- tables when absent), ready for lunet.save(path, tensors, {metadata=...}).
function M.flatten_state_dict(sd, prefix, tensors, metadata)
  if type(sd) ~= "table" or type(sd.state) ~= "table" or type(sd.param_groups) ~= "table" then
    error("bad argument #1 to 'flatten_state_dict' (optimizer state dict expected)", 2)
  end
  prefix = check_prefix(prefix, 2)
  tensors, metadata = tensors or {}, metadata or {}
  for i, st in pairs(sd.state) do
    for k, v in pairs(st) do
      local name = ("%sstate.%d.%s"):format(prefix, i, k)
      if lunet.is_tensor(v) then tensors[name] = v else metadata[name] = encode(v, name) end
    end
  end
  for gi, g in ipairs(sd.param_groups) do
    for k, v in pairs(g) do
      local name = ("%sparam_groups.%d.%s"):format(prefix, gi, k)
      metadata[name] = encode(v, name)
    end
  end
  return tensors, metadata
end

--- optim.unflatten_state_dict(tensors, metadata [, prefix="optim."])
-- -> sd, rest: the optimizer state dict found under prefix, and a new
-- table of the other tensors (with _metadata), such as a model's.
function M.unflatten_state_dict(tensors, metadata, prefix)
  if type(tensors) ~= "table" then
    error("bad argument #1 to 'unflatten_state_dict' (table of tensors expected)", 2)
  end
  if type(metadata) ~= "table" then
    error("bad argument #2 to 'unflatten_state_dict' (metadata table expected)", 2)
  end
  prefix = check_prefix(prefix, 3)
  local sd, rest, found = { state = {}, param_groups = {} }, {}, false
  local function entry(tbl, i)
    i = math.tointeger(tonumber(i))
    tbl[i] = tbl[i] or {}
    return tbl[i]
  end
  for name, t in pairs(tensors) do
    local key = type(name) == "string" and name:sub(1, #prefix) == prefix and name:sub(#prefix + 1)
    local i, k = (key or ""):match("^state%.(%d+)%.(.+)$")
    if i then
      entry(sd.state, i)[k] = t
      found = true
    else
      rest[name] = t
    end
  end
  for name, s in pairs(metadata) do
    if type(name) == "string" and name:sub(1, #prefix) == prefix then
      local key = name:sub(#prefix + 1)
      local i, k = key:match("^state%.(%d+)%.(.+)$")
      if i then
        entry(sd.state, i)[k] = decode(s, name)
      else
        local gi, gk = key:match("^param_groups%.(%d+)%.(.+)$")
        if not gi then error(("unflatten_state_dict: unknown entry '%s'"):format(name), 2) end
        entry(sd.param_groups, gi)[gk] = decode(s, name)
      end
      found = true
    end
  end
  if not found then
    error(("unflatten_state_dict: no optimizer state under the prefix '%s'"):format(prefix), 2)
  end
  for gi in pairs(sd.param_groups) do
    if gi > #sd.param_groups then
      error("unflatten_state_dict: the parameter groups are not numbered 1, 2, ...", 2)
    end
  end
  return sd, rest
end

return M
