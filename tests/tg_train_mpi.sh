#!/bin/sh
# tg_train_mpi.sh MPIRUN TG_TRAIN — the main demo data-parallel on 2 processes, briefly: one
# epoch that saves a checkpoint (rank 0 prints, once), a resumed run from it, and a damaged
# checkpoint refused by both processes, which end instead of waiting for each other.
set -eu
mpirun=$1
train=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$mpirun" -np 2 "$train" --epochs 1 --limit 3000 --save "$work/ck.safetensors" >"$work/run1.txt"
cat "$work/run1.txt"
grep -q '^data-parallel on 2 processes' "$work/run1.txt"
[ "$(grep -c '^tg-train: mlp' "$work/run1.txt")" = 1 ]
[ "$(grep -c '^epoch  1  train loss [0-9.]*  test accuracy [0-9.]*%' "$work/run1.txt")" = 1 ]
test -s "$work/ck.safetensors"

# 3000 samples in steps of 2 x 128: 12 steps an epoch.
"$mpirun" -np 2 "$train" --epochs 2 --limit 3000 --resume "$work/ck.safetensors" >"$work/run2.txt"
cat "$work/run2.txt"
grep -q '^resumed from .* after 12 steps (epoch 1)' "$work/run2.txt"
grep -q '^epoch  2 ' "$work/run2.txt"
! grep -q '^epoch  1 ' "$work/run2.txt"

head -c 100 "$work/ck.safetensors" >"$work/bad.safetensors"
if timeout 120 "$mpirun" -np 2 "$train" --epochs 1 --limit 1000 --resume "$work/bad.safetensors" \
    >"$work/run3.txt" 2>&1; then
    echo "a truncated checkpoint was accepted"
    exit 1
fi
cat "$work/run3.txt"
grep -q 'tg-train (rank 0): TG_FORMAT' "$work/run3.txt"
grep -q 'tg-train (rank 1): TG_FORMAT' "$work/run3.txt"
