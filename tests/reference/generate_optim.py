#!/usr/bin/python3
"""generate_optim.py — PyTorch reference values for tests/test_optim.c.

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_optim.py

It rebuilds tests/reference/optim_reference.txt next to this script. The file is committed, so
the tests need no PyTorch; rerun this only when a configuration changes, and change
test_optim.c's table to match (the configurations are listed in both, in the same order).

The line format is generate.py's: one tensor per line,

    <graph> <name> <ndim> <d0> ... <d(ndim-1)> : <v0> <v1> ...

with values written by Python's repr (strtod reads them back exactly).

- graph "inputs": the three f32 parameters p0 [4,3], p1 [3], p2 [2,2,2] and ten gradient sets
  g<step>.<i> (step 0..9, parameter i), all drawn from one seed and rounded to f32. The gradient
  sets are scaled by different factors from step to step so that amsgrad's maximum matters.
- one graph per optimiser configuration (OPTIMISERS below): after 10 steps from the inputs, the
  parameters f32.p<i> and f64.p<i> and the named state buffers f32.p<i>.<state> (PyTorch's state
  names), run once in float32 and once in float64 (from the same f32-valued inputs).
- one graph per clipping case (CLIPS below), applied to gradient set 0: f32.total_norm (0-d) and
  the clipped gradients f32.g<i>, and the same in f64.
- one graph per schedule (SCHEDULES below): "closed", the scheduler's closed form at t = 0..T-1,
  and "chained", the learning rates get_last_lr() reports after t calls to step().
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, write  # noqa: E402

SHAPES = [(4, 3), (3,), (2, 2, 2)]
STEPS = 10
SCALES = [1.0, 3.0, 0.2, 1.0, 0.5, 2.0, 0.1, 1.0, 0.3, 1.5]

# name, class, options: the same table as test_optim.c's `configs`.
OPTIMISERS = [
    ("sgd", torch.optim.SGD, dict(lr=0.1)),
    ("sgd_momentum", torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd_nesterov", torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001)),
    ("adam", torch.optim.Adam, dict(lr=0.01)),
    ("adam_wd_amsgrad", torch.optim.Adam,
     dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("adamw", torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ("adamw_amsgrad", torch.optim.AdamW, dict(lr=0.02, weight_decay=0.05, amsgrad=True)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01)),
    ("rmsprop_centered", torch.optim.RMSprop,
     dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.9, centered=True)),
]

# name, max_norm, norm_type (clip_grad_norm_), or name, clip value (clip_grad_value_).
CLIPS = [
    ("clip_norm2", 1.0, 2.0),
    ("clip_norm2_noclip", 100.0, 2.0),
    ("clip_norm_inf", 0.5, math.inf),
    ("clip_norm3", 0.7, 3.0),
    ("clip_value", 0.3, None),
]

# name, scheduler factory (optimizer -> scheduler), number of values; base lr 0.1.
SCHEDULES = [
    ("sched_step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 12),
    ("sched_exponential", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), 12),
    ("sched_cosine",
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 11),
    ("sched_warmup",
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0,
                                                 total_iters=4), 10),
]

def make_inputs():
    g = torch.Generator().manual_seed(2024)
    params = [torch.randn(s, generator=g, dtype=torch.float32) for s in SHAPES]
    grads = [[torch.randn(s, generator=g, dtype=torch.float32) * SCALES[k] for s in SHAPES]
             for k in range(STEPS)]
    for i, p in enumerate(params):
        emit("inputs", f"p{i}", p)
    for k in range(STEPS):
        for i, gr in enumerate(grads[k]):
            emit("inputs", f"g{k}.{i}", gr)
    return params, grads


def run_optimiser(name, cls, opts, params, grads):
    for dtype, tag in [(torch.float32, "f32"), (torch.float64, "f64")]:
        ps = [p.clone().to(dtype).requires_grad_(True) for p in params]
        opt = cls(ps, **opts)
        for k in range(STEPS):
            for p, gr in zip(ps, grads[k]):
                p.grad = gr.clone().to(dtype)
            opt.step()
        for i, p in enumerate(ps):
            emit(name, f"{tag}.p{i}", p)
            for key, value in opt.state[p].items():
                if key != "step" and value is not None:
                    emit(name, f"{tag}.p{i}.{key}", value)


def run_clip(name, limit, norm_type, params, grads):
    for dtype, tag in [(torch.float32, "f32"), (torch.float64, "f64")]:
        ps = [p.clone().to(dtype).requires_grad_(True) for p in params]
        for p, gr in zip(ps, grads[0]):
            p.grad = gr.clone().to(dtype)
        if norm_type is None:
            torch.nn.utils.clip_grad_value_(ps, limit)
        else:
            total = torch.nn.utils.clip_grad_norm_(ps, limit, norm_type)
            emit(name, f"{tag}.total_norm", total)
        for i, p in enumerate(ps):
            emit(name, f"{tag}.g{i}", p.grad)


def run_schedule(name, factory, count):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = factory(opt)
    closed, chained = [], []
    for t in range(count):
        chained.append(sched.get_last_lr()[0])
        closed.append(sched._get_closed_form_lr()[0])
        opt.step()
        sched.step()
    emit(name, "closed", torch.tensor(closed, dtype=torch.float64))
    emit(name, "chained", torch.tensor(chained, dtype=torch.float64))


def main():
    params, grads = make_inputs()
    for name, cls, opts in OPTIMISERS:
        run_optimiser(name, cls, opts, params, grads)
    for name, limit, norm_type in CLIPS:
        run_clip(name, limit, norm_type, params, grads)
    for name, factory, count in SCHEDULES:
        run_schedule(name, factory, count)
    write("optim_reference.txt", "generate_optim.py")


if __name__ == "__main__":
    main()
