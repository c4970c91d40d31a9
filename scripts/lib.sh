# lib.sh -- sourced by the other scripts: puts the shell in the repository
# root (so they work from any directory) and prints stage headings.
LUNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$LUNET_ROOT"

heading() { printf '\n==== %s\n' "$*"; }
