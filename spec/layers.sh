#!/bin/sh
# layers.sh ROOT OBJ... -- the layering rules, run by `make check-layers`:
#   - no file in ROOT/core includes a Lua header;
#   - no file in ROOT/bindings includes a libevent header (event2/): the
#     bindings reach the loop, streams and sockets only through core/;
#   - no circle between the object files OBJ: A uses a symbol that B
#     defines while B, directly or through others, uses one of A's (from
#     the symbols each object defines and uses, by nm).
# Prints what breaks a rule and exits 1; exits 0 when all hold.
set -u
root=$1; shift
status=0
if grep -rn --include='*.[ch]' 'include.*\(lua\|lauxlib\|lualib\)' "$root"/core; then
  echo "core/ must not include Lua headers"; status=1
fi
if grep -rn --include='*.[ch]' 'include.*event2/' "$root"/bindings; then
  echo "bindings/ must not include libevent headers (event2/): use core/"; status=1
fi
[ $# -gt 0 ] || exit $status
defs=$(mktemp); uses=$(mktemp); edges=$(mktemp)
trap 'rm -f "$defs" "$uses" "$edges"' EXIT
for o in "$@"; do
  nm --defined-only -g "$o" | awk -v f="$o" 'NF == 3 {print $3, f}'
done | sort > "$defs"
for o in "$@"; do
  nm -u "$o" | awk -v f="$o" '{print $NF, f}'
done | sort > "$uses"
join "$uses" "$defs" | awk '$2 != $3 {print $2, $3}' | sort -u > "$edges"
# tsort names the files of each circle on stderr ("input contains a loop").
if tsort "$edges" 2>&1 >/dev/null | grep -q loop; then
  echo "files that depend on each other (a circle):"
  tsort "$edges" 2>&1 >/dev/null | grep -v 'input contains a loop' | sed 's/^tsort: /  /'
  status=1
fi
exit $status
