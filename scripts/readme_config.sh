#!/usr/bin/env bash
# Rewrite the README's configuration reference from the key table of the
# built binary (tests/cli_readme.sh fails while they differ).
# usage: scripts/readme_config.sh [path/to/multipole]   (default build/multipole)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/build/multipole}
[[ -x $BIN ]] || { echo "readme_config.sh: no binary at $BIN (run scripts/build.sh)" >&2; exit 2; }
ref=$("$BIN" config --markdown)
awk -v ref="$ref" '
  /<!-- config-reference:begin -->/ { print; print ref; skip = 1; next }
  /<!-- config-reference:end -->/   { skip = 0 }
  !skip { print }' "$ROOT/README.md" > "$ROOT/README.md.tmp"
mv "$ROOT/README.md.tmp" "$ROOT/README.md"
echo "README.md: configuration reference updated"
