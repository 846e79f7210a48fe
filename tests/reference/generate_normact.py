#!/usr/bin/python3
"""generate_normact.py — PyTorch reference values for tests/test_normact.c (batch_norm with its
running statistics, rms_norm, silu, the exact gelu, cumsum, casts).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_normact.py

It rebuilds tests/reference/normact_reference.txt next to this script. The file is committed, so
the tests need no PyTorch; rerun this only when a case changes, and change test_normact.c to
match.

The format is generate.py's: one tensor per line,

    <graph> <name> <ndim> <d0> ... : <v0> <v1> ...

with Python's repr for floats (exact round trip) and integers for i64 values. Everything is
float64. Inputs are named as in the graph; each graph's output y is seeded with a fixed random
r of its shape (loss = sum(r * y)) and `grad_<t>` is that loss's gradient with respect to t.

PyTorch 1.13 has no rms_norm (torch.nn.functional.rms_norm came in 2.4): it is written out as
that function computes it, x * rsqrt(mean(x^2, -1) + eps) * weight. One batch_norm case, rows of
a large offset and a small spread, is given in exact (50-digit) arithmetic as well, since
PyTorch's CPU kernel (y = x * alpha + beta, a sum for the mean) loses digits there.
"""
import os
import sys

import mpmath
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, leaf, lines, write  # noqa: E402

torch.set_default_dtype(torch.float64)

EPS = 1e-5


def seeded(graph, fn, inputs, g):
    """y = fn(*inputs) seeded with r: emits the inputs, r, y and the gradients of sum(r * y)."""
    leaves = {name: leaf(t) for name, t in inputs.items()}
    y = fn(**leaves)
    r = torch.randn(y.shape, generator=g)
    (y * r).sum().backward()
    for name, t in inputs.items():
        emit(graph, name, t)
    emit(graph, "r", r)
    emit(graph, "y", y)
    for name, t in leaves.items():
        emit(graph, f"grad_{name}", t.grad)


def graph_batch_norm():
    """Training mode (batch statistics) on [N, C] and [N, C, H, W], with and without affine."""
    g = torch.Generator().manual_seed(31)

    def bn(x, weight=None, bias=None):
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=EPS)

    seeded("bn2d", bn, {"x": 2 * torch.randn(6, 3, generator=g) + 1,
                        "weight": 0.5 + torch.rand(3, generator=g),
                        "bias": torch.randn(3, generator=g)}, g)
    seeded("bn2d_plain", bn, {"x": torch.randn(5, 4, generator=g) - 2}, g)
    seeded("bn4d", bn, {"x": 3 * torch.randn(4, 3, 2, 5, generator=g),
                        "weight": 0.5 + torch.rand(3, generator=g),
                        "bias": torch.randn(3, generator=g)}, g)
    seeded("bn3d_weight", bn, {"x": torch.randn(3, 2, 7, generator=g),
                               "weight": 0.5 + torch.rand(2, generator=g)}, g)
    # Channels at 1e4 with a spread of 1e-2 (the shift trick's case), compared with exact values.
    seeded("bn_offset", bn, {"x": 1e4 + 1e-2 * torch.randn(5, 2, 3, generator=g)}, g)
    batch_norm_exact("bn_offset")


def batch_norm_exact(graph):
    """y and the gradient of sum(r * y) for graph's x [N, C, S] (no affine), in 50 digits."""
    mpmath.mp.dps = 50

    def values(name):
        line = next(l for l in lines if l.startswith(f"{graph} {name} "))
        return [mpmath.mpf(float(v)) for v in line.split(":")[1].split()]  # the doubles exactly

    head = next(l for l in lines if l.startswith(f"{graph} x ")).split(":")[0].split()
    n, c, s = (int(d) for d in head[3:6])
    xs, rs = values("x"), values("r")
    ys, gs = [mpmath.mpf(0)] * len(xs), [mpmath.mpf(0)] * len(xs)
    for ch in range(c):
        idx = [(i * c + ch) * s + j for i in range(n) for j in range(s)]
        m = len(idx)
        mu = sum(xs[i] for i in idx) / m
        rstd = 1 / mpmath.sqrt(sum((xs[i] - mu) ** 2 for i in idx) / m + mpmath.mpf(EPS))
        xh = {i: (xs[i] - mu) * rstd for i in idx}
        a = sum(rs[i] for i in idx) / m
        b = sum(rs[i] * xh[i] for i in idx) / m
        for i in idx:
            ys[i] = xh[i]
            gs[i] = rstd * (rs[i] - a - xh[i] * b)
    emit(graph, "y_exact", torch.tensor([float(v) for v in ys]).reshape(n, c, s))
    emit(graph, "grad_x_exact", torch.tensor([float(v) for v in gs]).reshape(n, c, s))


def graph_running():
    """Four training steps updating running statistics (from PyTorch's defaults, mean 0 and
    var 1), with momentum 0.1 and 0.3, then evaluation with them: the running statistics after
    each step, and the evaluation output and its gradients."""
    g = torch.Generator().manual_seed(32)
    batches = [torch.randn(4, 3, 2, generator=g) * (1 + k) + k for k in range(4)]
    weight = 0.5 + torch.rand(3, generator=g)
    bias = torch.randn(3, generator=g)
    for k, b in enumerate(batches):
        emit("running", f"x{k}", b)
    emit("running", "weight", weight)
    emit("running", "bias", bias)
    for tag, momentum in (("m01", 0.1), ("m03", 0.3)):
        mean, var = torch.zeros(3), torch.ones(3)
        for k, b in enumerate(batches):
            F.batch_norm(b, mean, var, weight, bias, training=True, momentum=momentum, eps=EPS)
            emit("running", f"{tag}_mean{k}", mean)
            emit("running", f"{tag}_var{k}", var)
        x = torch.randn(5, 3, 2, generator=g)
        seeded(f"eval_{tag}", lambda x, weight, bias: F.batch_norm(
            x, mean, var, weight, bias, training=False, eps=EPS),
            {"x": x, "weight": weight, "bias": bias}, g)


def graph_rms_norm():
    """rms_norm over the last dim, as torch.nn.functional.rms_norm (PyTorch >= 2.4) computes it."""
    g = torch.Generator().manual_seed(33)

    def rms(x, weight=None):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
        return y * weight if weight is not None else y

    seeded("rms", rms, {"x": 2 * torch.randn(4, 11, generator=g) + 0.5,
                        "weight": 0.5 + torch.rand(11, generator=g)}, g)
    seeded("rms_plain", rms, {"x": torch.randn(2, 3, 5, generator=g)}, g)


def graph_activations():
    """silu and gelu(approximate='none') over [-8, 8], the tails and 0 included."""
    g = torch.Generator().manual_seed(34)
    x = torch.cat([16 * torch.rand(40, generator=g) - 8,
                   torch.tensor([-30.0, -12.0, -5.0, -0.75, -1.2785, 0.0, 1e-3, 5.0, 12.0, 30.0])])
    seeded("silu", lambda x: F.silu(x), {"x": x}, g)
    seeded("gelu_erf", lambda x: F.gelu(x, approximate="none"), {"x": x}, g)


def graph_cumsum():
    """cumsum along each axis of a [3, 4, 5] tensor, the last negatively numbered."""
    g = torch.Generator().manual_seed(35)
    x = torch.randn(3, 4, 5, generator=g)
    for axis in (0, 1, -1):
        seeded(f"cumsum{axis}".replace("-", "m"), lambda x: torch.cumsum(x, axis), {"x": x}, g)


def graph_cast():
    """f64 -> f32 -> f64 (rounding, and the gradient cast back), f64 -> i64 (truncation toward
    zero, .long()), i64 -> f64."""
    g = torch.Generator().manual_seed(36)
    x = torch.cat([torch.randn(8, generator=g) * 100,
                   torch.tensor([0.1, -0.1, 2.999999, -2.999999, 1e30, 1e-30, -7.5, 7.5])])
    seeded("cast32", lambda x: x.float().double(), {"x": x}, g)
    finite = x[x.abs() < 1e18]
    emit("cast_i64", "x", finite)
    emit("cast_i64", "y", finite.long())
    ints = torch.tensor([0, 1, -1, 2 ** 53 + 2, -(2 ** 62), 123456789], dtype=torch.int64)
    emit("cast_from_i64", "x", ints)
    emit("cast_from_i64", "y", ints.double())


def main():
    graph_batch_norm()
    graph_running()
    graph_rms_norm()
    graph_activations()
    graph_cumsum()
    graph_cast()
    write("normact_reference.txt", "generate_normact.py")


if __name__ == "__main__":
    main()
