#!/bin/sh
# tg_train.sh TG_TRAIN — the main demo as a user runs it, briefly: a short MLP run that saves a
# checkpoint, a resumed run from it, a damaged checkpoint refused cleanly, and the synthetic task
# when the dataset directory does not exist.
set -eu
train=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$train" --epochs 1 --limit 3000 --save "$work/ck.safetensors" >"$work/run1.txt"
cat "$work/run1.txt"
grep -q '^epoch  1  train loss [0-9.]*  test accuracy [0-9.]*%' "$work/run1.txt"
test -s "$work/ck.safetensors"

"$train" --epochs 2 --limit 3000 --resume "$work/ck.safetensors" >"$work/run2.txt"
cat "$work/run2.txt"
grep -q '^resumed from .* after 24 steps (epoch 1)' "$work/run2.txt"
grep -q '^epoch  2 ' "$work/run2.txt"
! grep -q '^epoch  1 ' "$work/run2.txt"

head -c 100 "$work/ck.safetensors" >"$work/bad.safetensors"
if "$train" --epochs 1 --limit 1000 --resume "$work/bad.safetensors" >"$work/run3.txt" 2>&1; then
    echo "a truncated checkpoint was accepted"
    exit 1
fi
cat "$work/run3.txt"
grep -q 'TG_FORMAT' "$work/run3.txt"

"$train" --data "$work/none" --epochs 1 >"$work/run4.txt"
cat "$work/run4.txt"
grep -q 'apt-get install dataset-fashion-mnist' "$work/run4.txt"
