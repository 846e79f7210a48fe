#!/usr/bin/python3
"""safetensors_torch.py — checkpoint interop between tapegrad and PyTorch, both ways.

Run by hand (not part of `meson test`, not a CI dependency), with Debian's python3-torch (1.13)
and numpy. Debian has no safetensors package, so the format is read and written here with json,
struct and numpy:

    ninja -C build                                   # builds build/tests/write_checkpoint
    /usr/bin/python3 tests/interop/safetensors_torch.py [--driver build/tests/write_checkpoint]
                                                        [torch-to-tapegrad | tapegrad-to-torch]

With no mode it runs both and exits 0 only if both pass.

torch-to-tapegrad: writes a safetensors file from the state_dict of a PyTorch
    nn.Sequential(Linear(3, 4), ReLU(), Linear(4, 2), BatchNorm1d(2)) (the BatchNorm's entries,
    among them an I64 0-d num_batches_tracked, are extra tensors tapegrad must ignore), runs
    `write_checkpoint read FILE`, and checks that the four Linear tensors it prints equal the
    state_dict's bit for bit. Then a file with a wrongly shaped "2.weight" must be refused
    (TG_SHAPE) and one with a truncated data section too (TG_FORMAT).

tapegrad-to-torch: runs `write_checkpoint write FILE` (a [3 -> 4 -> 2] model, two Adam steps with
    lr 0.1, saved with the optimiser), loads the file into torch tensors, and repeats the same
    two steps with torch.optim.Adam from the same initial values and gradients: parameters,
    exp_avg and exp_avg_sq must agree (to 1e-6 relative or 1e-7 absolute: float32 arithmetic in
    another order differs by an ulp or two), the step count must be 2, the header
    padded to 8 bytes and tagged {"format": "tapegrad"}. The parameters are also loaded into the
    PyTorch model with load_state_dict.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"),
          "F16": np.dtype("<f2"), "I32": np.dtype("<i4"), "U8": np.dtype("u1"),
          "BOOL": np.dtype("?")}
TORCH_TO_ST = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64",
               torch.float16: "F16", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    """The reference layout: tensors sorted by dtype size (descending) then name, contiguous;
    the header padded with spaces to a multiple of 8 bytes."""
    items = sorted(tensors.items(),
                   key=lambda kv: (-kv[1].element_size(), kv[0]))
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in items:
        data = t.detach().contiguous().cpu().numpy().astype(
            DTYPES[TORCH_TO_ST[t.dtype]], copy=False).tobytes()
        header[name] = {"dtype": TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns (tensors, metadata, header length), validating what it reads."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw), "header past the end of the file"
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        dt = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = info["shape"]
        assert 0 <= begin <= end <= len(data), name
        assert end - begin == int(np.prod(shape, dtype=np.int64)) * dt.itemsize, name
        arr = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        tensors[name] = torch.from_numpy(arr.copy())
    return tensors, metadata, n


# The driver's formulas (tests/interop/write_checkpoint.c).
SHAPES = [("0.weight", (4, 3)), ("0.bias", (4,)), ("2.weight", (2, 4)), ("2.bias", (2,))]


def init(k, shape):
    j = np.arange(int(np.prod(shape)))
    return torch.from_numpy((((j * 7 + k * 13) % 17 - 8) / 16.0).astype(np.float32).reshape(shape))


def grad_offset(shape):
    j = np.arange(int(np.prod(shape)))
    return torch.from_numpy((np.float32(0.01) * (j % 3).astype(np.float32)).reshape(shape))


def run_driver(driver, mode, path):
    return subprocess.run([driver, mode, path], capture_output=True, text=True)


def torch_to_tapegrad(driver, tmp):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2),
                                torch.nn.BatchNorm1d(2))
    model.train()
    model(torch.randn(5, 3))  # BatchNorm running stats and num_batches_tracked (I64) change
    sd = model.state_dict()
    assert sd["3.num_batches_tracked"].dtype == torch.int64
    path = os.path.join(tmp, "from_torch.safetensors")
    write_safetensors(path, sd, {"format": "pt"})

    r = run_driver(driver, "read", path)
    if r.returncode != 0:
        print("torch-to-tapegrad: FAIL: the driver could not load the file:", r.stderr.strip())
        return False
    got = {}
    for line in r.stdout.splitlines():
        name, *vals = line.split()
        got[name] = np.array([float(v) for v in vals], dtype=np.float32)
    ok = True
    for name, shape in SHAPES:
        want = sd[name].numpy().reshape(-1)
        if name not in got or got[name].shape != want.shape or not np.array_equal(got[name], want):
            print(f"torch-to-tapegrad: FAIL: {name}: tapegrad read {got.get(name)}, "
                  f"torch has {want}")
            ok = False
    print(f"torch-to-tapegrad: {len(sd)} tensors written by torch ({len(SHAPES)} loaded, "
          f"{len(sd) - len(SHAPES)} extra ignored): "
          + ("values equal bit for bit" if ok else "MISMATCH"))

    # A different model: "2.weight" transposed must be refused; so must a truncated file.
    bad = dict(sd)
    bad["2.weight"] = sd["2.weight"].t().contiguous()
    bad_path = os.path.join(tmp, "bad_shape.safetensors")
    write_safetensors(bad_path, bad)
    r = run_driver(driver, "read", bad_path)
    if r.returncode == 0 or "TG_SHAPE" not in r.stderr:
        print("torch-to-tapegrad: FAIL: a wrongly shaped 2.weight was not refused:", r.stderr)
        ok = False
    else:
        print("torch-to-tapegrad: wrong shape refused:", r.stderr.strip())
    with open(path, "rb") as f:
        raw = f.read()
    cut_path = os.path.join(tmp, "cut.safetensors")
    with open(cut_path, "wb") as f:
        f.write(raw[:-3])
    r = run_driver(driver, "read", cut_path)
    if r.returncode == 0 or "TG_FORMAT" not in r.stderr:
        print("torch-to-tapegrad: FAIL: a truncated file was not refused:", r.stderr)
        ok = False
    else:
        print("torch-to-tapegrad: truncated file refused:", r.stderr.strip())
    return ok


def tapegrad_to_torch(driver, tmp):
    path = os.path.join(tmp, "from_tapegrad.safetensors")
    r = run_driver(driver, "write", path)
    if r.returncode != 0:
        print("tapegrad-to-torch: FAIL: the driver could not save:", r.stderr.strip())
        return False
    tensors, meta, hlen = read_safetensors(path)
    ok = True
    if hlen % 8 != 0 or meta.get("format") != "tapegrad" or meta.get("optim_steps") != "2":
        print(f"tapegrad-to-torch: FAIL: header length {hlen}, metadata {meta}")
        ok = False

    # The same two Adam steps in torch.
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, (name, shape) in enumerate(SHAPES):
            params[name].copy_(init(k, shape))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        for name, shape in SHAPES:
            p = params[name]
            p.grad = p.detach() * 0.5 + grad_offset(shape)
        opt.step()

    worst, exact, total = 0.0, 0, 0
    for name, shape in SHAPES:
        p = params[name]
        st = opt.state[p]
        for key, want in [(name, p.detach()), (name + ".exp_avg", st["exp_avg"]),
                          (name + ".exp_avg_sq", st["exp_avg_sq"])]:
            got = tensors.get(key)
            if got is None or got.dtype != torch.float32 or tuple(got.shape) != tuple(shape):
                print(f"tapegrad-to-torch: FAIL: {key}: missing or wrong dtype/shape ({got})")
                ok = False
                continue
            # Float32 arithmetic in another order may differ by an ulp or two of the update
            # (lr 0.1): 1e-6 relative, or 1e-7 absolute where an update cancels the value.
            worst = max(worst, (got - want).abs().max().item())
            exact += int((got == want).sum())
            total += got.numel()
            if not torch.allclose(got, want, rtol=1e-6, atol=1e-7):
                print(f"tapegrad-to-torch: FAIL: {key}: tapegrad {got}, torch {want}")
                ok = False
        if int(st["step"]) != int(meta.get("optim_steps", -1)):
            print(f"tapegrad-to-torch: FAIL: torch step {st['step']}, file {meta}")
            ok = False
    extra = sorted(set(tensors) - {n for n, _ in SHAPES}
                   - {n + s for n, _ in SHAPES for s in (".exp_avg", ".exp_avg_sq")})
    if extra:
        print("tapegrad-to-torch: FAIL: unexpected tensors", extra)
        ok = False
    # The parameters load into the PyTorch model as a state_dict.
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    fresh.load_state_dict({n: tensors[n] for n, _ in SHAPES})
    x = init(5, (3, 3))
    if not torch.allclose(fresh(x), model(x), rtol=1e-6, atol=1e-7):
        print("tapegrad-to-torch: FAIL: the loaded model computes something else")
        ok = False
    print(f"tapegrad-to-torch: {len(tensors)} tensors read by torch; parameters and Adam state "
          f"after 2 steps " + (f"match torch.optim.Adam ({exact} of {total} values bit for bit, "
                               f"largest difference {worst:.2e})" if ok else "DO NOT MATCH"))
    return ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", choices=["torch-to-tapegrad", "tapegrad-to-torch"])
    ap.add_argument("--driver", default=os.path.join(here, "..", "..", "build", "tests",
                                                     "write_checkpoint"))
    args = ap.parse_args()
    if not os.access(args.driver, os.X_OK):
        print(f"no driver at {args.driver}: build it with `ninja -C build`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        ok = True
        if args.mode in (None, "torch-to-tapegrad"):
            ok = torch_to_tapegrad(args.driver, tmp) and ok
        if args.mode in (None, "tapegrad-to-torch"):
            ok = tapegrad_to_torch(args.driver, tmp) and ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
