#!/usr/bin/env python3
"""Write tests/fixtures/batchnorm/*.safetensors: PyTorch's own BatchNorm
results, the reference for tests/spec/batchnorm_spec.lua (which does not
need PyTorch).

Needs torch and safetensors (CPU wheels are enough):
    python3 -m venv /tmp/bn-venv
    /tmp/bn-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/bn-venv/bin/pip install safetensors
Usage: /tmp/bn-venv/bin/python scripts/gen_bn_fixtures.py [output_dir]

Files (each small; tensors are stored contiguous, the spec builds the
memory formats itself):

modules.safetensors -- module cases. Metadata "case.NAME" holds the
    case's configuration as space-separated key=value words:
      dims=1|2|3 dtype=float32|float64|float16|bfloat16
      format=contiguous|channels_last  eps=.. momentum=..|none
      affine=true|false track=true|false steps=K
    Tensors, for k = 1..K training steps, then one eval step "e":
      NAME.weight, NAME.bias        initial affine values (with affine)
      NAME.x.k NAME.gy.k            input and the gradient fed to backward
      NAME.y.k                      output
      NAME.gx.k NAME.gw.k NAME.gb.k gradients (gw/gb with affine)
      NAME.rm.k NAME.rv.k NAME.nbt.k  buffers after the step (with track)
functional.safetensors -- nn.functional.batch_norm cases. Metadata
    "case.NAME" = "training=true|false momentum=.. eps=.. stats=true|false
    affine=true|false"; tensors NAME.x, NAME.rm, NAME.rv (given stats),
    NAME.w, NAME.b, NAME.y, NAME.rm_after, NAME.rv_after.
special.safetensors -- corners: empty batch, NaN in one channel, N=1,
    the accuracy case (accuracy.x float32 = 1e4 + 0.01*randn and
    accuracy.y64, the float64 result on the same values; PyTorch's own
    float32 error is in the metadata), lazy modules after a forward.
sd_v2.safetensors, sd_v1.safetensors, sd_noversion.safetensors -- state
    dicts of a module with a child "bn" (a trained BatchNorm2d(3)): version
    2, version 1 without num_batches_tracked, and no versions at all.
    The versions are in "lunet.state_dict_versions", as lunet.save writes
    them.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}
CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def flag(b):
    return "true" if b else "false"


def module_case(out, meta, name, shape, dims=2, dtype="float32", fmt="contiguous",
                eps=1e-5, momentum=0.1, affine=True, track=True, steps=3):
    """K training steps with backward, then one eval step with backward."""
    dt = DTYPES[dtype]
    m = CLASSES[dims](shape[1], eps=eps, momentum=momentum, affine=affine,
                      track_running_stats=track, dtype=dt)
    if affine:
        with torch.no_grad():
            m.weight.copy_(1 + 0.5 * torch.randn(shape[1]))
            m.bias.copy_(torch.randn(shape[1]))
        out[f"{name}.weight"] = m.weight.detach().clone()
        out[f"{name}.bias"] = m.bias.detach().clone()
    meta[f"case.{name}"] = " ".join([
        f"dims={dims}", f"dtype={dtype}", f"format={fmt}", f"eps={eps!r}",
        f"momentum={'none' if momentum is None else repr(momentum)}",
        f"affine={flag(affine)}", f"track={flag(track)}", f"steps={steps}"])
    for k in [str(i) for i in range(1, steps + 1)] + ["e"]:
        m.train(k != "e")
        x = (torch.randn(shape) * 2 + 0.5).to(dt)
        gy = torch.randn(shape).to(dt)
        xin = x.clone()
        if fmt == "channels_last":
            xin = xin.contiguous(memory_format=torch.channels_last if len(shape) == 4
                                 else torch.channels_last_3d)
        xin.requires_grad_(True)
        if m.weight is not None:
            m.weight.grad = None
            m.bias.grad = None
        y = m(xin)
        y.backward(gy)
        out[f"{name}.x.{k}"] = x
        out[f"{name}.gy.{k}"] = gy
        out[f"{name}.y.{k}"] = y.detach().contiguous()
        out[f"{name}.gx.{k}"] = xin.grad.contiguous()
        if affine:
            out[f"{name}.gw.{k}"] = m.weight.grad.clone()
            out[f"{name}.gb.{k}"] = m.bias.grad.clone()
        if track:
            out[f"{name}.rm.{k}"] = m.running_mean.clone()
            out[f"{name}.rv.{k}"] = m.running_var.clone()
            out[f"{name}.nbt.{k}"] = m.num_batches_tracked.clone()


def module_cases():
    out, meta = {}, {}
    module_case(out, meta, "bn1d_nc", (6, 4), dims=1)
    module_case(out, meta, "bn1d_ncl", (4, 3, 5), dims=1)
    module_case(out, meta, "bn2d", (3, 3, 4, 5))
    module_case(out, meta, "bn2d_cl", (3, 3, 4, 5), fmt="channels_last")
    module_case(out, meta, "bn2d_odd", (2, 5, 3, 3))
    module_case(out, meta, "bn3d", (2, 3, 3, 4, 2), dims=3)
    module_case(out, meta, "bn3d_cl", (2, 3, 3, 4, 2), dims=3, fmt="channels_last")
    module_case(out, meta, "bn2d_f64", (3, 3, 4, 5), dtype="float64")
    module_case(out, meta, "bn1d_f64", (5, 4, 3), dims=1, dtype="float64")
    module_case(out, meta, "bn2d_f16", (3, 3, 4, 5), dtype="float16")
    module_case(out, meta, "bn2d_bf16", (3, 3, 4, 5), dtype="bfloat16")
    module_case(out, meta, "bn2d_cl_bf16", (3, 3, 4, 5), dtype="bfloat16",
                fmt="channels_last")
    module_case(out, meta, "bn2d_cumulative", (3, 3, 2, 3), momentum=None, steps=4)
    module_case(out, meta, "bn2d_momentum", (3, 3, 2, 3), momentum=0.5)
    module_case(out, meta, "bn2d_eps", (3, 3, 2, 3), eps=0.5)
    module_case(out, meta, "bn2d_noaffine", (3, 3, 2, 3), affine=False)
    module_case(out, meta, "bn2d_notrack", (3, 3, 2, 3), track=False)
    module_case(out, meta, "bn2d_bare", (3, 3, 2, 3), affine=False, track=False)
    module_case(out, meta, "bn2d_n1", (1, 3, 4, 4))
    return out, meta


def functional_cases():
    out, meta = {}, {}

    def case(name, training, momentum, eps, stats, affine):
        x = torch.randn(4, 3, 3, 2)
        rm = torch.randn(3) if stats else None
        rv = torch.rand(3) + 0.5 if stats else None
        w = 1 + 0.5 * torch.randn(3) if affine else None
        b = torch.randn(3) if affine else None
        for k, v in [("x", x), ("rm", rm), ("rv", rv), ("w", w), ("b", b)]:
            if v is not None:
                out[f"{name}.{k}"] = v.clone()
        y = F.batch_norm(x, rm, rv, w, b, training, momentum, eps)
        out[f"{name}.y"] = y
        if stats:
            out[f"{name}.rm_after"] = rm
            out[f"{name}.rv_after"] = rv
        meta[f"case.{name}"] = (f"training={flag(training)} momentum={momentum!r} "
                                f"eps={eps!r} stats={flag(stats)} affine={flag(affine)}")

    case("train", True, 0.1, 1e-5, True, True)
    case("train_m03", True, 0.3, 1e-3, True, False)
    case("train_nostats", True, 0.1, 1e-5, False, True)
    case("eval", False, 0.1, 1e-5, True, True)
    case("eval_eps", False, 0.1, 0.25, True, False)
    return out, meta


def special_cases():
    out, meta = {}, {}
    # the empty batch: empty output, buffers unchanged, counter counts
    m = nn.BatchNorm2d(3)
    with torch.no_grad():
        m.running_mean.fill_(0.5)
    y = m(torch.randn(0, 3, 2, 2))
    out["empty.rm"] = m.running_mean.clone()
    out["empty.rv"] = m.running_var.clone()
    out["empty.nbt"] = m.num_batches_tracked.clone()
    assert y.shape == (0, 3, 2, 2)
    # NaN in channel 2 (Lua numbering) only
    x = torch.randn(4, 3, 2, 2)
    x[1, 1, 0, 1] = math.nan
    m = nn.BatchNorm2d(3)
    out["nan.x"] = x
    out["nan.y"] = m(x).detach()
    out["nan.rm"] = m.running_mean.clone()
    out["nan.rv"] = m.running_var.clone()
    # data far from zero: float64 reference on the float32 values
    x = (1e4 + 0.01 * torch.randn(4, 2, 16, 16, dtype=torch.float64)).float()
    y64 = F.batch_norm(x.double(), None, None, None, None, True, 0.1, 1e-5)
    y32 = F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    out["accuracy.x"] = x
    out["accuracy.y64"] = y64
    meta["accuracy.pytorch_float32_max_error"] = repr((y32.double() - y64).abs().max().item())
    # lazy modules: first forward in training
    for dims, shape in [(1, (5, 4)), (2, (3, 4, 2, 3)), (3, (2, 4, 2, 2, 3))]:
        cls = {1: nn.LazyBatchNorm1d, 2: nn.LazyBatchNorm2d, 3: nn.LazyBatchNorm3d}[dims]
        m = cls()
        x = torch.randn(shape)
        y = m(x)
        assert type(m).__name__ == f"BatchNorm{dims}d"
        out[f"lazy{dims}d.x"] = x
        out[f"lazy{dims}d.y"] = y.detach()
        out[f"lazy{dims}d.rm"] = m.running_mean.clone()
        out[f"lazy{dims}d.rv"] = m.running_var.clone()
        meta[f"lazy{dims}d.repr"] = repr(m)
    return out, meta


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(x)


def state_dicts(outdir):
    net = Net()
    with torch.no_grad():
        net.bn.weight.copy_(1 + 0.5 * torch.randn(3))
        net.bn.bias.copy_(torch.randn(3))
    for _ in range(2):
        net(torch.randn(4, 3, 2, 2))
    sd = net.state_dict()
    versions = {k: v["version"] for k, v in sd._metadata.items()}
    assert versions == {"": 1, "bn": 2}, versions
    tensors = {k: v.clone() for k, v in sd.items()}
    save_file(tensors, os.path.join(outdir, "sd_v2.safetensors"),
              metadata={"lunet.state_dict_versions": json.dumps(versions)})
    old = {k: v for k, v in tensors.items() if k != "bn.num_batches_tracked"}
    save_file(old, os.path.join(outdir, "sd_v1.safetensors"),
              metadata={"lunet.state_dict_versions": json.dumps({"": 1, "bn": 1})})
    save_file(old, os.path.join(outdir, "sd_noversion.safetensors"))
    # PyTorch itself loads the old forms with the counter at 0 ...
    for meta in [{"": {"version": 1}, "bn": {"version": 1}}, None]:
        sd1 = dict(old)
        if meta is not None:
            sd1 = type(sd)(old)
            sd1._metadata = meta
        fresh = Net()
        fresh.load_state_dict(sd1)
        assert fresh.bn.num_batches_tracked.item() == 0
    # ... and a version-2 one without the counter is a missing key
    sd2 = type(sd)(old)
    sd2._metadata = sd._metadata
    try:
        Net().load_state_dict(sd2)
        raise AssertionError("expected a missing key")
    except RuntimeError as e:
        assert 'Missing key(s) in state_dict: "bn.num_batches_tracked"' in str(e)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "batchnorm")
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for fname, gen in [("modules", module_cases), ("functional", functional_cases),
                       ("special", special_cases)]:
        out, meta = gen()
        meta["generator"] = f"scripts/gen_bn_fixtures.py, torch {torch.__version__}"
        save_file({k: v.contiguous() for k, v in out.items()},
                  os.path.join(outdir, f"{fname}.safetensors"), metadata=meta)
    state_dicts(outdir)
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"wrote {outdir} ({total} bytes)")


if __name__ == "__main__":
    main()
