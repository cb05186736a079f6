#!/usr/bin/env bash
# The README's configuration reference is the output of the key table.
source "$(dirname "$0")/cli_lib.sh"
readme="$MPL_SRC/README.md"
got=$(sed -n '/<!-- config-reference:begin -->/,/<!-- config-reference:end -->/p' "$readme" | sed '1d;$d')
want=$("$MPL_BIN" config --markdown)
if [ "$got" = "$want" ]; then
  ok "README config reference matches 'multipole config --markdown'"
else
  bad "README config reference is stale; regenerate it from 'multipole config --markdown'"
  diff <(echo "$want") <(echo "$got")
fi
# Both set-up commands open the README.
head -12 "$readme" | grep -q '^scripts/demo.sh' && ok "demo command" || bad "README lacks scripts/demo.sh at the top"
head -12 "$readme" | grep -q '^scripts/test.sh' && ok "test command" || bad "README lacks scripts/test.sh at the top"
finish
