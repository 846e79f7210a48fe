#!/usr/bin/python3
"""generate_conv.py — PyTorch reference values for tests/test_conv.c (conv2d and max_pool2d:
values and gradients).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_conv.py

It rebuilds tests/reference/conv_reference.txt next to this script. The file is committed, so the
tests need no PyTorch; rerun this only when a case changes, and change test_conv.c to match.

The format is generate.py's: one tensor per line,

    <graph> <name> <ndim> <d0> ... : <v0> <v1> ...

Each case is a graph: its inputs (x, weight, bias), the output y, a seed r of y's shape, and the
gradients grad_<input> of sum(r * y). The convolution cases are chosen so that every kernel of
ops/conv.c runs (see test_conv.c); the pooling cases hold ties, NaN and -inf, where the choice of
the window's argmax shows.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, leaf, uniform, write  # noqa: E402

torch.set_default_dtype(torch.float64)

# name, x shape, weight shape, stride, padding, dilation, groups, bias
CONV = [
    ("direct", (2, 2, 9, 11), (5, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("direct_small", (2, 3, 5, 5), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1, True),
    ("direct_strided", (2, 3, 10, 9), (4, 3, 3, 3), (2, 1), (1, 2), (1, 2), 1, False),
    ("direct_threads", (3, 3, 10, 10), (8, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("expand", (2, 6, 8, 7), (8, 6, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("expand_threads", (3, 8, 8, 8), (6, 8, 3, 3), (1, 1), (0, 1), (1, 1), 1, False),
    ("flip", (2, 8, 7, 9), (4, 8, 3, 2), (1, 1), (1, 0), (1, 1), 1, True),
    ("flip_threads", (3, 12, 7, 7), (6, 12, 3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    ("im2col", (2, 4, 9, 10), (6, 2, 3, 3), (2, 2), (1, 1), (1, 1), 2, True),
    ("plain", (3, 8, 5, 6), (4, 8, 1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("depthwise_dilated", (2, 4, 8, 8), (4, 1, 3, 3), (1, 1), (2, 2), (2, 2), 4, False),
    ("wide_rows", (2, 1, 5, 40), (3, 1, 2, 5), (1, 1), (0, 2), (1, 1), 1, True),
]

# name, x shape, kernel, stride, padding
POOL = [
    ("pool_2x2", (2, 3, 9, 7), (2, 2), (2, 2), (0, 0)),
    ("pool_2x2_wide", (1, 2, 4, 70), (2, 2), (2, 2), (0, 0)),
    ("pool_2x2_narrow", (3, 2, 6, 6), (2, 2), (2, 2), (0, 0)),
    ("pool_3x3", (2, 2, 7, 8), (3, 3), (2, 2), (1, 1)),
]


def steps(shape, g):
    """Values in [-1, 1) in steps of 1/64: exact in f32 as in f64, so both tests read the same
    inputs, and short in the file."""
    return torch.floor(uniform(shape, -64, 64, g)) / 64


def conv_cases():
    g = torch.Generator().manual_seed(2024)
    for name, xs, ws, stride, padding, dilation, groups, bias in CONV:
        x = steps(xs, g)
        w = steps(ws, g)
        b = steps((ws[0],), g) if bias else None
        ins = [leaf(x), leaf(w)] + ([leaf(b)] if bias else [])
        y = F.conv2d(ins[0], ins[1], ins[2] if bias else None, stride, padding, dilation, groups)
        r = steps(tuple(y.shape), g)
        (y * r).sum().backward()
        emit(name, "x", x)
        emit(name, "weight", w)
        if bias:
            emit(name, "bias", b)
        emit(name, "y", y)
        emit(name, "r", r)
        for label, t in zip(("x", "weight", "bias"), ins):
            emit(name, "grad_" + label, t.grad)


def pool_values(shape, g):
    """Values in steps of 0.25 in [-1, 1] (many ties inside windows), with NaN, -inf and a window
    of equal values placed at fixed spots."""
    x = torch.floor(uniform(shape, -4, 5, g)) / 4
    flat = x.view(-1)
    n = flat.numel()
    flat[n // 3] = float("nan")
    flat[n // 3 + 1] = float("nan")
    flat[n // 2] = float("-inf")
    flat[2 * n // 3] = float("inf")
    x[0, 0, 0:2, 0:2] = 0.5
    return x


def pool_cases():
    g = torch.Generator().manual_seed(2025)
    for name, xs, kernel, stride, padding in POOL:
        x = pool_values(xs, g)
        xl = leaf(x)
        y = F.max_pool2d(xl, kernel, stride, padding)
        r = steps(tuple(y.shape), g)
        (y * r).sum().backward()
        emit(name, "x", x)
        emit(name, "y", y)
        emit(name, "r", r)
        emit(name, "grad_x", xl.grad)


conv_cases()
pool_cases()
write("conv_reference.txt", "generate_conv.py")
