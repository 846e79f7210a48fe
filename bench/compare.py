#!/usr/bin/python3
"""compare.py — tapegrad against PyTorch (and ADOL-C) on tg-bench's workloads, in one invocation.

Runs `tg-bench --json`, then the same workloads in PyTorch (in a child process), then ADOL-C's
`adolc-scalar` when the build has it, and prints one side-by-side table with speedups
(how many times faster tapegrad is: > 1 means tapegrad is faster).

    /usr/bin/python3 bench/compare.py [--threads T] [--repeats N] [--build DIR] [suite ...]
    /usr/bin/python3 bench/compare.py --from-json results.json --plot speedup.png

--plot FILE.png draws the speedups as a bar chart (python3-matplotlib, Debian's; only this option
needs it); --from-json FILE prints the table of a run saved with --json-out, and with --plot
charts it, without running anything.

Use Debian's /usr/bin/python3 (python3-torch): another python3 on PATH may lack torch; the script
looks for torch in its own interpreter and then in /usr/bin/python3.

Threads: tapegrad runs with --threads T (every kernel, GEMMs included: tapegrad does not use
OpenBLAS). PyTorch gets torch.set_num_threads(T) *and* OPENBLAS_NUM_THREADS=T (with
OMP_NUM_THREADS=T) in the environment of the process that imports it: Debian's torch runs its
GEMMs in OpenBLAS's own thread pool, which torch.set_num_threads does not limit. With T = 1 the
training suite also measures tapegrad's CNN at batch 128 and MLP at batch 512 on two threads,
beside a two-process compute probe of how many cores the host gave.

Every figure is the median over the repeats after warm-up runs, as in tg-bench.
"""
import argparse
import datetime
import gzip
import json
import os
import resource
import shlex
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUITES = ["scalar", "overhead", "elementwise", "matmul", "training", "memory", "higher", "rnn"]
DATA = "/usr/share/datasets/fashion-mnist"
LOWER_IS_BETTER = {"ns/node", "ns/op", "MiB", "calls", "ms", "us/step"}

# ---- the measuring harness (the same rule as tg-bench's) ------------------------------------


class Harness:
    def __init__(self, repeats, warmup):
        self.repeats, self.warmup = repeats, warmup
        self.rows = []

    def measure(self, fn, k=1):
        """fn() returns a list of k timed parts (seconds); returns k (median, min, max, n)."""
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        warmup, n = self.warmup, self.repeats
        if first > 1.0:
            warmup, n = min(warmup, 1), min(n, 3)
        elif first * (warmup + n) > 30.0:
            n = max(min(n, 3), min(n, int(30.0 / first) - warmup))
        for _ in range(1, warmup):
            fn()
        samples = [fn() for _ in range(n)]
        out = []
        for j in range(k):
            t = sorted(s[j] for s in samples)
            med = t[n // 2] if n % 2 else 0.5 * (t[n // 2 - 1] + t[n // 2])
            out.append((med, t[0], t[-1], n))
        return out

    def row(self, suite, name, unit, stats, **extra):
        med, lo, hi, n = stats
        r = {"suite": suite, "name": name, "unit": unit, "median": med, "min": lo, "max": hi,
             "repeats": n}
        r.update(extra)
        self.rows.append(r)
        print(f"  {suite:11s} {name:40s} {med:12.3f} {unit}", file=sys.stderr, flush=True)


def per(stats, scale):
    med, lo, hi, n = stats
    return (med * scale, lo * scale, hi * scale, n)


def rate(stats, work):
    med, lo, hi, n = stats
    return (work / med, work / hi, work / lo, n)


# ---- data ------------------------------------------------------------------------------------


def load_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return raw[4 + 4 * ndim:], shape


def load_fashion(data_dir):
    """The training set as a float32 [N, 28, 28] tensor in [0, 1] and int64 labels, converted
    without float64 temporaries (so peak RSS is the data, as in tapegrad)."""
    import warnings
    import torch
    xb, xs = load_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    yb, _ = load_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    with warnings.catch_warnings():  # read-only bytes: torch warns, and only reads them here
        warnings.simplefilter("ignore")
        x = torch.frombuffer(xb, dtype=torch.uint8).reshape(xs).to(torch.float32).div_(255)
        y = torch.frombuffer(yb, dtype=torch.uint8).to(torch.int64)
    return x, y


# ---- the PyTorch side ------------------------------------------------------------------------

MLP_BATCH, MLP_H = 32, 16


def mlp_weights():
    """micrograd's MLP(2, [16, 16, 1]) parameters, as tg-bench's scalar suite makes them."""
    w, s = [], 42
    n = 3 * MLP_H + MLP_H * MLP_H + MLP_H + MLP_H + 1
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        w.append((s >> 11) / 9007199254740992.0 * 2.0 - 1.0)
    return w


def mlp_points():
    import math
    xs, ys = [], []
    for i in range(MLP_BATCH):
        t = 3.14159265358979 * (i // 2) / (MLP_BATCH // 2 - 1)
        upper = i % 2 == 0
        xs.append((math.cos(t), math.sin(t)) if upper else (1.0 - math.cos(t), 0.5 - math.sin(t)))
        ys.append(1.0 if upper else -1.0)
    return xs, ys


def torch_scalar(h):
    import torch
    # micrograd's MLP on 0-d tensors: the same operations tg-bench records (b + sum w_i x_i per
    # neuron, ReLU on the hidden layers, mean squared error), then loss.backward().
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in mlp_weights()]
    xs, ys = mlp_points()
    H = MLP_H
    w1, b1 = params[0:2 * H], params[2 * H:3 * H]
    w2, b2 = params[3 * H:3 * H + H * H], params[3 * H + H * H:4 * H + H * H]
    w3, b3 = params[4 * H + H * H:5 * H + H * H], params[5 * H + H * H]

    def mlp():
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        loss = None
        for (x0, x1), y in zip(xs, ys):
            h1 = []
            for o in range(H):
                acc = b1[o]
                acc = acc + w1[2 * o] * x0
                acc = acc + w1[2 * o + 1] * x1
                h1.append(torch.relu(acc))
            h2 = []
            for o in range(H):
                acc = b2[o]
                for i in range(H):
                    acc = acc + w2[o * H + i] * h1[i]
                h2.append(torch.relu(acc))
            out = b3
            for i in range(H):
                out = out + w3[i] * h2[i]
            e = out - y
            sq = e * e
            loss = sq if loss is None else loss + sq
        loss = loss * (1.0 / MLP_BATCH)
        loss.backward()
        return [time.perf_counter() - t0]

    nodes = len(params) + 640 * MLP_BATCH + 96
    s = h.measure(mlp)[0]
    h.row("scalar", "micrograd MLP 2-16-16-1, batch 32", "ns/node", per(s, 1e9 / nodes),
          nodes=nodes, seconds=s[0])

    # Rosenbrock on 1,000 0-d tensors (larger n is too slow for PyTorch's per-op cost; the
    # figure per node holds for any n).
    n = 1000
    xv = [torch.tensor(0.001 * (i % 1000), dtype=torch.float64, requires_grad=True)
          for i in range(n)]

    def rosen():
        for x in xv:
            x.grad = None
        t0 = time.perf_counter()
        acc = torch.tensor(0.0, dtype=torch.float64)
        for i in range(1, n):
            d = xv[i] - xv[i - 1] * xv[i - 1]
            e = 1.0 - xv[i - 1]
            acc = acc + (100.0 * (d * d) + e * e)
        acc.backward()
        return [time.perf_counter() - t0]

    nodes = 2 + 10 * (n - 1)
    s = h.measure(rosen)[0]
    h.row("scalar", f"rosenbrock n={n}", "ns/node", per(s, 1e9 / nodes), nodes=nodes,
          seconds=s[0])


def torch_overhead(h):
    import torch
    for numel in (1, 64):
        for mode, label in enumerate(("no-grad forward", "recording forward",
                                      "forward + backward")):
            def run():
                t0 = time.perf_counter()
                with torch.set_grad_enabled(mode != 0):
                    x = torch.full((numel,), 0.5)
                    c = torch.full((numel,), 0.999)
                    if mode:
                        x.requires_grad_()
                    y = x
                    for _ in range(1000 // 3):
                        y = torch.tanh(torch.add(torch.mul(y, c), c))
                    y = torch.mul(y, c)
                    if mode == 2:
                        y.backward(torch.ones(numel))
                return [time.perf_counter() - t0]
            s = h.measure(run)[0]
            h.row("overhead", f"{label}, {numel} elem", "ns/op", per(s, 1e9 / 1000))


def torch_elementwise(h):
    import torch
    import torch.nn.functional as F
    big, small = 16 << 20, 1 << 20
    # The triad's arrays as tg-bench lays them out: one block, staggered by 4 KiB + 64 bytes.
    stride = big + 1040
    block = torch.empty(3 * stride)
    a, b, c = block[:big], block[stride:stride + big], block[2 * stride:2 * stride + big]
    a.fill_(0)
    b.fill_(1)
    c.fill_(2)

    def triad():
        t0 = time.perf_counter()
        torch.add(b, c, alpha=0.5, out=a)
        return [time.perf_counter() - t0]

    triad_stats = rate(h.measure(triad)[0], 12.0 * big / 1e9)
    h.row("elementwise", "triad a=b+s*c, 16M", "GB/s", triad_stats)
    ops = [("exp", torch.exp), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid),
           ("gelu", lambda t: F.gelu(t, approximate="tanh")), ("silu", F.silu),
           ("gelu_erf", lambda t: F.gelu(t, approximate="none"))]
    for n in (small, big):
        x = (torch.rand(n) * 6 - 3).requires_grad_()
        seed = torch.rand(n) * 2 - 1
        beside = n == big  # as in tg-bench: at 16M a triad runs beside every run of an op
        for name, op in ops:
            def run():
                t = triad()[0] if beside else 0.0
                t0 = time.perf_counter()
                y = op(x)
                t1 = time.perf_counter()
                torch.autograd.grad(y, x, seed)
                t2 = time.perf_counter()
                return [t1 - t0, t2 - t1, t]
            fwd, bwd, tri = h.measure(run, 3)
            fwd, bwd = rate(fwd, 8.0 * n / 1e9), rate(bwd, 12.0 * n / 1e9)
            ref = rate(tri, 12.0 * big / 1e9)[0] if beside else triad_stats[0]
            h.row("elementwise", f"{name} forward, {n >> 20}M", "GB/s", fwd,
                  of_triad=fwd[0] / ref, triad_GBs=ref)
            h.row("elementwise", f"{name} backward, {n >> 20}M", "GB/s", bwd,
                  of_triad=bwd[0] / ref, triad_GBs=ref)


def torch_matmul(h):
    import torch
    cases = [("mlp fc1 [128,784]x[784,256]", 128, 784, 256),
             ("mlp fc2 [128,256]x[256,128]", 128, 256, 128),
             ("mlp fc3 [128,128]x[128,10]", 128, 128, 10)]
    cases += [(f"square {s}", s, s, s) for s in (256, 512, 1024, 2048)]
    for name, m, k, n in cases:
        a = (torch.rand(m, k) * 2 - 1).requires_grad_()
        b = (torch.rand(k, n) * 2 - 1).requires_grad_()
        seed = torch.rand(m, n) * 2 - 1
        inner = [1]

        def run():
            tf = tb = 0.0
            for _ in range(inner[0]):
                t0 = time.perf_counter()
                c = torch.matmul(a, b)
                t1 = time.perf_counter()
                torch.autograd.grad(c, (a, b), seed)
                t2 = time.perf_counter()
                tf, tb = tf + t1 - t0, tb + t2 - t1
            return [tf, tb]
        once = sum(run())
        if once < 5e-3:
            inner[0] = int(5e-3 / once) + 1 if once > 0 else 1000
        fwd, bwd = h.measure(run, 2)
        flops = 2.0 * m * n * k
        h.row("matmul", f"{name} forward", "GFLOP/s", rate(fwd, flops * inner[0] / 1e9),
              m=m, k=k, n=n)
        h.row("matmul", f"{name} backward", "GFLOP/s", rate(bwd, 2 * flops * inner[0] / 1e9),
              m=m, k=k, n=n)


def torch_higher(h):
    """suite_higher.c's workload: the MLP 784-256-128-10 cross-entropy loss on a batch of 128
    (f32, weights [in, out]), its gradient with respect to the six parameters, and the
    Hessian-vector product by double backward (create_graph=True)."""
    import torch
    import torch.nn.functional as F
    widths = [784, 256, 128, 10]
    x = torch.rand(128, 784)
    y = torch.arange(128) % 10

    def params(bias):
        ps = []
        for i in range(3):
            a = (6.0 / (widths[i] + widths[i + 1])) ** 0.5
            ps.append((torch.rand(widths[i], widths[i + 1]) * 2 * a - a).requires_grad_())
            ps.append(torch.full((widths[i + 1],), bias).requires_grad_())
        return ps
    ps, vs = params(0.01), params(0.1)
    for act in ("relu", "tanh"):
        f = torch.relu if act == "relu" else torch.tanh

        def loss():
            z = x
            for i in range(3):
                z = z @ ps[2 * i] + ps[2 * i + 1]
                if i < 2:
                    z = f(z)
            return F.cross_entropy(z, y)

        def grad():
            t0 = time.perf_counter()
            torch.autograd.grad(loss(), ps)
            return [time.perf_counter() - t0]

        def hvp():
            t0 = time.perf_counter()
            gs = torch.autograd.grad(loss(), ps, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(gs, vs))
            torch.autograd.grad(dot, ps)
            return [time.perf_counter() - t0]
        (tg_,) = h.measure(grad)
        (th,) = h.measure(hvp)
        h.row("higher", f"gradient, {act}", "ms", per(tg_, 1e3))
        h.row("higher", f"hvp, {act}", "ms", per(th, 1e3),
              x_gradient=th[0] / tg_[0])


def torch_rnn(h):
    """suite_rnn.c's workload: torch.nn.GRU and torch.nn.LSTM (input and hidden 128, one layer,
    sequence-first) over 32 steps of a batch of 32, f32, in microseconds per step: the forward
    under no_grad, and the forward with the gradients of sum(output) for every parameter."""
    import torch
    steps, batch, size = 32, 32, 128
    x = torch.rand(steps, batch, size) - 0.5
    for name, cls in (("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)):
        model = cls(size, size)
        params = list(model.parameters())

        def forward():
            t0 = time.perf_counter()
            with torch.no_grad():
                model(x)
            return [time.perf_counter() - t0]

        def backward():
            t0 = time.perf_counter()
            out, _ = model(x)
            torch.autograd.grad(out.sum(), params)
            return [time.perf_counter() - t0]
        (tf,) = h.measure(forward)
        (tb,) = h.measure(backward)
        h.row("rnn", f"{name} forward", "us/step", per(tf, 1e6 / steps))
        h.row("rnn", f"{name} forward + backward", "us/step", per(tb, 1e6 / steps))


def torch_model(cnn):
    import torch.nn as nn
    if not cnn:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


class TorchTrainer:
    """tg-bench's training step in PyTorch: the batch (in file order, last partial one
    dropped), forward, cross-entropy, backward, Adam (lr 1e-3), zero_grad."""

    def __init__(self, x, y, cnn, batch):
        import torch
        torch.manual_seed(1)
        self.x, self.y, self.cnn, self.batch = x, y, cnn, batch
        self.net = torch_model(cnn)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.pos = 0

    def step(self):
        import torch.nn.functional as F
        if self.pos + self.batch > self.x.shape[0]:
            self.pos = 0
        xb = self.x[self.pos:self.pos + self.batch]
        yb = self.y[self.pos:self.pos + self.batch]
        self.pos += self.batch
        if self.cnn:
            xb = xb.reshape(self.batch, 1, 28, 28)
        loss = F.cross_entropy(self.net(xb), yb)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return loss


def torch_training(h, data_dir):
    if not os.path.exists(os.path.join(data_dir, "train-images-idx3-ubyte.gz")):
        print(f"compare.py: Fashion-MNIST not found in {data_dir}", file=sys.stderr)
        return
    x, y = load_fashion(data_dir)
    for cnn, batch, steps in ((False, 32, 256), (False, 128, 64), (False, 512, 16),
                              (True, 128, 2)):
        t = TorchTrainer(x, y, cnn, batch)

        def run():
            t0 = time.perf_counter()
            for _ in range(steps):
                t.step()
            return [time.perf_counter() - t0]
        s = h.measure(run)[0]
        h.row("training", f"{'cnn' if cnn else 'mlp'} batch {batch}", "samples/s",
              rate(s, steps * batch), steps_per_run=steps, ms_per_step=1e3 * s[0] / steps)


def torch_memory_child(model, batch, data_dir):
    """Peak RSS of a fresh process doing what tg-bench's memory child does."""
    x, y = load_fashion(data_dir)
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = TorchTrainer(x, y, model == "cnn", batch)
    for _ in range(1 + (4 if model == "cnn" else 20)):
        t.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"setup_kib": setup, "peak_kib": peak}))


def torch_memory(h, data_dir, threads):
    if not os.path.exists(os.path.join(data_dir, "train-images-idx3-ubyte.gz")):
        return
    for model, batch in (("mlp", 32), ("mlp", 128), ("cnn", 128)):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-memory-child",
                              model, str(batch), "--threads", str(threads), "--data", data_dir],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mib = r["peak_kib"] / 1024.0
        h.row("memory", f"peak RSS, {model} batch {batch}", "MiB", (mib, mib, mib, 1),
              after_setup_MiB=r["setup_kib"] / 1024.0)


def cpu_capability(torch):
    """The vector ISA PyTorch's own kernels use ("AVX2"), from its build report."""
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return "?"


def torch_worker(args):
    import torch
    torch.set_num_threads(args.threads)
    h = Harness(args.repeats, args.warmup)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "capability": cpu_capability(torch)}
    torch.manual_seed(0)
    for suite in args.suites:
        print(f"compare.py: PyTorch {suite}", file=sys.stderr, flush=True)
        if suite == "scalar":
            torch_scalar(h)
        elif suite == "overhead":
            torch_overhead(h)
        elif suite == "elementwise":
            torch_elementwise(h)
        elif suite == "matmul":
            torch_matmul(h)
        elif suite == "training":
            torch_training(h, args.data)
        elif suite == "memory":
            torch_memory(h, args.data, args.threads)
        elif suite == "higher":
            torch_higher(h)
        elif suite == "rnn":
            torch_rnn(h)
    print(json.dumps({"info": info, "rows": h.rows}))


# ---- the driver ------------------------------------------------------------------------------


def find_torch_python():
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import torch"], capture_output=True).returncode == 0:
            return py
    return None


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def speedup(unit, tg, other):
    if tg is None or other is None or tg <= 0 or other <= 0:
        return None
    return other / tg if unit in LOWER_IS_BETTER else tg / other


def compared(rows_tg, rows_torch, rows_adolc):
    """(row, tapegrad's, PyTorch's and ADOL-C's figures) for every row, tg-bench's in order, then
    PyTorch's own; None where a side did not measure it."""
    key = lambda r: (r["suite"], r["name"])
    torch_by, adolc_by = {key(r): r for r in rows_torch}, {key(r): r for r in rows_adolc}
    out = []
    seen = set()
    for r in rows_tg + [r for r in rows_torch if key(r) not in {key(t) for t in rows_tg}]:
        k = key(r)
        if k in seen:
            continue
        seen.add(k)
        is_tg = r in rows_tg
        tg = r["median"] if is_tg else None
        t = torch_by.get(k)
        tv = t["median"] if t else None
        if t and is_tg and r["suite"] == "scalar" and "nodes" in r and "seconds" in t:
            tv = t["seconds"] * 1e9 / r["nodes"]  # per tapegrad node of the same function
        a = adolc_by.get(k)
        av = a["seconds"] * 1e9 / (r.get("nodes") or a["tg_nodes"]) if a else None
        out.append((r, tg, tv, av))
    return out


def table(rows_tg, rows_torch, rows_adolc):
    """Markdown table rows: tg-bench's rows in order, PyTorch's and ADOL-C's beside them."""
    head = ["suite", "benchmark", "unit", "tapegrad", "PyTorch", "speedup vs PyTorch",
            "ADOL-C", "speedup vs ADOL-C"]
    lines = []
    for r, tg, tv, av in compared(rows_tg, rows_torch, rows_adolc):
        lines.append([r["suite"], r["name"], r["unit"], fmt(tg), fmt(tv),
                      fmt(speedup(r["unit"], tg, tv)) + ("x" if speedup(r["unit"], tg, tv)
                                                          else ""),
                      fmt(av), fmt(speedup(r["unit"], tg, av)) + ("x" if speedup(
                          r["unit"], tg, av) else "")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) if i < 3 else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"]
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                     for i, (c, w) in enumerate(zip(line, widths))) + " |")
    return "\n".join(out)


def plot(rows_tg, rows_torch, rows_adolc, path, title):
    """The speedups as a horizontal bar chart (log scale; 1 = as fast), one row per benchmark
    that PyTorch or ADOL-C measured too, written to `path` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    bars = []
    for r, tg, tv, av in compared(rows_tg, rows_torch, rows_adolc):
        vs_torch, vs_adolc = speedup(r["unit"], tg, tv), speedup(r["unit"], tg, av)
        if vs_torch or vs_adolc:
            bars.append((f"{r['suite']}: {r['name']}", vs_torch, vs_adolc))
    if not bars:
        raise SystemExit("compare.py: --plot: no row has a speedup to draw")
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * len(bars)))
    ys = range(len(bars))
    height = 0.38
    for k, (label, color) in enumerate((("vs PyTorch", "#4c72b0"), ("vs ADOL-C", "#dd8452"))):
        xs = [b[1 + k] for b in bars]
        pos = [y + (k - 0.5) * height for y in ys]
        drawn = [(p, x) for p, x in zip(pos, xs) if x]
        if drawn:  # from 1 (as fast): right when tapegrad is faster, left when slower
            ax.barh([p for p, _ in drawn], [x - 1 for _, x in drawn], height, label=label,
                    color=color, left=1)
            for p, x in drawn:
                ax.text(x, p, f" {fmt(x)}x " if x >= 1 else f"{fmt(x)}x ", va="center",
                        ha="left" if x >= 1 else "right", fontsize=7)
    ax.set_xscale("log")
    values = [x for b in bars for x in b[1:] if x]
    ax.set_xlim(min(min(values), 1) / 3, max(max(values), 1) * 4)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup: how many times faster tapegrad is (> 1: tapegrad faster; "
                  "for MiB, how many times less memory)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"compare.py: wrote {path}", file=sys.stderr)


def targets(rows_tg, rows_torch):
    """The performance issue's targets, each with its measured figure: (text, met) pairs."""
    tg = {(r["suite"], r["name"]): r for r in rows_tg}
    torch = {(r["suite"], r["name"]): r for r in rows_torch}
    out = []
    for name in ("micrograd MLP 2-16-16-1, batch 32", "rosenbrock n=100000"):
        r = tg.get(("scalar", name))
        if r:
            out.append((f"scalar <= 5 ns/node, {name}: {r['median']:.2f} ns/node",
                        r["median"] <= 5))
    r = tg.get(("overhead", "forward + backward, 64 elem"))
    if r:
        out.append((f"overhead <= 100 ns/op forward + backward at 64 elements: "
                    f"{r['median']:.1f} ns/op", r["median"] <= 100))
    for r in rows_tg:
        if r["suite"] == "elementwise" and r["name"].endswith(", 16M") and "of_triad" in r:
            out.append((f"elementwise {r['name']} >= 70% of triad: {100 * r['of_triad']:.0f}% "
                        f"({r['median']:.1f} of {r['triad_GBs']:.1f} GB/s)", r["of_triad"] >= 0.7))
    r, t = tg.get(("overhead", "forward + backward, 64 elem")), torch.get(
        ("overhead", "forward + backward, 64 elem"))
    if r and t:
        x = t["median"] / r["median"]
        out.append((f"tiny-tensor chain at 64 elements, forward + backward >= 60x PyTorch: "
                    f"{x:.1f}x ({r['median']:.1f} vs {t['median']:,.0f} ns/op)", x >= 60))
    for model, batch, want in (("mlp", 128, 1.4), ("mlp", 32, 2.0), ("mlp", 512, 1.5),
                               ("cnn", 128, 2.0)):
        k = ("training", f"{model} batch {batch}")
        if k in tg and k in torch:
            x = tg[k]["median"] / torch[k]["median"]
            out.append((f"training {model.upper()} batch {batch} >= {want}x PyTorch: {x:.2f}x "
                        f"({tg[k]['median']:,.0f} vs {torch[k]['median']:,.0f} samples/s)",
                        x >= want))
    r = tg.get(("training", "cnn batch 128, share of its GEMM floor"))
    if r:
        out.append((f"training CNN batch 128 >= 60% of its GEMM floor: {r['median']:.0f}% (floor "
                    f"{r['floor_ms_per_step']:.1f} ms at {r['gemm_GFLOPs']:.0f} GFLOP/s, step "
                    f"{r['step_ms']:.1f} ms)", r["median"] >= 60))
    probe = tg.get(("training", "two-process compute probe"))
    for name in ("cnn batch 128", "mlp batch 512"):
        r = tg.get(("training", f"{name}, 2 threads over 1"))
        if not r or not probe:
            continue
        cores = probe["median"]
        text = (f"two threads >= 1.6x one, {name}: {r['median']:.2f}x (compute probe: the host "
                f"gave {cores:.2f} cores)")
        if cores < 1.8:
            out.append((text + "; not applicable, the host did not give two cores", None))
        else:
            out.append((text, r["median"] >= 1.6))
    for r in rows_tg:
        if r["suite"] == "memory" and r["unit"] == "calls":
            out.append((f"0 allocator calls per steady-state step, {r['name'].split(', ')[1]}: "
                        f"{r['median']:g} per step over {r['steps']:.0f} steps after two warm-up steps "
                        f"(which made {r['step_1']:.0f} and {r['step_2']:.0f})",
                        r["median"] == 0))
    k = ("rnn", "gru forward + backward")
    if k in tg and k in torch:
        x = torch[k]["median"] / tg[k]["median"]
        out.append((f"GRU forward + backward >= 1.5x PyTorch: {x:.2f}x "
                    f"({tg[k]['median']:.1f} vs {torch[k]['median']:.1f} us per step)", x >= 1.5))
    for act in ("relu", "tanh"):
        r = tg.get(("higher", f"hvp, {act}"))
        if r and "x_gradient" in r:
            out.append((f"HVP of the MLP loss ({act}) <= 5x its gradient: "
                        f"{r['x_gradient']:.2f}x", r["x_gradient"] <= 5))
    return out


def merge_rounds(parts):
    """Rows of several rounds (lists of row lists) as one list in first-seen order: each figure
    the median over the rounds of the row's medians (and the extreme min and max)."""
    by, order = {}, []
    for rows in parts:
        for r in rows:
            k = (r["suite"], r["name"])
            if k not in by:
                by[k] = []
                order.append(k)
            by[k].append(r)
    out = []
    for k in order:
        rs = sorted(by[k], key=lambda r: r["median"])
        mid = rs[(len(rs) - 1) // 2] if len(rs) % 2 else None
        merged = dict(mid) if mid else dict(rs[len(rs) // 2 - 1])
        if not mid:  # an even count: the mean of the two middle rounds, numbers field by field
            a, b = rs[len(rs) // 2 - 1], rs[len(rs) // 2]
            for f, v in a.items():
                w = b.get(f)
                if f != "repeats" and isinstance(v, (int, float)) and isinstance(w, (int, float)):
                    merged[f] = 0.5 * (v + w)
        merged["min"] = min(r["min"] for r in rs)
        merged["max"] = max(r["max"] for r in rs)
        merged["rounds"] = len(rs)
        out.append(merged)
    return out


def run_json(cmd, env=None):
    print("compare.py: running " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr,
          flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if out.returncode != 0:
        print(f"compare.py: {cmd[0]} exited with {out.returncode}", file=sys.stderr)
    text = out.stdout
    return json.loads(text[text.index("{"):])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("suites", nargs="*", help="suites (default: all): " + " ".join(SUITES))
    p.add_argument("--threads", type=int, default=1, help="threads for both (default 1)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3,
                   help="run every suite in both this many times, alternating, and report the "
                        "median of the rounds' medians (default 3)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="Meson build directory")
    p.add_argument("--data", default=DATA, help="Fashion-MNIST directory")
    p.add_argument("--json-out", help="also write every result to this JSON file")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the speedups as a chart")
    p.add_argument("--from-json", metavar="FILE",
                   help="print the table (and --plot) of a run saved with --json-out; run nothing")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-adolc", action="store_true")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--torch-memory-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    for s in args.suites:
        if s not in SUITES:
            p.error(f"unknown suite {s}")
    args.suites = [s for s in SUITES if s in args.suites] if args.suites else SUITES
    if args.torch_memory_child:
        import torch
        torch.set_num_threads(args.threads)
        torch_memory_child(args.torch_memory_child[0], int(args.torch_memory_child[1]), args.data)
        return
    if args.torch_worker:
        torch_worker(args)
        return
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        rows = [saved[side]["rows"] for side in ("tapegrad", "torch", "adolc")]
        print(table(*rows))
        if args.plot:
            plot(*rows, args.plot, f"tapegrad's speedups, {args.from_json} "
                 f"({saved.get('date', 'undated')[:16]})")
        return

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()[0]
    tg_bench = os.path.join(args.build, "bench", "tg-bench")
    common = ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    torch_py = None if args.no_torch else find_torch_python()
    if not args.no_torch and not torch_py:
        print("compare.py: no python3 with torch found (apt-get install python3-torch)",
              file=sys.stderr)
    env = dict(os.environ)
    # Set before torch is imported: OpenBLAS sizes its pool when it loads.
    env.update(OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    adolc_bin = os.path.join(args.build, "bench", "adolc-scalar")

    # Suite by suite, tapegrad then PyTorch (then ADOL-C), so that each pair is measured close
    # together in time on a machine whose load may change; with --rounds, all of it again.
    tg, torch_info, adolc_meta = None, None, {}
    runs = {"tg": [], "torch": [], "adolc": []}
    for rnd in range(args.rounds):
        for suite in args.suites:
            part = run_json([tg_bench, "--json", "--threads", str(args.threads), "--data",
                             args.data] + common + [suite])
            if tg is None:
                tg = dict(part, rows=[], notes=[])
            if rnd == 0:
                tg["notes"] += part.get("notes", [])
            runs["tg"].append(part["rows"])
            if torch_py:
                part = run_json([torch_py, os.path.abspath(__file__), "--torch-worker",
                                 "--threads", str(args.threads), "--data", args.data] + common
                                + [suite], env=env)
                torch_info = part["info"]
                runs["torch"].append(part["rows"])
            if suite == "scalar" and not args.no_adolc and os.path.exists(adolc_bin):
                part = run_json([adolc_bin, "--json"] + common)
                adolc_meta = {k: v for k, v in part.items() if k != "rows"}
                runs["adolc"].append(part["rows"])
    tg["rows"] = merge_rounds(runs["tg"])
    torch_res = {"info": torch_info, "rows": merge_rounds(runs["torch"])}
    adolc = dict(adolc_meta, rows=merge_rounds(runs["adolc"]))
    load_end = os.getloadavg()[0]

    m = tg["machine"]
    lines = [
        f"compare.py, {started.strftime('%Y-%m-%d %H:%M UTC')}: "
        f"{' '.join(shlex.quote(a) for a in sys.argv)}",
        f"machine: {m['cpu']} (family {m['cpu_family']}, model {m['cpu_model']}), "
        f"{m['cores']} cores, {m['memory_gib']} GiB, {m['kernel']}; load average "
        f"{load_start:.2f} at the start, {load_end:.2f} at the end",
        f"tapegrad {tg['version']}: {m['build']}; --threads {m['threads']}; {m['compiler']}",
    ]
    if torch_res["info"]:
        i = torch_res["info"]
        lines.append(f"PyTorch {i['torch']} (CPU capability {i['capability']}): "
                     f"torch.set_num_threads({args.threads}) -> {i['threads']} threads, and "
                     f"OPENBLAS_NUM_THREADS={i['OPENBLAS_NUM_THREADS']} OMP_NUM_THREADS="
                     f"{i['OMP_NUM_THREADS']} set before import (Debian's torch runs GEMMs in "
                     "OpenBLAS's own pool, which set_num_threads does not limit)")
    if adolc["rows"]:
        lines.append(f"ADOL-C {adolc.get('adolc', '?')}: adolc-scalar (trace_on/trace_off + "
                     "gradient(), which re-runs the taped forward before the reverse sweep)")
    rounds = f", median of {args.rounds} alternating rounds" if args.rounds > 1 else ""
    lines.append(f"medians of {args.repeats} repeats after {args.warmup} warm-up runs "
                 f"(fewer repeats for runs over a second){rounds}; speedup = how many times faster "
                 "tapegrad is (> 1: tapegrad faster; for MiB, how many times less memory); each "
                 "suite runs in tapegrad, then in PyTorch, before the next")
    print("\n".join(lines))
    print()
    print(table(tg["rows"], torch_res["rows"], adolc["rows"]))
    notes = []
    if any(r["suite"] == "scalar" for r in tg["rows"]):
        notes.append("scalar: ns per node, where nodes are the entries tapegrad's scalar tape "
                     "records for the function (operations plus leaves: 20,913 for the MLP, "
                     "10 per Rosenbrock term); PyTorch (0-d float64 tensors, loss.backward()) "
                     "and ADOL-C are timed on the same function and divided by that same "
                     "count. PyTorch runs Rosenbrock at n=1000 only.")
    for a in adolc["rows"]:
        spilled = "; the tape spilled to files" if a.get("tape_on_file") else ""
        notes.append(f"ADOL-C {a['name']}: {a['median']:.2f} ns per ADOL-C taped operation "
                     f"({a['taped_ops']:.0f} operations; tapegrad records "
                     f"{a['tg_nodes']:.0f} nodes for it){spilled}")
    for r in tg["rows"]:
        if r["suite"] == "memory" and r["unit"] == "calls":
            notes.append(f"{r['name']}: {r['median']:g} per step over {r['steps']:.0f} steps "
                         f"after two warm-up steps (which made {r['step_1']:.0f} and "
                         f"{r['step_2']:.0f}: the first grows the tape's storage); the most "
                         f"in any counted step {r['most_in_a_counted_step']:.0f}; PyTorch: not "
                         "measured")
    for n in tg.get("notes", []):
        notes.append(n)
    if notes:
        print()
        for n in notes:
            print("- " + n)
    goals = targets(tg["rows"], torch_res["rows"])
    if goals:
        print()
        print("Targets:")
        for text, met in goals:
            print(f"- {'n/a' if met is None else 'met' if met else 'NOT MET'}: {text}")
    if args.plot:
        plot(tg["rows"], torch_res["rows"], adolc["rows"], args.plot,
             f"tapegrad's speedups, compare.py {started.strftime('%Y-%m-%d %H:%M UTC')}, "
             f"--threads {args.threads}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"tapegrad": tg, "torch": torch_res, "adolc": adolc,
                       "rounds": runs, "command": sys.argv, "date": started.isoformat()}, f,
                      indent=1)


if __name__ == "__main__":
    main()
