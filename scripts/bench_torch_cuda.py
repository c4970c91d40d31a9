"""bench_torch_cuda.py -- PyTorch CUDA's half of `scripts/bench --cuda`.

    python3 bench_torch_cuda.py --dir DIR --out FILE

Follows DIR/manifest.tsv, which bench_cuda.lua writes (the sampling
parameters, the measures, and per case its module, shape, dtype and memory
format), times the same measures the same way (torch.cuda.synchronize
around `reps` calls, reps chosen so that a sample lasts about as long as
lunet's) and writes one line per sample to FILE in bench_cuda.lua's format.
For float16/bfloat16 inputs two configurations are timed: float32
parameters ("mixed", what autocast training has, and what cuDNN's
BatchNorm takes) and parameters of the input's dtype ("same", lunet's
module dtype); the report takes the faster. torch.backends.cudnn is left
at its defaults (enabled, so PyTorch uses cuDNN where it chooses to).
"""
import argparse
import math
import os
import time

import torch


def read_manifest(path):
    p, measures, cases = None, None, []
    with open(path) as f:
        for line in f:
            t = line.rstrip("\n").split("\t")
            if t[0] == "params":
                p = {"warm": int(t[1]), "samples": int(t[2]), "sample_s": float(t[3])}
            elif t[0] == "measures":
                measures = t[1].split(",")
            elif t[0] == "case":
                cases.append({"key": t[1], "module": t[2], "shape": [int(s) for s in t[3].split(",")],
                              "dtype": getattr(torch, t[4]), "format": t[5]})
    return p, measures, cases


def samples(fn, p):
    """Like bench_cuda.lua's time(): warm-up, reps per sample, medians later."""
    sync, clock = torch.cuda.synchronize, time.perf_counter
    for _ in range(p["warm"]):
        fn()
    sync()
    t0 = clock()
    fn()
    sync()
    reps = max(1, min(1000, math.ceil(p["sample_s"] / max(clock() - t0, 1e-6))))
    out = []
    for _ in range(p["samples"]):
        sync()
        t0 = clock()
        for _ in range(reps):
            fn()
        sync()
        out.append((clock() - t0) / reps)
    return out


def steps_for(m, x, dy):
    xg = x.detach().requires_grad_(True)

    def forward():
        m(x)

    def train_fwd_bwd():
        xg.grad = m.weight.grad = m.bias.grad = None
        m(xg).backward(dy)

    return {"train_fwd": forward, "eval_fwd": forward, "train_fwd_bwd": train_fwd_bwd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    p, measures, cases = read_manifest(os.path.join(a.dir, "manifest.tsv"))
    torch.manual_seed(0)
    dev = torch.device("cuda")
    with open(a.out, "w") as out:
        def emit(*fields):
            out.write("\t".join(str(v) for v in fields) + "\n")
            out.flush()

        emit("meta", "torch", torch.__version__)
        emit("meta", "torch_cudnn", torch.backends.cudnn.version())
        for c in cases:
            fmt = torch.channels_last if c["format"] == "channels_last" else torch.contiguous_format
            x = torch.randn(c["shape"], device=dev, dtype=c["dtype"]).contiguous(memory_format=fmt)
            dy = torch.randn(c["shape"], device=dev, dtype=c["dtype"]).contiguous(memory_format=fmt)
            dst = torch.empty_like(x)
            for s in samples(lambda: dst.copy_(x), p):
                emit("sample", c["key"], "copy", "torch:mixed", s)
            configs = {"mixed": torch.float32}
            if c["dtype"] != torch.float32:
                configs["same"] = c["dtype"]
            for name, pdtype in configs.items():
                m = getattr(torch.nn, c["module"])(c["shape"][1]).to(device=dev, dtype=pdtype)
                steps = steps_for(m, x, dy)
                for measure in measures:
                    m.train(measure != "eval_fwd")
                    for s in samples(steps[measure], p):
                        emit("sample", c["key"], measure, "torch:" + name, s)
            del x, dy, dst
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
