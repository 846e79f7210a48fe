#!/bin/sh
# readme_example.sh SOURCE_ROOT — the README's C example is examples/xor.c, verbatim.
set -eu
src=$1
awk '/^```c$/ {on = 1; next} /^```$/ {if (on) exit} on' "$src/README.md" | diff -u "$src/examples/xor.c" -
