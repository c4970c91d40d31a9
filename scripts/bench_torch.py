"""bench_torch.py -- PyTorch's half of scripts/bench.

    python bench_torch.py --dir DIR --out FILE

Follows DIR/manifest.tsv, which bench_lunet.lua writes: the sampling
parameters, the measures, and per case its module, memory format, shape
and a safetensors file with the inputs and lunet's results. First runs one
train forward+backward and an eval forward on a fresh module and compares
every result with lunet's (a `check` line each), then times the same
measures on the same inputs in blocks that alternate with lunet's through
the FIFOs DIR/to_torch and DIR/to_lunet, and writes one line per sample to
FILE in bench_lunet.lua's format. Threads: LUNET_NUM_THREADS (or
OMP_NUM_THREADS), as scripts/bench sets them.
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
# Seconds for one side's idle OpenMP workers to stop spinning (libgomp's
# default spin is a few milliseconds) before the other side's block.
SETTLE = 0.02


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


def block(step, p):
    """Like bench_lunet.lua's: warm-up, then samples until the budget."""
    for _ in range(p["warm"]):
        step()
    out, start = [], time.perf_counter()
    while len(out) < p["min"] or time.perf_counter() - start < p["budget"]:
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


def case_steps(module, fmt, ref):
    """The step of each measure and the copy, as bench_lunet.lua's: outputs
    are freed after the clock stops, gradients reset to None before it
    starts."""
    x = to_format(ref["x"], fmt)
    xg = x.detach().clone().requires_grad_(True)
    dy = to_format(ref["dy"], fmt)
    m = make_module(module, x.shape[1], ref["weight"], ref["bias"])
    dst = torch.empty_like(x)
    clock = time.perf_counter

    def forward():
        t0 = clock()
        y = m(x)  # noqa: F841 -- freed on return
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

    def copy():
        t0 = clock()
        dst.copy_(x)
        return clock() - t0

    return m, copy, {"train_fwd": forward, "eval_fwd": forward,
                     "train_fwd_bwd": train_fwd_bwd, "train_bwd": train_bwd}


def overhead_step(module, shape, calls):
    m = getattr(torch.nn, module)(shape[1]).eval()
    x = torch.randn(*shape)

    def step():
        t0 = time.perf_counter()
        for _ in range(calls):
            m(x)
        return (time.perf_counter() - t0) / calls

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    threads = int(os.environ.get("LUNET_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)

    # Opening the FIFO waits for lunet, which writes the manifest first.
    rx = open(os.path.join(a.dir, "to_torch"), "r")
    tx = open(os.path.join(a.dir, "to_lunet"), "w")
    cases, overhead, p, pc, measures = [], None, None, None, None
    with open(os.path.join(a.dir, "manifest.tsv")) as f:
        for line in f:
            t = line.rstrip("\n").split("\t")
            if t[0] == "params":
                p = {"warm": int(t[1]), "min": int(t[2]), "budget": float(t[3]),
                     "blocks": int(t[4]), "calls": int(t[5])}
                pc = {"warm": 1, "min": 3, "budget": float(t[6])}  # the copy blocks
            elif t[0] == "measures":
                measures = t[1].split(",")
            elif t[0] == "case":
                cases.append((t[1], t[2], t[3], t[5]))
            elif t[0] == "overhead":
                overhead = (t[1], t[2], [int(s) for s in t[4].split(",")])

    def send(word):
        tx.write(word + "\n")
        tx.flush()

    def wait_for_lunet():
        if rx.readline() == "":
            raise SystemExit("bench_torch.py: the lunet side stopped")

    with open(a.out, "w") as out:
        def emit(*fields):
            out.write("\t".join(str(v) for v in fields) + "\n")

        emit("meta", "threads", torch.get_num_threads())
        emit("meta", "torch", torch.__version__)
        refs = {}
        for key, module, fmt, path in cases:
            refs[key] = load_safetensors(path)
            check(key, module, fmt, refs[key], emit)
        send("ready")

        # Each block of this side follows lunet's block of the same measure.
        # OpenMP workers spin for a while after their last parallel region:
        # each side's are left SETTLE seconds to fall asleep before the
        # other side times anything.
        def measure(key, name, step, copy=None):
            for b in range(1, p["blocks"] + 1):
                wait_for_lunet()
                time.sleep(SETTLE)
                for s in block(step, p):
                    emit("sample", key, name, b, s)
                if copy:
                    for s in block(copy, pc):
                        emit("sample", key, "copy/" + name, b, s)
                time.sleep(SETTLE)
                send("done")

        for key, module, fmt, _ in cases:
            m, copy, steps = case_steps(module, fmt, refs.pop(key))
            for name in measures:
                m.train(name != "eval_fwd")
                measure(key, name, steps[name], copy)
        key, module, shape = overhead
        measure(key, "eval_fwd", overhead_step(module, shape, p["calls"]))


if __name__ == "__main__":
    main()
