#!/bin/sh
# tg_train.sh TG_TRAIN — the main demo as a user runs it, briefly: a short MLP run that saves a
# checkpoint, a resumed run from it, a damaged checkpoint refused cleanly, the synthetic task
# when the dataset directory does not exist, and a run with a validation split, early stopping,
# augmentation and a CSV log whose format is checked.
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

"$train" --epochs 3 --limit 3000 --valid 1000 --early-stop 1 --augment-crop 2 --augment-flip \
    --log "$work/log.csv" --log-every 10 >"$work/run5.txt"
cat "$work/run5.txt" "$work/log.csv"
grep -q '^validation: 1000 samples held out, early stopping on their loss$' "$work/run5.txt"
grep -q '^augmentation: random crops with padding 2, horizontal flips on$' "$work/run5.txt"
grep -q '^epoch  1  train loss [0-9.]*  valid loss [0-9.]*  test accuracy [0-9.]*%' "$work/run5.txt"
grep -q '^restored epoch [1-3] (validation loss [0-9.]*): test accuracy [0-9.]*%$' "$work/run5.txt"
head -n 1 "$work/log.csv" |
    grep -qx 'step,epoch,train_loss,valid_loss,valid_accuracy,test_accuracy,samples_per_s,lr'
# Each row: 8 fields, numbers or empty. An epoch's row (a whole epoch) has every figure; the rows
# every 10 steps within it only the training loss, the throughput and the lr, 10 steps after the
# row before.
epochs=$(grep -c '^epoch ' "$work/run5.txt")
awk -F, -v epochs="$epochs" '
    function number(v) { return v ~ /^-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?$/ }
    NR == 1 { next }
    {
        if (NF != 8) { print "row " NR ": " NF " fields"; exit 1 }
        for (i = 1; i <= 8; i++)
            if ($i != "" && !number($i)) { print "row " NR ": field " i " is " $i; exit 1 }
        if ($1 <= last) { print "row " NR ": step " $1 " after " last; exit 1 }
        whole = $2 == int($2)
        if (!whole && $1 - last != 10) { print "row " NR ": step " $1 " after " last; exit 1 }
        last = $1
        for (i = 4; i <= 6; i++)
            if (($i != "") != whole) { print "row " NR ": field " i " is \"" $i "\""; exit 1 }
        if ($3 == "" || $7 == "" || $8 != "0.001") { print "row " NR ": missing figures"; exit 1 }
        if (whole) { rows++; if ($5 < 0 || $5 > 1 || $6 < 0 || $6 > 1) exit 1 }
    }
    END { if (rows != epochs) { print rows " epoch rows, " epochs " epochs"; exit 1 } }
' "$work/log.csv"
