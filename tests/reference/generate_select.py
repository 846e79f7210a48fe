#!/usr/bin/python3
"""generate_select.py — PyTorch reference values for tests/test_select.c (argmax, argmin, topk
and the distributions multinomial samples from).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_select.py

It rebuilds tests/reference/select_reference.txt next to this script. The file is committed, so
the tests need no PyTorch; rerun this only when a case changes, and change test_select.c to match.

The format is generate.py's: one tensor per line,

    <graph> <name> <ndim> <d0> ... : <v0> <v1> ...

with Python's repr for floats (nan and inf included) and integers for indices. Every input is
exact in float32, so the f32 runs see the same values. Names:
- argmax/argmin: `max_<axis>_<keepdim>` and `min_<axis>_<keepdim>` (axis m1 for -1, m2 for -2).
- topk: `v_<k>_<axis>_<largest>` are torch.topk's values and `i_...` its indices; `s_...` are the
  indices of a stable sort, torch.sort(stable=True), cut to k: the order tapegrad documents
  (equal entries by lower index), which torch.topk does not promise.
- topk gradient: `grad_x` is d sum(r * values) / dx.
- multinomial: `p_<T>_<top_k>` (T written with 'p' for the point) is
  softmax(logits / T restricted to its top_k), computed as torch.topk and a -inf mask (nanoGPT's
  way), for logits without ties at the cut; `crit_<df>` is the chi-square value whose upper tail
  has probability 1e-6 with df degrees of freedom (mpmath), the threshold of the test;
  `draws_<top_k>` are tg_multinomial's exact samples for a seed, from a re-implementation of its
  documented algorithm (tapegrad_samples below): they pin the random stream across machines.
"""
import math
import os
import sys

import mpmath
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, leaf, write  # noqa: E402

torch.set_default_dtype(torch.float64)
NAN = float("nan")
INF = float("inf")


def axis_name(axis):
    return f"m{-axis}" if axis < 0 else str(axis)


def f32_exact(t):
    return t.float().double()


def graph_arg(graph, x, axes):
    """argmax and argmin of x along each axis, with and without keepdim."""
    emit(graph, "x", x)
    for axis in axes:
        for keepdim in (0, 1):
            emit(graph, f"max_{axis_name(axis)}_{keepdim}", x.argmax(axis, keepdim=bool(keepdim)))
            emit(graph, f"min_{axis_name(axis)}_{keepdim}", x.argmin(axis, keepdim=bool(keepdim)))


def graph_topk(graph, x, cases):
    """torch.topk for each (k, axis, largest), and the stable-sort indices of the same k."""
    emit(graph, "x", x)
    for k, axis, largest in cases:
        tag = f"{k}_{axis_name(axis)}_{int(largest)}"
        v, i = torch.topk(x, k, dim=axis, largest=largest, sorted=True)
        s = torch.sort(x, dim=axis, descending=largest, stable=True).indices.narrow(axis, 0, k)
        # The stable sort's entries are topk's values: only the choice among equals differs.
        assert torch.equal(x.gather(axis, s).nan_to_num(7e7), v.nan_to_num(7e7))
        emit(graph, f"v_{tag}", v)
        emit(graph, f"i_{tag}", i)
        emit(graph, f"s_{tag}", s)


def graphs_arg_topk():
    g = torch.Generator().manual_seed(5)
    # Ties (small integers), NaN in two rows, infinities, a constant row, -0 beside +0.
    a = torch.randint(-2, 3, (5, 6), generator=g).double()
    a[1, 2] = NAN
    a[1, 4] = NAN
    a[2, 0] = INF
    a[2, 5] = -INF
    a[3, :] = 1.5
    a[4, 1] = -0.0
    a[4, 3] = 0.0
    a[0, 5] = NAN
    graph_arg("arg_ties", a, [0, 1, -1, -2])
    graph_topk("topk_ties", a, [(1, 1, True), (3, 1, True), (3, 1, False), (6, -1, True),
                                (6, 1, False), (4, 0, True), (5, 0, False), (0, 1, True),
                                (2, -2, False)])

    # Random values, 3-d, every axis; a row of 300 (longer than one cache line of work).
    b = f32_exact(torch.randn(2, 3, 4, generator=g))
    graph_arg("arg_3d", b, [0, 1, 2, -2])
    graph_topk("topk_3d", b, [(2, 0, True), (3, 1, True), (2, 1, False), (4, 2, True),
                              (1, -1, False), (3, -2, False)])
    c = f32_exact(torch.randn(3, 300, generator=g))
    graph_arg("arg_wide", c, [1, 0])
    graph_topk("topk_wide", c, [(10, 1, True), (40, 1, False), (300, 1, True)])

    # 0-d: one axis of size 1.
    d = torch.tensor(2.5)
    emit("arg_0d", "x", d)
    emit("arg_0d", "max", d.argmax(0))
    emit("arg_0d", "min", d.argmin(-1, keepdim=True))
    v, i = torch.topk(d, 1)
    emit("arg_0d", "topk_v", v)
    emit("arg_0d", "topk_i", i)


def graph_topk_grad():
    """The values' gradient reaches the picked entries (no ties, so the picks are PyTorch's)."""
    g = torch.Generator().manual_seed(6)
    x = leaf(f32_exact(torch.randn(3, 7, generator=g)))
    r = f32_exact(torch.randn(3, 4, generator=g))
    v, _ = torch.topk(x, 4, dim=1, largest=False)
    (v * r).sum().backward()
    emit("topk_grad", "x", x)
    emit("topk_grad", "r", r)
    emit("topk_grad", "v", v)
    emit("topk_grad", "grad_x", x.grad)


def sampling_probabilities(logits, temperature, top_k):
    """softmax(logits / T) over the top_k (all classes for 0), per row, as nanoGPT samples."""
    z = logits / temperature
    if top_k:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, -INF)
    return torch.softmax(z, dim=-1)


def chi2_critical(df, tail=1e-6):
    """x with P(chi2_df > x) = tail."""
    mpmath.mp.dps = 30
    lo, hi = mpmath.mpf(0), mpmath.mpf(1000)
    for _ in range(200):  # bisection: the upper tail falls as x grows
        mid = (lo + hi) / 2
        if mpmath.gammainc(mpmath.mpf(df) / 2, mid / 2, mpmath.inf, regularized=True) > tail:
            lo = mid
        else:
            hi = mid
    return float(lo)


MASK64 = (1 << 64) - 1
GAMMA = 0x9e3779b97f4a7c15


def mix64(z):
    """SplitMix64's finaliser on 64-bit integers."""
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK64
    return z ^ (z >> 31)


def tapegrad_samples(logits, num_samples, temperature, top_k, seed):
    """tg_multinomial's draws, re-implemented from its documented algorithm (ops/select.c): per
    row, the classes (the top_k, ties by lower index, or all) in class order, their running sum
    of exp((x - max) / T) in double, and for sample s of row o the uniform
    (mix64(base + (o * num_samples + s + 1) * GAMMA) >> 11) * 2^-53, with
    base = mix64(mix64(seed) ^ "multinom"); the class is the first whose running sum exceeds
    u * total. Python's floats are doubles; math.exp and tapegrad's vector-math exp agree to
    about an ulp, far below what moves a draw across a class boundary (but for a draw that
    lands within that of one)."""
    base = mix64(mix64(seed) ^ 0x6d756c74696e6f6d)
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    out = []
    for o, x in enumerate(rows):
        classes = list(range(len(x)))
        if 0 < top_k < len(x):
            classes = sorted(sorted(classes, key=lambda i: (-x[i], i))[:top_k])
        m = max(x[i] for i in classes)
        cum, total = [], 0.0
        for i in classes:
            total += math.exp((x[i] - m) / temperature)
            cum.append(total)
        for s in range(num_samples):
            z = mix64((base + (o * num_samples + s + 1) * GAMMA) & MASK64)
            target = (z >> 11) * 2.0 ** -53 * total
            out.append(classes[next(i for i, c in enumerate(cum) if c > target)])
    return torch.tensor(out, dtype=torch.int64).reshape(*logits.shape[:-1], num_samples)


def graph_multinomial():
    g = torch.Generator().manual_seed(7)
    # Ten classes of spread-out logits (no ties, so the top_k cut is the same for everyone).
    logits = f32_exact(1.5 * torch.randn(10, generator=g))
    emit("mn", "logits", logits)
    for temperature, top_k in [(1.0, 0), (0.5, 0), (2.0, 0), (0.5, 4), (1.0, 1), (1.3, 9)]:
        tag = f"{str(temperature).replace('.', 'p')}_{top_k}"
        emit("mn", f"p_{tag}", sampling_probabilities(logits, temperature, top_k))
    # Rows of a batch, with -inf logits (masked classes).
    rows = f32_exact(torch.randn(3, 6, generator=g))
    rows[0, 1] = -INF
    rows[2, 0] = -INF
    rows[2, 5] = -INF
    emit("mn_rows", "logits", rows)
    emit("mn_rows", "p_0p8_0", sampling_probabilities(rows, 0.8, 0))
    emit("mn_rows", "p_0p8_3", sampling_probabilities(rows, 0.8, 3))
    # The exact draws of seed 2024: the same on every machine.
    emit("mn_rows", "draws_0", tapegrad_samples(rows, 32, 0.8, 0, 2024))
    emit("mn_rows", "draws_3", tapegrad_samples(rows, 32, 0.8, 3, 2024))
    for df in range(1, 10):
        emit("chi2", f"crit_{df}", torch.tensor(chi2_critical(df)))


graphs_arg_topk()
graph_topk_grad()
graph_multinomial()
write("select_reference.txt", "generate_select.py")
