"""bench_torch.py -- PyTorch's half of scripts/bench.

    python bench_torch.py --dir DIR --out FILE

Follows DIR/manifest.tsv, which bench_lunet.lua writes: the sampling
parameters, the measures, and per case its module, memory format, shape,
a safetensors file with the inputs and lunet's results, and for issue 4's
variants the PyTorch code to compare with (a peer module below) and its
options. First runs one
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
import torch.nn.functional as F  # noqa: E402

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


class FusedPeer(torch.nn.BatchNorm2d):
    """lunet's FusedBatchNorm2d as PyTorch code writes it: relu(bn(x) + a)."""

    def forward(self, x, a):
        return torch.relu(super().forward(x) + a)


class GhostPeer(torch.nn.BatchNorm2d):
    """lunet's virtual_batch_size: F.batch_norm on each block of V samples,
    the running statistics from the means of the blocks' statistics."""

    def __init__(self, c, virtual_batch_size):
        super().__init__(c)
        self.v = int(virtual_batch_size)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        blocks = x.split(self.v)
        with torch.no_grad():
            stats = [torch.var_mean(b, dim=(0, 2, 3), correction=1) for b in blocks]
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(torch.stack([s[1] for s in stats]).mean(0), alpha=m)
            self.running_var.mul_(1 - m).add_(torch.stack([s[0] for s in stats]).mean(0), alpha=m)
            self.num_batches_tracked += 1
        return torch.cat([F.batch_norm(b, None, None, self.weight, self.bias, True, 0.0, self.eps)
                          for b in blocks])


class RenormPeer(torch.nn.BatchNorm2d):
    """lunet's BatchRenorm2d: r and d from the batch and running statistics,
    then F.batch_norm with weight * r and bias + weight * d (which also
    updates the running statistics as BatchNorm does)."""

    def __init__(self, c, rmax, dmax):
        super().__init__(c)
        self.rmax, self.dmax = float(rmax), float(dmax)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            sigma = (self.running_var + self.eps).sqrt()
            r = ((var + self.eps).sqrt() / sigma).clamp(1 / self.rmax, self.rmax)
            d = ((mean - self.running_mean) / sigma).clamp(-self.dmax, self.dmax)
            self.num_batches_tracked += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * r,
                            self.bias + self.weight * d, True, self.momentum, self.eps)


PEERS = {"fused": FusedPeer, "ghost": GhostPeer, "renorm": RenormPeer}


def parse_opts(text):
    """"k=v,k=v" (or "-") from the manifest: a dict of numbers."""
    if text == "-":
        return {}
    return {k: float(v) for k, v in (kv.split("=") for kv in text.split(","))}


def make_module(module, c, weight, bias, peer="-", opts=None):
    m = PEERS[peer](c, **(opts or {})) if peer != "-" else getattr(torch.nn, module)(c)
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


def call(m, x, a):
    """m(x), or m(x, a) for a case with an addend."""
    return m(x) if a is None else m(x, a)


def check(key, module, fmt, peer, opts, ref, emit):
    """One fresh train forward+backward and an eval forward, compared with lunet's."""
    x = to_format(ref["x"], fmt).requires_grad_(True)
    a = to_format(ref["a"], fmt).requires_grad_(True) if "a" in ref else None
    dy = to_format(ref["dy"], fmt)
    m = make_module(module, x.shape[1], ref["weight"], ref["bias"], peer, opts)
    y = call(m, x, a)
    y.backward(dy)
    m.eval()
    with torch.no_grad():
        y_eval = call(m, ref["x"], ref.get("a"))
    got = {"y": y.detach(), "dx": x.grad, "dweight": m.weight.grad, "dbias": m.bias.grad,
           "running_mean": m.running_mean, "running_var": m.running_var, "y_eval": y_eval}
    if a is not None:
        got["da"] = a.grad
    for name, t in got.items():
        want = ref[name]
        if t.shape != want.shape:
            emit("check", key, name, 0, "inf")
            continue
        diff = (t - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        emit("check", key, name, 1 if diff <= TOL * scale else 0, f"{diff / scale:.3g}")


def case_steps(module, fmt, peer, opts, ref):
    """The step of each measure and the copy, as bench_lunet.lua's: outputs
    are freed after the clock stops, gradients reset to None before it
    starts."""
    x = to_format(ref["x"], fmt)
    xg = x.detach().clone().requires_grad_(True)
    a = to_format(ref["a"], fmt) if "a" in ref else None
    ag = a.detach().clone().requires_grad_(True) if a is not None else None
    dy = to_format(ref["dy"], fmt)
    m = make_module(module, x.shape[1], ref["weight"], ref["bias"], peer, opts)
    dst = torch.empty_like(x)
    clock = time.perf_counter

    def forward():
        t0 = clock()
        y = call(m, x, a)  # noqa: F841 -- freed on return
        return clock() - t0

    def reset():
        xg.grad = m.weight.grad = m.bias.grad = None
        if ag is not None:
            ag.grad = None

    def train_fwd_bwd():
        reset()
        t0 = clock()
        y = call(m, xg, ag)
        y.backward(dy)
        return clock() - t0

    def train_bwd():
        reset()
        y = call(m, xg, ag)
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
                peer = t[6] if len(t) > 6 else "-"
                opts = parse_opts(t[7] if len(t) > 7 else "-")
                cases.append((t[1], t[2], t[3], t[5], peer, opts))
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
        for key, module, fmt, path, peer, opts in cases:
            ref = load_safetensors(path)
            check(key, module, fmt, peer, opts, ref, emit)
            # keep the inputs only: lunet's results of many cases would not fit
            refs[key] = {k: v for k, v in ref.items() if k in ("x", "dy", "a", "weight", "bias")}
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

        for key, module, fmt, _, peer, opts in cases:
            m, copy, steps = case_steps(module, fmt, peer, opts, refs.pop(key))
            for name in measures:
                m.train(name != "eval_fwd")
                measure(key, name, steps[name], copy)
        key, module, shape = overhead
        measure(key, "eval_fwd", overhead_step(module, shape, p["calls"]))


if __name__ == "__main__":
    main()
