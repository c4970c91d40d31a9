# gpu_deps.sh -- sourced by scripts/test_gpu and scripts/bench --cuda, in
# the repository root: when .gpu-deps/ holds the Debian packages that
# `scripts/test_gpu --fetch-deps` downloaded (for GPU machines without Lua,
# busted, OpenBLAS or pkg-config), unpack them under /tmp/lunet-deps (never
# into /) and point the build (pkg-config, with the .pc files' absolute
# paths rebased by the sysroot), the loader and Lua's module paths there.
# Sets `root` to that folder, or leaves it empty.
root=
if compgen -G ".gpu-deps/*.deb" >/dev/null; then
  root=/tmp/lunet-deps
  for f in .gpu-deps/*.deb; do dpkg -x "$f" "$root"; done
  lib=$root/usr/lib/x86_64-linux-gnu
  export PATH=$root/usr/bin:$PATH
  export PKG_CONFIG_PATH=$lib/pkgconfig:$lib/openblas-pthread/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$root
  export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LIBRARY_PATH=$LD_LIBRARY_PATH
  export LUA_PATH="$root/usr/share/lua/5.4/?.lua;$root/usr/share/lua/5.4/?/init.lua;;"
  export LUA_CPATH="$lib/lua/5.4/?.so;;"
  echo "using the packages of .gpu-deps/ unpacked in $root"
fi
