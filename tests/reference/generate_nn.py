#!/usr/bin/python3
"""generate_nn.py — PyTorch reference values for tests/test_loss.c (losses, layer_norm,
embedding).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_nn.py

It rebuilds tests/reference/nn_reference.txt next to this script. The file is committed, so the
tests need no PyTorch; rerun this only when a case changes, and change test_loss.c to match.

The format is generate.py's: one tensor per line,

    <graph> <name> <ndim> <d0> ... : <v0> <v1> ...

with Python's repr for floats (exact round trip) and integers for labels and indices. Inputs are
named as in the graph; `grad_<t>` is the gradient of the graph's loss with respect to t. Losses
with reduction 'none' are seeded with a fixed random vector r (loss = sum(r * per_sample)).
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


def reductions(graph, fn, inputs, names, r):
    """fn(*inputs, reduction) for mean, sum and none (seeded by r): values and gradients."""
    for red in ("mean", "sum", "none"):
        ins = [leaf(t) for t in inputs]
        out = fn(*ins, red)
        loss = (out * r).sum() if red == "none" else out
        loss.backward()
        emit(graph, red, out)
        for name, t in zip(names, ins):
            emit(graph, f"grad_{name}_{red}", t.grad)


def graph_cross_entropy():
    """cross_entropy on [6, 4] logits, without and with label smoothing 0.1; on [3, 300]; and
    rows of magnitude 1e4 (exp overflows without the max shift)."""
    g = torch.Generator().manual_seed(11)
    logits = 2 * torch.randn(6, 4, generator=g)
    labels = torch.tensor([3, 0, 1, 2, 2, 0], dtype=torch.int64)
    r = torch.randn(6, generator=g)
    emit("ce", "logits", logits)
    emit("ce", "labels", labels)
    emit("ce", "r", r)
    reductions("ce", lambda x, red: F.cross_entropy(x, labels, reduction=red), [logits],
               ["logits"], r)
    reductions("ce_ls", lambda x, red: F.cross_entropy(x, labels, reduction=red,
                                                       label_smoothing=0.1), [logits], ["logits"], r)

    # Wide rows (300 classes: more than the kernels' 256-element chunks), one of 1e4.
    wide = 3 * torch.randn(3, 300, generator=g)
    wide[1] += 1e4
    wide = wide.float().double()  # exact in f32 too, so the f32 test sees the same inputs
    wide_labels = torch.tensor([299, 7, 256], dtype=torch.int64)
    rw = torch.randn(3, generator=g)
    emit("ce_wide", "logits", wide)
    emit("ce_wide", "labels", wide_labels)
    emit("ce_wide", "r", rw)
    reductions("ce_wide", lambda x, red: F.cross_entropy(x, wide_labels, reduction=red,
                                                         label_smoothing=0.1), [wide], ["logits"],
               rw)

    big = torch.tensor([[1e4, -1e4, 0.0, 5e3, 2.5],
                        [-1e4, -1e4 + 1.0, -1e4 + 2.0, -1e4 + 0.5, -1e4],
                        [1e4, 1e4, 1e4 - 3.0, -1e4, 9999.75],
                        [9999.5, -3.25, 1e4, 2.0, -1e4]])
    big_labels = torch.tensor([1, 2, 0, 4], dtype=torch.int64)
    rb = torch.randn(4, generator=g)
    emit("ce_big", "logits", big)
    emit("ce_big", "labels", big_labels)
    emit("ce_big", "r", rb)
    reductions("ce_big", lambda x, red: F.cross_entropy(x, big_labels, reduction=red), [big],
               ["logits"], rb)
    reductions("ce_big_ls", lambda x, red: F.cross_entropy(x, big_labels, reduction=red,
                                                           label_smoothing=0.1), [big],
               ["logits"], rb)


def graph_nll():
    """nll_loss on log-probabilities [5, 3]."""
    g = torch.Generator().manual_seed(12)
    lp = torch.log_softmax(torch.randn(5, 3, generator=g), dim=1)
    labels = torch.tensor([0, 2, 1, 2, 0], dtype=torch.int64)
    r = torch.randn(5, generator=g)
    emit("nll", "log_probs", lp)
    emit("nll", "labels", labels)
    emit("nll", "r", r)
    reductions("nll", lambda x, red: F.nll_loss(x, labels, reduction=red), [lp], ["log_probs"], r)


def graph_mse():
    """mse_loss on [3, 4]; gradients for both operands."""
    g = torch.Generator().manual_seed(13)
    pred = torch.randn(3, 4, generator=g)
    target = torch.randn(3, 4, generator=g)
    r = torch.randn(3, 4, generator=g)
    emit("mse", "pred", pred)
    emit("mse", "target", target)
    emit("mse", "r", r)
    reductions("mse", lambda p, t, red: F.mse_loss(p, t, reduction=red), [pred, target],
               ["pred", "target"], r)


def graph_bce():
    """binary_cross_entropy_with_logits on [3, 4] with logits of +-1e4 and targets 0, 1 and in
    between; gradients for logits and targets."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, 4, generator=g) * 3
    x[0, 0], x[0, 1], x[1, 2], x[2, 3] = 1e4, -1e4, 1e4, -1e4
    x[2, 0] = 30.0  # past softplus's linear threshold (20)
    t = torch.rand(3, 4, generator=g)
    t[0, 0], t[0, 1], t[1, 2], t[2, 3], t[1, 0] = 1.0, 0.0, 0.0, 1.0, 1.0
    r = torch.randn(3, 4, generator=g)
    emit("bce", "logits", x)
    emit("bce", "targets", t)
    emit("bce", "r", r)
    reductions("bce", lambda a, b, red: F.binary_cross_entropy_with_logits(a, b, reduction=red),
               [x, t], ["logits", "targets"], r)


def graph_penalties():
    """l1 and l2 penalties (sum of |x| and of x^2) over two tensors."""
    g = torch.Generator().manual_seed(15)
    a = torch.randn(3, 4, generator=g)
    b = torch.randn(5, generator=g)
    emit("pen", "a", a)
    emit("pen", "b", b)
    for name, f in (("l1", torch.abs), ("l2", torch.square)):
        la, lb = leaf(a), leaf(b)
        loss = f(la).sum() + f(lb).sum()
        loss.backward()
        emit("pen", name, loss)
        emit("pen", f"grad_a_{name}", la.grad)
        emit("pen", f"grad_b_{name}", lb.grad)


def layer_norm_case(graph, x, norm_shape, affine, g):
    """layer_norm values and gradients of sum(r * y); with affine, also a second-order product:
    the gradient of sum(vx * dL/dx) + sum(vw * dL/dw) with respect to x and w."""
    w = (1 + 0.5 * torch.randn(norm_shape, generator=g)) if affine else None
    b = 0.5 * torch.randn(norm_shape, generator=g) if affine else None
    r = torch.randn(x.shape, generator=g)
    emit(graph, "x", x)
    emit(graph, "r", r)
    lx = leaf(x)
    lw = leaf(w) if affine else None
    lb = leaf(b) if affine else None
    y = F.layer_norm(lx, norm_shape, lw, lb, eps=1e-5)
    loss = (y * r).sum()
    emit(graph, "y", y)
    if not affine:
        loss.backward()
        emit(graph, "grad_x", lx.grad)
        return
    emit(graph, "w", w)
    emit(graph, "b", b)
    gx, gw, gb = torch.autograd.grad(loss, [lx, lw, lb], create_graph=True)
    emit(graph, "grad_x", gx)
    emit(graph, "grad_w", gw)
    emit(graph, "grad_b", gb)
    vx = torch.randn(x.shape, generator=g)
    vw = torch.randn(norm_shape, generator=g)
    emit(graph, "vx", vx)
    emit(graph, "vw", vw)
    s = (gx * vx).sum() + (gw * vw).sum()
    hx, hw = torch.autograd.grad(s, [lx, lw])
    emit(graph, "hvp_x", hx)
    emit(graph, "hvp_w", hw)


def graph_layer_norm():
    g = torch.Generator().manual_seed(16)
    layer_norm_case("ln1", torch.randn(4, 5, generator=g) * 2 + 1, (5,), True, g)
    layer_norm_case("ln1_plain", torch.randn(4, 5, generator=g), (5,), False, g)
    layer_norm_case("ln2", torch.randn(2, 3, 4, generator=g) * 3 - 1, (3, 4), True, g)
    layer_norm_case("ln2_plain", torch.randn(2, 3, 4, generator=g), (3, 4), False, g)
    # Rows with a large offset and a tiny spread: a one-pass variance would cancel, and
    # PyTorch's own result carries relative errors near 1e-8 here. The exact values (50 digits,
    # from the same double inputs) come too, as y_exact and grad_x_exact.
    layer_norm_case("ln_offset", 1e4 + 1e-2 * torch.randn(3, 6, generator=g), (6,), False, g)
    layer_norm_exact("ln_offset", 1e-5)


def layer_norm_exact(graph, eps):
    """y and the gradient of sum(r * y) over rows of graph's x (2-d), in 50-digit arithmetic."""
    mpmath.mp.dps = 50
    x = next(line for line in lines if line.startswith(f"{graph} x "))
    r = next(line for line in lines if line.startswith(f"{graph} r "))
    rows, n = (int(d) for d in x.split(":")[0].split()[3:5])
    xs = [mpmath.mpf(float(v)) for v in x.split(":")[1].split()]  # the doubles, exactly
    rs = [mpmath.mpf(float(v)) for v in r.split(":")[1].split()]
    ys, gs = [], []
    for i in range(rows):
        row, g = xs[i * n:(i + 1) * n], rs[i * n:(i + 1) * n]
        mu = sum(row) / n
        rstd = 1 / mpmath.sqrt(sum((v - mu) ** 2 for v in row) / n + mpmath.mpf(eps))
        xh = [(v - mu) * rstd for v in row]
        a, b = sum(g) / n, sum(gj * xj for gj, xj in zip(g, xh)) / n
        ys += xh
        gs += [rstd * (gj - a - xj * b) for gj, xj in zip(g, xh)]
    emit(graph, "y_exact", torch.tensor([float(v) for v in ys]).reshape(rows, n))
    emit(graph, "grad_x_exact", torch.tensor([float(v) for v in gs]).reshape(rows, n))


def graph_embedding():
    """embedding of 2-d indices (with repeats) into a [6, 3] table."""
    g = torch.Generator().manual_seed(17)
    table = torch.randn(6, 3, generator=g)
    idx = torch.tensor([[5, 0, 2], [2, 2, 4]], dtype=torch.int64)
    r = torch.randn(2, 3, 3, generator=g)
    lt = leaf(table)
    y = F.embedding(idx, lt)
    (y * r).sum().backward()
    emit("emb", "table", table)
    emit("emb", "indices", idx)
    emit("emb", "r", r)
    emit("emb", "y", y)
    emit("emb", "grad_table", lt.grad)


def main():
    graph_cross_entropy()
    graph_nll()
    graph_mse()
    graph_bce()
    graph_penalties()
    graph_layer_norm()
    graph_embedding()
    write("nn_reference.txt", "generate_nn.py")


if __name__ == "__main__":
    main()
