#!/bin/sh
# layers.sh OBJ... -- fail if the object files depend on each other in a
# circle: A uses a symbol that B defines, and B (directly or through others)
# one that A defines. Prints each circle found. Run by `make check-layers`.
set -u
defs=$(mktemp); uses=$(mktemp); edges=$(mktemp)
trap 'rm -f "$defs" "$uses" "$edges"' EXIT
for o in "$@"; do
  nm --defined-only -g "$o" | awk -v f="$o" 'NF == 3 {print $3, f}'
done | sort > "$defs"
for o in "$@"; do
  nm -u "$o" | awk -v f="$o" '{print $NF, f}'
done | sort > "$uses"
join "$uses" "$defs" | awk '$2 != $3 {print $2, $3}' | sort -u > "$edges"
# tsort reports every circle on stderr ("input contains a loop").
if tsort "$edges" 2>&1 >/dev/null | grep -q loop; then
  echo "files that depend on each other (a circle):"
  tsort "$edges" 2>&1 >/dev/null | sed 's/^tsort: /  /'
  exit 1
fi
