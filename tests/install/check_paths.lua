-- check_paths.lua [PREFIX [SCRIPT]]: fail unless lunet's Lua files (and,
-- under stock lua5.4, the C module) are the ones installed under PREFIX,
-- then run SCRIPT if given (the embedding example's normalize.lua). A host
-- that runs it without arguments gives them as LUNET_TEST_PREFIX and
-- LUNET_TEST_SCRIPT.
local prefix, script = ...
prefix = prefix or assert(os.getenv("LUNET_TEST_PREFIX"), "no prefix given")
script = script or os.getenv("LUNET_TEST_SCRIPT")
local function from_prefix(what, path)
  assert(path, what .. " not found")
  assert(path:sub(1, #prefix + 1) == prefix .. "/",
         ("%s comes from %s, not from the prefix %s"):format(what, path, prefix))
end
from_prefix("lunet.nn", package.searchpath("lunet.nn", package.path))
if not package.preload.lunet then   -- stock lua5.4 loads lunet.so
  from_prefix("lunet.so", package.searchpath("lunet", package.cpath))
end
local lunet = require("lunet")
local bn = require("lunet.nn").BatchNorm1d(3)
local y = bn(lunet.arange(12):float():view(4, 3))
assert(y:mean(1):abs():max():item() < 1e-6, "BatchNorm1d did not normalise")
print(("check_paths: lunet %s from %s"):format(lunet.version, prefix))
if script then dofile(script) end
