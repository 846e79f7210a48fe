#!/usr/bin/python3
"""generate.py — PyTorch reference values for tests/test_reference.c.

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate.py

It rebuilds tests/reference/reference.txt next to this script. The file is committed, so the
tests need no PyTorch; rerun this only when a graph changes, and change test_reference.c to match.

Every graph is built in float64 from fixed seeds. The file is plain text, one tensor per line:

    # a comment                  (lines starting with '#', and blank lines, are ignored)
    <graph> <name> <ndim> <d0> ... <d(ndim-1)> : <v0> <v1> ...

- <graph> and <name> are identifiers without spaces. Inputs are named as in the graph (x, w1,
  ...), outputs after what they are (loss, logits, ...), and the gradient of the graph's loss
  with respect to a tensor `t` is named grad_t.
- <ndim> is 0 for a scalar (one value, no dims).
- The values are the tensor's elements in row-major order, written with Python's repr (the
  shortest string that reads back to the same double), so strtod recovers them exactly.
  Integer tensors (labels) are written as integers.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, leaf, uniform, write  # noqa: E402

torch.set_default_dtype(torch.float64)


def graph_mlp():
    """(a) MLP 4-8-3 with tanh; softmax cross-entropy from logits with integer labels."""
    g = torch.Generator().manual_seed(1)
    x = leaf(torch.randn(5, 4, generator=g))
    w1 = leaf(torch.randn(4, 8, generator=g) * 0.5)
    b1 = leaf(torch.randn(8, generator=g) * 0.1)
    w2 = leaf(torch.randn(8, 3, generator=g) * 0.5)
    b2 = leaf(torch.randn(3, generator=g) * 0.1)
    labels = torch.tensor([2, 0, 1, 1, 2], dtype=torch.int64)
    h = torch.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    lp = torch.log_softmax(logits, dim=1)
    loss = -lp.gather(1, labels[:, None]).mean()
    # The same loss as PyTorch's own cross-entropy.
    assert abs(loss.item() - F.cross_entropy(logits, labels).item()) < 1e-14
    loss.backward()
    for name, t in [("x", x), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]:
        emit("mlp", name, t)
    emit("mlp", "labels", labels)
    emit("mlp", "logits", logits)
    emit("mlp", "loss", loss)
    for name, t in [("x", x), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]:
        emit("mlp", "grad_" + name, t.grad)


def graph_fanout():
    """(b) One tensor used by several branches."""
    g = torch.Generator().manual_seed(2)
    x = leaf(uniform((3, 4), -2, 2, g))
    y = torch.sum(x * x + torch.exp(x) * torch.sin(x) + x / (1 + x * x))
    y.backward()
    emit("fanout", "x", x)
    emit("fanout", "loss", y)
    emit("fanout", "grad_x", x.grad)


def graph_diamond():
    """(c) Diamonds: a feeds b, c and d; b feeds c; c and a meet again in d."""
    g = torch.Generator().manual_seed(3)
    x = leaf(uniform((4, 5), -2, 2, g))
    a = torch.tanh(x)
    b = torch.sigmoid(a)
    c = a * b
    d = c + a
    loss = torch.sum(d * d)
    loss.backward()
    emit("diamond", "x", x)
    emit("diamond", "loss", loss)
    emit("diamond", "grad_x", x.grad)


def graph_chain():
    """(d) A deep chain: 200 steps of y = tanh(0.9 y + 0.1), then a sum."""
    g = torch.Generator().manual_seed(4)
    x = leaf(uniform((6,), -2, 2, g))
    y = x
    for _ in range(200):
        y = torch.tanh(0.9 * y + 0.1)
    loss = y.sum()
    loss.backward()
    emit("chain", "x", x)
    emit("chain", "y", y)
    emit("chain", "loss", loss)
    emit("chain", "grad_x", x.grad)


def graph_batched():
    """(e) Batched matmul with broadcast batch dims, then logsumexp/softmax/max reductions; and
    softmax/log_softmax/logsumexp of rows with magnitudes around 1e4."""
    g = torch.Generator().manual_seed(5)
    a = leaf(torch.randn(2, 1, 3, 4, generator=g))
    b = leaf(torch.randn(3, 4, 5, generator=g))
    r = torch.randn(2, 3, 3, 5, generator=g)
    c = a @ b  # [2, 3, 3, 5]
    lse = torch.logsumexp(c, dim=-1)  # [2, 3, 3]
    sm = torch.softmax(c, dim=1)
    mx = torch.amax(c, dim=2)  # [2, 3, 5]
    lse0 = torch.logsumexp(c, dim=0, keepdim=True)  # [1, 3, 3, 5]
    loss = torch.sum(lse * lse) + torch.sum(sm * r) + torch.sum(mx) + torch.sum(lse0 * r)

    # Rows of magnitude 1e4: exp overflows without the max shift, and the row sums mix 1 with
    # values that underflow to 0.
    z = leaf(torch.tensor([[1e4, -1e4, 0.0, 5e3],
                           [-1e4, -1e4 + 1.0, -1e4 + 2.0, -1e4 + 0.5],
                           [1e4, 1e4, 1e4 - 3.0, -1e4],
                           [9999.5, -3.25, 1e4, 2.0]]))
    rz = torch.randn(4, 4, generator=g)
    zs = torch.softmax(z, dim=1)
    zl = torch.log_softmax(z, dim=1)
    zt = torch.log_softmax(z, dim=0)
    ze = torch.logsumexp(z, dim=1)
    loss_big = torch.sum(zs * rz) + torch.sum(zl * rz) + torch.sum(zt * rz.t()) + torch.sum(ze)
    for t in (zs, zl, zt, ze, loss_big):
        assert torch.isfinite(t).all()

    (loss + loss_big).backward()
    assert torch.isfinite(z.grad).all()
    emit("batched", "a", a)
    emit("batched", "b", b)
    emit("batched", "r", r)
    emit("batched", "lse", lse)
    emit("batched", "softmax", sm)
    emit("batched", "max", mx)
    emit("batched", "lse0", lse0)
    emit("batched", "loss", loss)
    emit("batched", "grad_a", a.grad)
    emit("batched", "grad_b", b.grad)
    emit("batched", "z", z)
    emit("batched", "rz", rz)
    emit("batched", "z_softmax", zs)
    emit("batched", "z_log_softmax", zl)
    emit("batched", "z_log_softmax0", zt)
    emit("batched", "z_logsumexp", ze)
    emit("batched", "loss_big", loss_big)
    emit("batched", "grad_z", z.grad)


def graph_broadcast():
    """(f) Broadcasting: a bias over a batch, a per-row scale, where/gt masks, clamp, gelu (tanh
    approximation), softplus, leaky_relu, and sum_to-style reductions back to the operands'
    shapes. Values stay well inside softplus's linear-switch threshold (20)."""
    g = torch.Generator().manual_seed(6)
    x = leaf(uniform((5, 4), -1.5, 1.5, g))
    b = leaf(uniform((4,), -0.5, 0.5, g))
    c = leaf(uniform((5, 1), 0.5, 1.5, g))
    h = x + b  # bias add over the batch
    u = h * c  # per-row scale
    m = torch.where(u > 0, u, 0.3 * h)
    v1 = torch.clamp(u, -0.5, 0.8)
    v2 = F.gelu(h, approximate="tanh")
    v3 = F.softplus(u)
    v4 = F.leaky_relu(h - 0.2, 0.05)
    r = torch.sum(m * v1 + v2 * v3 + v4, dim=0, keepdim=True)  # sum_to [1, 4]
    r2 = torch.sum(v2 * b, dim=1, keepdim=True)  # sum_to [5, 1]
    loss = torch.sum(r * r) + torch.sum(r2 * c)
    loss.backward()
    emit("broadcast", "x", x)
    emit("broadcast", "b", b)
    emit("broadcast", "c", c)
    emit("broadcast", "r", r)
    emit("broadcast", "r2", r2)
    emit("broadcast", "loss", loss)
    emit("broadcast", "grad_x", x.grad)
    emit("broadcast", "grad_b", b.grad)
    emit("broadcast", "grad_c", c.grad)


def main():
    graph_mlp()
    graph_fanout()
    graph_diamond()
    graph_chain()
    graph_batched()
    graph_broadcast()
    write("reference.txt", "generate.py")


if __name__ == "__main__":
    main()
