#!/bin/sh
# plots.sh SOURCE_ROOT — the documentation's two plotting scripts on small inputs: tools/
# plot_log.py on two tg-train logs (one with a validation split), and bench/compare.py
# --from-json --plot on a small saved run. Each must write a PNG; bad input is a clear error.
# matplotlib is a documentation tool (python3-matplotlib), not a dependency: without it the test
# is skipped (77).
set -eu
src=$1
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -c 'import matplotlib' 2>/dev/null || exit 77
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

is_png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }

cat >"$work/a.csv" <<'CSV'
step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,samples_per_s,lr
10,0.5000,1.2,,,,1000,0.001
20,1.0000,0.9,0.95,0.7,0.69,1100,0.001
30,1.5000,0.7,,,,1050,0.001
40,2.0000,0.6,0.8,0.75,0.74,1080,0.001
CSV
cat >"$work/b.csv" <<'CSV'
step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,tokens_per_s,lr
20,1.0000,1.0,,,0.65,900,0.001
40,2.0000,0.8,,,0.7,950,0.001
CSV
"$py" "$src/tools/plot_log.py" "$work/a.csv" "$work/b.csv" --labels "one,two" --title runs \
    -o "$work/curves.png"
is_png "$work/curves.png"
printf 'step,epoch\n1,1\n' >"$work/bad.csv"
if "$py" "$src/tools/plot_log.py" "$work/bad.csv" -o "$work/x.png" 2>"$work/err.txt"; then
    echo "a file without the log's columns was plotted"
    exit 1
fi
grep -q 'not a tg-train log' "$work/err.txt"
if "$py" "$src/tools/plot_log.py" "$work/a.csv" --labels "x,y" -o "$work/x.png" 2>/dev/null; then
    echo "two labels for one log were accepted"
    exit 1
fi

cat >"$work/run.json" <<'JSON'
{"date": "2026-01-01T00:00:00",
 "tapegrad": {"rows": [
  {"suite": "elementwise", "name": "exp forward, 1M", "unit": "GB/s", "median": 20.0},
  {"suite": "training", "name": "mlp batch 128", "unit": "samples/s", "median": 80000.0},
  {"suite": "memory", "name": "peak RSS, mlp batch 128", "unit": "MiB", "median": 50.0},
  {"suite": "scalar", "name": "rosenbrock n=1000", "unit": "ns/node", "median": 4.0,
   "nodes": 10000}]},
 "torch": {"rows": [
  {"suite": "elementwise", "name": "exp forward, 1M", "unit": "GB/s", "median": 10.0},
  {"suite": "training", "name": "mlp batch 128", "unit": "samples/s", "median": 40000.0},
  {"suite": "memory", "name": "peak RSS, mlp batch 128", "unit": "MiB", "median": 300.0},
  {"suite": "scalar", "name": "rosenbrock n=1000", "unit": "ns/node", "median": 5000.0,
   "seconds": 0.05}]},
 "adolc": {"rows": [
  {"suite": "scalar", "name": "rosenbrock n=1000", "unit": "ns/node", "median": 9.0,
   "seconds": 0.00008, "tg_nodes": 10000}]}}
JSON
"$py" "$src/bench/compare.py" --from-json "$work/run.json" --plot "$work/speedup.png" \
    >"$work/table.txt"
cat "$work/table.txt"
is_png "$work/speedup.png"
# The table's speedups: 2x (GB/s), 2x (samples/s), 6x (MiB, less is better), 1250x and 2x.
grep -q '| elementwise | exp forward, 1M .* 2.000x |' "$work/table.txt"
grep -q '| memory .* 6.000x |' "$work/table.txt"
grep -q '| scalar .* 1,250x | .* 2.000x |' "$work/table.txt"
