# gpu_deps.sh -- sourced by scripts/test_gpu and scripts/bench --cuda, in
# the repository root: when .gpu-deps/ holds the Debian packages that
# `scripts/test_gpu --fetch-deps` downloaded (for GPU machines without Lua,
# busted, OpenBLAS or pkg-config), unpack them under /tmp/lunet-deps (never
# into /) and point the build (pkg-config, whose .pc files' /usr paths are
# rewritten to the folder), the loader and Lua's module paths there.
# Sets `root` to that folder, or leaves it empty.
root=
if compgen -G ".gpu-deps/*.deb" >/dev/null; then
  root=/tmp/lunet-deps
  for f in .gpu-deps/*.deb; do dpkg -x "$f" "$root"; done
  lib=$root/usr/lib/x86_64-linux-gnu
  sed -i "s|^\([a-z_]*\)=/usr|\1=$root/usr|" "$lib"/pkgconfig/*.pc "$lib"/openblas-pthread/pkgconfig/*.pc
  export PATH=$root/usr/bin:$PATH
  export PKG_CONFIG_PATH=$lib/pkgconfig:$lib/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH} PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
  export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LIBRARY_PATH=$LD_LIBRARY_PATH CMAKE_PREFIX_PATH=$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export LUA_PATH="$root/usr/share/lua/5.4/?.lua;$root/usr/share/lua/5.4/?/init.lua;;"
  export LUA_CPATH="$lib/lua/5.4/?.so;;"
  echo "using the packages of .gpu-deps/ unpacked in $root"
fi
