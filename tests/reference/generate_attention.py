#!/usr/bin/python3
"""generate_attention.py — PyTorch reference values for tests/test_attention.c
(scaled_dot_product_attention, tril, triu, masked_fill).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_attention.py

It rebuilds tests/reference/attention_reference.txt next to this script. The file is committed,
so the tests need no PyTorch; rerun this only when a case changes, and change test_attention.c to
match.

PyTorch 1.13 has no F.scaled_dot_product_attention, so `attention` below writes out the math of
PyTorch 2.x's reference implementation (matmul, mask, softmax, matmul) in float64:
    scores = q @ k^T * scale; causal: -inf where key > query (tril of ones, top-left aligned);
    boolean mask: -inf where it is False; float mask: added;  out = softmax(scores) @ v.
Two departures, both tapegrad's documented semantics: a causal flag may come with a mask (PyTorch
2.x refuses the pair; here both apply), and a query row that may attend to no key gives 0 and no
gradient (PyTorch gives NaN there, and NaN gradients for every key it shares a batch with): such
rows' scores are replaced by 0 before the softmax and their probabilities by 0 after it.

The format is generate.py's: one tensor per line, `<graph> <name> <ndim> <dims...> : <values...>`.
Each attention graph has its inputs q, k, v (and mask: float, or int64 0/1 for a boolean one),
config = [causal, scale (0: 1/sqrt(d)), mask kind (0 none, 1 additive, 2 boolean)], the seed r,
out, and grad_<input> = d sum(r * out) / d input. Graphs with an `u_<input>` have hvp_<input>, the
Hessian-vector product of sum(r * out) with the direction u (second order through PyTorch's
double backward). Inputs are rounded to float32 values so the f32 tests see the same inputs.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, leaf, write  # noqa: E402

torch.set_default_dtype(torch.float64)
NONE, ADD, BOOL = 0, 1, 2


def attention(q, k, v, mask, causal, scale):
    """The math of PyTorch 2.x's scaled_dot_product_attention, with tapegrad's rule for rows that
    see no key (see the module's docstring)."""
    s = 1 / math.sqrt(q.size(-1)) if scale == 0 else scale
    scores = q @ k.transpose(-2, -1) * s
    if causal:
        keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    p = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return p @ v


def f32(t):
    """t rounded to float32 values (held in float64)."""
    return t.float().double()


def graph(name, q, k, v, mask=None, causal=False, scale=0.0, hvp=False, seed=0):
    """Emits one attention graph: inputs, config, r, out, gradients (and the HVP when asked)."""
    g = torch.Generator().manual_seed(seed)
    kind = NONE if mask is None else BOOL if mask.dtype == torch.bool else ADD
    q, k, v = f32(q), f32(k), f32(v)
    if kind == ADD:
        mask = f32(mask)
    ins = [leaf(q), leaf(k), leaf(v)]
    names = ["q", "k", "v"]
    if kind == ADD:
        ins.append(leaf(mask))
        names.append("mask")
    m = ins[3] if kind == ADD else mask
    out = attention(ins[0], ins[1], ins[2], m, causal, scale)
    r = f32(torch.randn(out.shape, generator=g))
    loss = (out * r).sum()
    grads = torch.autograd.grad(loss, ins, create_graph=hvp)
    for n, t in zip(names[:3], (q, k, v)):
        emit(name, n, t)
    if kind == ADD:
        emit(name, "mask", mask)
    elif kind == BOOL:
        emit(name, "mask", mask.to(torch.int64))
    emit(name, "config", torch.tensor([float(causal), scale, float(kind)]))
    emit(name, "r", r)
    emit(name, "out", out)
    for n, gr in zip(names, grads):
        emit(name, "grad_" + n, gr)
    if hvp:
        us = [f32(torch.randn(t.shape, generator=g)) for t in ins]
        dot = sum((gr * u).sum() for gr, u in zip(grads, us))
        hv = torch.autograd.grad(dot, ins)
        for n, u, h in zip(names, us, hv):
            emit(name, "u_" + n, u)
            emit(name, "hvp_" + n, h)


def attention_graphs():
    g = torch.Generator().manual_seed(2024)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(shape, generator=g)

    # Batch and head dims, no mask, tq != tk.
    graph("plain", rnd(2, 3, 5, 4), rnd(2, 3, 7, 4), rnd(2, 3, 7, 3), seed=1)
    # An additive mask broadcast over batch and heads, -inf entries, a given scale; and the HVP.
    add = rnd(6, 9)
    add[1, 3] = add[4, 0] = add[4, 8] = float("-inf")
    graph("additive", rnd(2, 2, 6, 4), rnd(2, 2, 9, 4), rnd(2, 2, 9, 3), add, scale=0.3,
          hvp=True, seed=2)
    # A boolean key-padding mask [batch, 1, 1, keys].
    pad = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    pad[0, 0, 0, 6:] = False
    pad[1, 0, 0, 2] = False
    graph("boolean", rnd(2, 3, 6, 4), rnd(2, 3, 9, 4), rnd(2, 3, 9, 3), pad, seed=3)
    # Causal: square, more keys than queries, more queries than keys.
    graph("causal", rnd(2, 10, 4), rnd(2, 10, 4), rnd(2, 10, 3), causal=True, hvp=True, seed=4)
    graph("causal_wide", rnd(2, 5, 4), rnd(2, 12, 4), rnd(2, 12, 3), causal=True, seed=5)
    graph("causal_tall", rnd(2, 12, 4), rnd(2, 5, 4), rnd(2, 5, 3), causal=True, seed=6)
    # Broadcast: k shared by the heads, v by the batch; a float mask [heads, 1, keys].
    graph("broadcast", rnd(2, 3, 5, 4), rnd(2, 1, 7, 4), rnd(1, 3, 7, 3), rnd(3, 1, 7),
          hvp=True, seed=7)
    # One query; one key (with causal, every query sees key 0).
    graph("tq1", rnd(2, 1, 8), rnd(2, 9, 8), rnd(2, 9, 3), rnd(9), seed=8)
    graph("tk1", rnd(2, 4, 8), rnd(2, 1, 8), rnd(2, 1, 3), causal=True, seed=9)
    # Scores of magnitude 1e4, exact in float32: small integer q and k, scale 1, and an additive
    # mask of 1e4 plus offsets (exp(1e4) overflows without the running max); then dot products
    # of 1e4 themselves.
    qi = torch.randint(-2, 3, (2, 3, 4), generator=g).double()
    ki = torch.randint(-2, 3, (2, 6, 4), generator=g).double()
    big = torch.tensor([[1e4, 1e4 - 1, 1e4 + 0.5, -1e4, 1e4 - 2.25, 1e4 + 1.75],
                        [-1e4, -1e4 + 3, -1e4 - 0.5, -1e4 + 1, -1e4, -1e4 + 2],
                        [1e4, -1e4, 0.0, 5e3, 1e4 - 0.25, 1e4]])
    graph("big_mask", qi, ki, rnd(2, 6, 3), big, scale=1.0, seed=10)
    qb = 50 * torch.randint(-2, 3, (2, 4, 4), generator=g).double()
    kb = 50 * torch.randint(-2, 3, (2, 5, 4), generator=g).double()
    graph("big_dot", qb, kb, rnd(2, 5, 3), scale=1.0, seed=11)
    # Rows that see no key: a boolean mask with an all-False row, with causal; an additive mask
    # with an all -inf row.
    hide = torch.rand(2, 5, 6, generator=g) > 0.3
    hide[0, 2, :] = False
    hide[1, 4, :] = False
    graph("dead_boolean", rnd(2, 5, 4), rnd(2, 6, 4), rnd(2, 6, 3), hide, causal=True, seed=12)
    dead = rnd(5, 6)
    dead[3, :] = float("-inf")
    graph("dead_additive", rnd(2, 5, 4), rnd(2, 6, 4), rnd(2, 6, 3), dead, hvp=True, seed=13)
    # More queries and keys than a kernel block (64): several blocks of rows and of keys. The
    # mask grows along the keys, so later key blocks raise the running max (the rescaling path).
    ramp = 0.04 * torch.arange(150.0) + 0.5 * rnd(150)
    graph("long", rnd(1, 1, 70, 3), rnd(1, 1, 150, 3), rnd(1, 1, 150, 2), ramp, seed=14)
    graph("long_causal", rnd(1, 130, 3), rnd(1, 130, 3), rnd(1, 130, 2), causal=True, seed=15)


def mask_graphs():
    """tril, triu and masked_fill: values and gradients of sum(r * out)."""
    g = torch.Generator().manual_seed(77)
    x = f32(torch.randn(2, 4, 6, generator=g))
    r = f32(torch.randn(2, 4, 6, generator=g))
    emit("tri", "x", x)
    emit("tri", "r", r)
    for diag in (-5, -1, 0, 2, 7):
        for fn, name in ((torch.tril, "tril"), (torch.triu, "triu")):
            xl = leaf(x)
            out = fn(xl, diag)
            (out * r).sum().backward()
            emit("tri", f"{name}_{diag}".replace("-", "m"), out)
            emit("tri", f"grad_{name}_{diag}".replace("-", "m"), xl.grad)
    a = f32(torch.randn(3, 1, 5, generator=g))
    mask = torch.rand(4, 1, generator=g) > 0.5
    mask[0, 0], mask[1, 0] = True, False
    xl = leaf(a)
    out = torch.masked_fill(xl, mask, -2.5)
    rf = f32(torch.randn(out.shape, generator=g))
    (out * rf).sum().backward()
    emit("fill", "a", a)
    emit("fill", "mask", mask.to(torch.int64))
    emit("fill", "r", rf)
    emit("fill", "out", out)
    emit("fill", "grad_a", xl.grad)


if __name__ == "__main__":
    attention_graphs()
    mask_graphs()
    write("attention_reference.txt", "generate_attention.py")
