#!/usr/bin/python3
"""generate_rnn.py — PyTorch reference values for tests/test_rnn.c (recurrent layers and cells,
and a model state written by PyTorch).

Run with a Python that has torch (Debian's python3-torch 1.13 is at /usr/bin/python3):

    /usr/bin/python3 tests/reference/generate_rnn.py

It rebuilds tests/reference/rnn_reference.txt and tests/reference/rnn_state.safetensors next to
this script. Both are committed, so the tests need no PyTorch; rerun this only when a case
changes, and change test_rnn.c to match.

rnn_reference.txt has generate.py's format, one tensor per line. Each graph is one module
(built in float64 with PyTorch's default initialisation from a fixed seed) on fixed inputs:

    p.<key>    every entry of the module's state_dict, in state_dict order (the test checks that
               tapegrad names its parameters the same, in the same order)
    x h0 c0    the input and the initial states (h0/c0 absent when the module starts from zeros)
    out hn cn  the module's outputs (a cell's new h and c are hn and cn)
    r rh rc    fixed random weights of the loss sum(out*r) + sum(hn*rh) + sum(cn*rc)
    g.<name>   the gradient of that loss with respect to a parameter or input

The graph "sd" is a PyTorch nn.ModuleDict({"rnn": LSTM(3, 4, num_layers=2), "norm":
BatchNorm1d(4)}) in float32 whose batch norm has seen three training batches (so its running
statistics and its I64 num_batches_tracked are not the initial ones). Its state_dict is written
to rnn_state.safetensors (by tests/interop/safetensors_torch.py's writer, the reference layout)
and its entries to the text file as p.<key>, with the LSTM's output on x (computed in float64
from the float32 weights) as out.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from refio import emit, write  # noqa: E402
from safetensors_torch import write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)

I, H, T, B = 3, 4, 5, 2


def run_graph(name, module, x, states, run):
    """Emits the module's state, the inputs, the outputs of run(module, x, *states) -> (out, hn,
    cn or None) and the gradients of the weighted-sum loss."""
    for key, v in module.state_dict().items():
        emit(name, "p." + key, v)
    x = x.clone().requires_grad_(True)
    states = [s.clone().requires_grad_(True) for s in states]
    emit(name, "x", x)
    for sname, s in zip(["h0", "c0"], states):
        emit(name, sname, s)
    out, hn, cn = run(module, x, *states)
    g = torch.Generator().manual_seed(97)
    parts = [("out", out, "r"), ("hn", hn, "rh"), ("cn", cn, "rc")]
    loss = 0
    for oname, o, rname in parts:
        if o is None:
            continue
        r = torch.randn(o.shape, generator=g)
        emit(name, oname, o)
        emit(name, rname, r)
        loss = loss + (o * r).sum()
    loss.backward()
    for key, p in module.named_parameters():
        emit(name, "g." + key, p.grad)
    emit(name, "g.x", x.grad)
    for sname, s in zip(["h0", "c0"], states):
        emit(name, "g." + sname, s.grad)


def layer_run(module, x, *states):
    if not states:
        out, hn = module(x)
    elif isinstance(module, torch.nn.LSTM):
        out, (hn, cn) = module(x, (states[0], states[1]))
        return out, hn, cn
    else:
        out, hn = module(x, states[0])
    if isinstance(hn, tuple):
        hn, cn = hn
        return out, hn, cn
    return out, hn, None


def cell_run(module, x, *states):
    if isinstance(module, torch.nn.LSTMCell):
        h, c = module(x, (states[0], states[1])) if states else module(x)
        return h, h, c
    h = module(x, states[0]) if states else module(x)
    return h, h, None


def layers():
    """Two-layer RNN (tanh, relu), GRU and LSTM, sequence-first and batch-first, with given
    initial states; a GRU without biases from zero states."""
    cases = [
        ("rnn_tanh", lambda: torch.nn.RNN(I, H, num_layers=2, nonlinearity="tanh"), False, True),
        ("rnn_relu", lambda: torch.nn.RNN(I, H, num_layers=2, nonlinearity="relu",
                                          batch_first=True), True, True),
        ("gru", lambda: torch.nn.GRU(I, H, num_layers=2), False, True),
        ("gru_bf", lambda: torch.nn.GRU(I, H, num_layers=2, batch_first=True), True, True),
        ("gru_nobias", lambda: torch.nn.GRU(I, H, num_layers=2, bias=False), False, False),
        ("lstm", lambda: torch.nn.LSTM(I, H, num_layers=2), False, True),
        ("lstm_bf", lambda: torch.nn.LSTM(I, H, num_layers=2, batch_first=True), True, True),
    ]
    for k, (name, make, batch_first, given) in enumerate(cases):
        torch.manual_seed(100 + k)
        module = make()
        g = torch.Generator().manual_seed(200 + k)
        x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g)
        nstates = 2 if "lstm" in name else 1
        states = [torch.randn(2, B, H, generator=g) for _ in range(nstates)] if given else []
        run_graph(name, module, x, states, layer_run)


def cells():
    """RNNCell (tanh, relu), GRUCell and LSTMCell with given states, batch 3; a GRUCell without
    biases from a zero state."""
    cases = [
        ("cell_tanh", lambda: torch.nn.RNNCell(I, H), True),
        ("cell_relu", lambda: torch.nn.RNNCell(I, H, nonlinearity="relu"), True),
        ("cell_gru", lambda: torch.nn.GRUCell(I, H), True),
        ("cell_gru_nobias", lambda: torch.nn.GRUCell(I, H, bias=False), False),
        ("cell_lstm", lambda: torch.nn.LSTMCell(I, H), True),
    ]
    for k, (name, make, given) in enumerate(cases):
        torch.manual_seed(300 + k)
        module = make()
        g = torch.Generator().manual_seed(400 + k)
        x = torch.randn(3, I, generator=g)
        nstates = 2 if "lstm" in name else 1
        states = [torch.randn(3, H, generator=g) for _ in range(nstates)] if given else []
        run_graph(name, module, x, states, cell_run)


def state_dict_file():
    """A model's state written by PyTorch (see the module docstring)."""
    torch.manual_seed(500)
    model = torch.nn.ModuleDict({"rnn": torch.nn.LSTM(I, H, num_layers=2),
                                 "norm": torch.nn.BatchNorm1d(H)}).float()
    g = torch.Generator().manual_seed(501)
    model.train()
    for _ in range(3):
        model["norm"](torch.randn(6, H, generator=g).float())
    sd = model.state_dict()
    assert sd["norm.num_batches_tracked"].dtype == torch.int64
    write_safetensors(os.path.join(HERE, "rnn_state.safetensors"), sd, {"format": "pt"})
    for key, v in sd.items():
        emit("sd", "p." + key, v)
    x = torch.randn(T, B, I, generator=g).float()
    emit("sd", "x", x)
    with torch.no_grad():
        out, _ = model["rnn"].double()(x.double())
    emit("sd", "out", out)


layers()
cells()
state_dict_file()
write("rnn_reference.txt", "generate_rnn.py")
