"""bench_torch.py -- PyTorch's half of scripts/bench.

    python bench_torch.py --manifest DIR/manifest.tsv --out FILE [--check]

Reads the cases that bench_lunet.lua wrote (manifest.tsv: key, module,
memory format, shape, safetensors file with the inputs and lunet's
results; a `params` line with the sampling parameters), times the same
measures on the same inputs with PyTorch, and writes one line per sample
to FILE in bench_lunet.lua's format. With --check it first runs one train
forward+backward and an eval forward on a fresh module and compares every
result with lunet's (a `check` line each). Threads: OMP_NUM_THREADS /
LUNET_NUM_THREADS, as scripts/bench sets them.
"""
import argparse
import json
import os
import struct
import time
import warnings

# A venv made for the benchmark has no NumPy, which torch only warns about.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

# Results agree when every element is within TOL times the tensor's largest
# magnitude (at least 1): dweight and dbias are float32 sums over up to
# 200k terms, added up in a different order by each framework.
TOL = 1e-4


def load_safetensors(path):
    """A dict of float32 tensors from a safetensors file (no extra package)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"])
    return out


def make_module(module, c, weight, bias):
    m = getattr(torch.nn, module)(c)
    with torch.no_grad():
        m.weight.copy_(weight)
        m.bias.copy_(bias)
    return m


def to_format(t, fmt):
    if fmt == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def sample(step, p):
    """Like bench_lunet.lua's: warm-up, then samples until the budget."""
    for _ in range(p["warm"]):
        step()
    out, start = [], time.perf_counter()
    while len(out) < p["max"] and (len(out) < p["min"] or time.perf_counter() - start < p["budget"]):
        out.append(step())
    return out


def check(key, module, fmt, ref, emit):
    """One fresh train forward+backward and an eval forward, compared with lunet's."""
    x = to_format(ref["x"], fmt).requires_grad_(True)
    dy = to_format(ref["dy"], fmt)
    m = make_module(module, x.shape[1], ref["weight"], ref["bias"])
    y = m(x)
    y.backward(dy)
    m.eval()
    with torch.no_grad():
        y_eval = m(ref["x"])
    got = {"y": y.detach(), "dx": x.grad, "dweight": m.weight.grad, "dbias": m.bias.grad,
           "running_mean": m.running_mean, "running_var": m.running_var, "y_eval": y_eval}
    for name, t in got.items():
        want = ref[name]
        if t.shape != want.shape:
            emit("check", key, name, 0, "inf")
            continue
        diff = (t - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        emit("check", key, name, 1 if diff <= TOL * scale else 0, f"{diff / scale:.3g}")
    if fmt == "channels_last":
        emit("check", key, "y_is_channels_last",
             1 if y.is_contiguous(memory_format=torch.channels_last) else 0, "0")


def time_case(key, module, fmt, ref, p, emit):
    x = to_format(ref["x"], fmt)
    xg = x.detach().clone().requires_grad_(True)
    dy = to_format(ref["dy"], fmt)
    m = make_module(module, x.shape[1], ref["weight"], ref["bias"])
    clock = time.perf_counter

    # Each step returns the seconds of the part it times; outputs are freed
    # when it returns, outside that part, as in bench_lunet.lua.
    def train_fwd():
        t0 = clock()
        y = m(x)
        return clock() - t0

    def train_fwd_bwd():
        xg.grad = m.weight.grad = m.bias.grad = None
        t0 = clock()
        y = m(xg)
        y.backward(dy)
        return clock() - t0

    def train_bwd():
        xg.grad = m.weight.grad = m.bias.grad = None
        y = m(xg)
        t0 = clock()
        y.backward(dy)
        return clock() - t0

    steps = {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd,
             "train_bwd": train_bwd, "eval_fwd": train_fwd}
    for name, step in steps.items():
        m.train(name != "eval_fwd")
        for s in sample(step, p):
            emit("sample", key, name, s)

    dst = torch.empty_like(x)

    def copy():
        t0 = clock()
        dst.copy_(x)
        return clock() - t0

    for s in sample(copy, p):
        emit("sample", key, "copy", s)


def time_overhead(key, module, shape, p, emit):
    m = getattr(torch.nn, module)(shape[1]).eval()
    x = torch.randn(*shape)
    calls = p["calls"]

    def step():
        t0 = time.perf_counter()
        for _ in range(calls):
            m(x)
        return (time.perf_counter() - t0) / calls

    q = dict(p, warm=1)
    for s in sample(step, q):
        emit("sample", key, "eval_fwd", s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()

    threads = int(os.environ.get("LUNET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)

    cases, p = [], None
    with open(a.manifest) as f:
        for line in f:
            t = line.rstrip("\n").split("\t")
            if t[0] == "params":
                p = {"warm": int(t[1]), "min": int(t[2]), "max": int(t[3]),
                     "budget": float(t[4]), "calls": int(t[5])}
            else:
                cases.append((t[0], t[1], t[2], [int(s) for s in t[3].split(",")], t[4]))

    with open(a.out, "w") as out:
        def emit(*fields):
            out.write("\t".join(str(v) for v in fields) + "\n")

        emit("meta", "threads", torch.get_num_threads())
        emit("meta", "torch", torch.__version__)
        with torch.no_grad():  # copies of the inputs need no history
            refs = {key: load_safetensors(path) for key, _, _, _, path in cases if path != "-"}
        if a.check:
            for key, module, fmt, _, path in cases:
                if path != "-":
                    check(key, module, fmt, refs[key], emit)
        for key, module, fmt, shape, path in cases:
            if path == "-":
                time_overhead(key, module, shape, p, emit)
            else:
                time_case(key, module, fmt, refs.pop(key), p, emit)


if __name__ == "__main__":
    main()
