#!/usr/bin/env bash
# run.sh BUILD_DIR -- the install test (ctest runs it as "install"):
# `cmake --install` BUILD_DIR into a temporary prefix, then use what was
# installed, and nothing from the source or build tree:
#   - stock lua5.4 with LUA_PATH/LUA_CPATH pointing at the prefix's
#     share/lua/5.4 and lib/lua/5.4 (the /usr/local layout Debian's lua5.4
#     searches by default);
#   - the installed `lunet`, which finds its Lua files itself;
#   - a C program on liblunet built with `pkg-config --cflags --libs lunet`,
#     linked shared and then static (Libs.private);
#   - the embedding example built with `pkg-config ... lunet-embed`.
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cd "$work"   # nothing found through ./?.lua

step() { printf '== %s\n' "$*"; }

step "cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name lunet.pc)
libdir=$(dirname "$(dirname "$pc")")
for f in bin/lunet include/lunet/core/tensor.h include/lunet/nn/batchnorm.h \
         include/lunet/lua/lunet_embed.h share/lua/5.4/lunet/nn/init.lua \
         share/lua/5.4/lunet/repl.lua lib/lua/5.4/lunet.so; do
  [[ -e $prefix/$f ]] || { echo "missing: $f"; exit 1; }
done
for f in liblunet.so liblunet.a liblunet-embed.so liblunet-embed.a pkgconfig/lunet-embed.pc; do
  [[ -e $libdir/$f ]] || { echo "missing: ${libdir#$prefix/}/$f"; exit 1; }
done
if find "$prefix/include" -name '*_impl.h' | grep -q .; then
  echo "private headers were installed"; exit 1
fi

step "stock lua5.4 with require(\"lunet\")"
LUA_PATH="$prefix/share/lua/5.4/?.lua;$prefix/share/lua/5.4/?/init.lua;;" \
LUA_CPATH="$prefix/lib/lua/5.4/?.so;;" \
  lua5.4 "$here/check_paths.lua" "$prefix"

step "the installed lunet"
"$prefix/bin/lunet" "$here/check_paths.lua" "$prefix"
# (outputs go through files: with pipefail, `grep -q` quitting early
# would fail the writer with SIGPIPE)
echo 'print(1 + 1)' | "$prefix/bin/lunet" >out.txt
grep -qx 2 out.txt

export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
version=$(pkg-config --modversion lunet)
step "pkg-config lunet $version: a C program on liblunet.so"
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
cc -o core_app "$here/core_app.c" $(pkg-config --cflags --libs lunet) -lm
ldd ./core_app >ldd.txt
grep -q "$libdir/liblunet.so" ldd.txt
./core_app

step "the same program on liblunet.a (pkg-config --static)"
# shellcheck disable=SC2046
cc -o core_app_static "$here/core_app.c" $(pkg-config --cflags lunet) "$libdir/liblunet.a" \
   $(pkg-config --static --libs lunet | sed 's/-llunet\b//') -lm
ldd ./core_app_static >ldd.txt
if grep -q liblunet ldd.txt; then echo "not static"; exit 1; fi
./core_app_static

step "pkg-config lunet-embed: the embedding example on liblunet-embed.so"
# shellcheck disable=SC2046
cc -o embed_example "$src/examples/embed/embed_bn.c" $(pkg-config --cflags --libs lunet-embed) -lm
LUNET_TEST_PREFIX=$prefix LUNET_TEST_SCRIPT=$src/examples/embed/normalize.lua \
  ./embed_example "$here/check_paths.lua"

echo "install test: all passed"
