#!/usr/bin/python3
"""plot_log.py — training curves from the CSV logs of tg-train --log (tg_train_log), one or
several runs in one picture, to compare them.

    /usr/bin/python3 tools/plot_log.py run.csv [other.csv ...] -o curves.png
        [--labels "base,augmented"] [--title TEXT]

Three panels, against epochs: the training loss (every row: per logging interval), the
validation loss (the rows that have one), and the accuracies (test: solid; validation: dashed).
Each run keeps one colour across the panels; its label is --labels' entry or the file's name.

Needs matplotlib (Debian's python3-matplotlib); tapegrad itself does not.
"""
import argparse
import csv
import math
import os
import sys

COLUMNS = ["step", "epoch", "train_loss", "valid_loss", "valid_accuracy", "test_accuracy"]


def number(text):
    """A field as a float; NaN for an empty field (not measured)."""
    return float(text) if text.strip() else math.nan


def read_log(path):
    """The log's columns by name, as lists of floats; exits with a message on a bad file."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        sys.exit(f"plot_log.py: {path}: {e.strerror}")
    if not rows or any(c not in rows[0] for c in COLUMNS):
        sys.exit(f"plot_log.py: {path}: not a tg-train log (its header lacks "
                 f"{', '.join(c for c in COLUMNS if not rows or c not in rows[0])})")
    head = rows[0]
    cols = {name: [] for name in head}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(head):
            sys.exit(f"plot_log.py: {path}:{i}: {len(row)} fields, the header has {len(head)}")
        try:
            for name, text in zip(head, row):
                cols[name].append(number(text))
        except ValueError:
            sys.exit(f"plot_log.py: {path}:{i}: not a number: {row}")
    if not rows[1:]:
        sys.exit(f"plot_log.py: {path}: no rows")
    return cols


def measured(xs, ys):
    """The (x, y) pairs where y was measured."""
    pairs = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logs", nargs="+", help="CSV logs written by tg-train --log")
    p.add_argument("-o", "--output", required=True, help="the PNG to write")
    p.add_argument("--labels", help="comma-separated labels, one per log (default: file names)")
    p.add_argument("--title", help="a title over the panels")
    args = p.parse_args()
    labels = args.labels.split(",") if args.labels else [os.path.basename(x) for x in args.logs]
    if len(labels) != len(args.logs):
        p.error(f"{len(labels)} labels for {len(args.logs)} logs")
    logs = [read_log(path) for path in args.logs]

    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (loss_ax, valid_ax, acc_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    for k, (log, label) in enumerate(zip(logs, labels)):
        color = f"C{k}"
        loss_ax.plot(*measured(log["epoch"], log["train_loss"]), color=color, label=label,
                     linewidth=1)
        xs, ys = measured(log["epoch"], log["valid_loss"])
        if xs:
            valid_ax.plot(xs, ys, color=color, marker="o", markersize=3, label=label)
        xs, ys = measured(log["epoch"], log["test_accuracy"])
        if xs:
            acc_ax.plot(xs, [100 * y for y in ys], color=color, marker="o", markersize=3,
                        label=f"{label}: test")
        xs, ys = measured(log["epoch"], log["valid_accuracy"])
        if xs:
            acc_ax.plot(xs, [100 * y for y in ys], color=color, linestyle="--", marker="x",
                        markersize=3, label=f"{label}: validation")
    for ax, title, unit in ((loss_ax, "training loss", "cross-entropy"),
                            (valid_ax, "validation loss", "cross-entropy"),
                            (acc_ax, "accuracy", "%")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not in these logs", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
    if args.title:
        fig.suptitle(args.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"plot_log.py: wrote {args.output}")


if __name__ == "__main__":
    main()
