#!/usr/bin/env python3
"""Write tests/fixtures/batchnorm_variants/variants.safetensors: references
for lunet's BatchNorm variants (FusedBatchNorm2d, ghost BN through
virtual_batch_size, ema_update="skip", BatchRenorm1d/2d/3d), computed by
compositions of PyTorch ops in float64 with PyTorch's autograd, for
tests/spec/batchnorm_variants_spec.lua (which does not need PyTorch).

Needs torch and safetensors (CPU wheels are enough, see
scripts/gen_bn_fixtures.py). Usage:
    python scripts/gen_bn_variant_fixtures.py [output_dir]

The compositions (what lunet must match):
  batch statistics, per block of V samples with virtual_batch_size=V
  (each block x_b: mean and biased variance over N and the spatial dims);
  BatchRenorm in training: sigma = sqrt(running_var + eps),
      r = clip(sqrt(var_b + eps) / sigma, 1/rmax, rmax),
      d = clip((mean_b - running_mean) / sigma, -dmax, dmax), both detached,
      xhat = (x_b - mean_b) / sqrt(var_b + eps) * r + d;
  y = xhat * weight + bias, and for FusedBatchNorm2d relu(y + addend)
  (torch.relu: NaN stays NaN and passes its gradient, as
  threshold_backward does);
  running statistics, once per training forward unless ema_update="skip":
      r = (1 - f) * r + f * mean over blocks (of the means, of the unbiased
      variances), f = momentum or 1/num_batches_tracked;
  eval with running statistics (batch statistics of the whole batch
  without them).
Inputs are rounded to the case's dtype first; results are rounded to it
at the end, and the running statistics after every step (a module of that
dtype stores them so).

Metadata "case.NAME": space-separated key=value words:
    kind=bn|fused|renorm dims=1|2|3 dtype=float32|float64|float16|bfloat16
    format=contiguous|channels_last|nhwc_view eps=.. momentum=..|none
    affine=true|false track=true|false vb=V (0: none) ema=internal|skip
    addend=true|false rmax=.. dmax=.. steps=K
Tensors, for k = 1..K training steps, then one eval step "e":
    NAME.weight, NAME.bias            initial affine values (with affine)
    NAME.x.k NAME.a.k NAME.gy.k       input, addend, incoming gradient
    NAME.y.k NAME.gx.k NAME.ga.k      output and gradients
    NAME.gw.k NAME.gb.k               (with affine)
    NAME.rm.k NAME.rv.k NAME.nbt.k    buffers after the step (with track)
"""
import math
import os
import sys

import torch
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "float64": torch.float64,
          "float16": torch.float16, "bfloat16": torch.bfloat16}


def flag(b):
    return "true" if b else "false"


class Case:
    def __init__(self, name, shape, kind="bn", dtype="float32", fmt="contiguous", eps=1e-5,
                 momentum=0.1, affine=True, track=True, vb=0, ema="internal", addend=None,
                 rmax=3.0, dmax=5.0, steps=2, scale=2.0, shift=0.5, nan=None):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        if addend is None:
            self.addend = kind == "fused"


def step(c, st, x, a, gy, training):
    """One forward and backward of the composition in float64."""
    C, nd = x.shape[1], x.dim()
    red = [0] + list(range(2, nd))
    view = [1, C] + [1] * (nd - 2)
    xd = x.double().requires_grad_(True)
    ad = a.double().requires_grad_(True) if a is not None else None
    w = st["w"].clone().requires_grad_(True) if c.affine else None
    b = st["b"].clone().requires_grad_(True) if c.affine else None
    if training or not c.track:
        V = c.vb if (c.vb and training) else x.shape[0]
        parts, means, uvars = [], [], []
        for xb in xd.split(V):
            mu = xb.mean(red, keepdim=True)
            var = ((xb - mu) ** 2).mean(red, keepdim=True)
            m = xb.numel() // C
            xhat = (xb - mu) / torch.sqrt(var + c.eps)
            if c.kind == "renorm" and training:
                sigma = torch.sqrt(st["rv"].view(view) + c.eps)
                r = (torch.sqrt(var + c.eps) / sigma).clamp(1 / c.rmax, c.rmax).detach()
                d = ((mu - st["rm"].view(view)) / sigma).clamp(-c.dmax, c.dmax).detach()
                xhat = xhat * r + d
            parts.append(xhat)
            means.append(mu.detach().flatten())
            uvars.append(var.detach().flatten() * m / (m - 1))
        xhat = torch.cat(parts)
        if training and c.track and c.ema == "internal":
            st["nbt"] += 1
            f = 1.0 / st["nbt"] if c.momentum is None else c.momentum
            dt = DTYPES[c.dtype]
            st["rm"] = ((1 - f) * st["rm"] + f * torch.stack(means).mean(0)).to(dt).double()
            st["rv"] = ((1 - f) * st["rv"] + f * torch.stack(uvars).mean(0)).to(dt).double()
    else:
        xhat = (xd - st["rm"].view(view)) / torch.sqrt(st["rv"].view(view) + c.eps)
    y = xhat * w.view(view) + b.view(view) if c.affine else xhat
    if c.kind == "fused":
        y = torch.relu(y + ad if ad is not None else y)
    y.backward(gy.double())
    return y, xd.grad, ad.grad if ad is not None else None, w, b


def run_case(out, meta, c):
    dt = DTYPES[c.dtype]
    C = c.shape[1]
    st = {"rm": torch.zeros(C, dtype=torch.float64), "rv": torch.ones(C, dtype=torch.float64),
          "nbt": 0}
    if c.affine:
        st["w"] = (1 + 0.5 * torch.randn(C)).to(dt).double()
        st["b"] = torch.randn(C).to(dt).double()
        out[f"{c.name}.weight"] = st["w"].to(dt)
        out[f"{c.name}.bias"] = st["b"].to(dt)
    meta[f"case.{c.name}"] = " ".join([
        f"kind={c.kind}", f"dims={len(c.shape) - 2 if len(c.shape) > 2 else 1}",
        f"dtype={c.dtype}", f"format={c.fmt}", f"eps={c.eps!r}",
        f"momentum={'none' if c.momentum is None else repr(c.momentum)}",
        f"affine={flag(c.affine)}", f"track={flag(c.track)}", f"vb={c.vb}", f"ema={c.ema}",
        f"addend={flag(c.addend)}", f"rmax={c.rmax!r}", f"dmax={c.dmax!r}",
        f"steps={c.steps}"])
    for k in [str(i) for i in range(1, c.steps + 1)] + ["e"]:
        training = k != "e"
        x = (torch.randn(c.shape) * c.scale + c.shift).to(dt)
        a = torch.randn(c.shape).to(dt) if c.addend else None
        if c.nan == "x":
            x[1, 1].view(-1)[2] = math.nan
        if c.nan == "addend":
            a[2, 0].view(-1)[1] = math.nan
        gy = torch.randn(c.shape).to(dt)
        y, gx, ga, w, b = step(c, st, x, a, gy, training)
        p = f"{c.name}."
        out[p + f"x.{k}"] = x
        out[p + f"gy.{k}"] = gy
        out[p + f"y.{k}"] = y.detach().to(dt)
        out[p + f"gx.{k}"] = gx.to(dt)
        if a is not None:
            out[p + f"a.{k}"] = a
            out[p + f"ga.{k}"] = ga.to(dt)
        if c.affine:
            out[p + f"gw.{k}"] = w.grad.to(dt)
            out[p + f"gb.{k}"] = b.grad.to(dt)
        if c.track:
            out[p + f"rm.{k}"] = st["rm"].to(dt)
            out[p + f"rv.{k}"] = st["rv"].to(dt)
            out[p + f"nbt.{k}"] = torch.tensor(st["nbt"], dtype=torch.int64)


def cases():
    F, G, R = "fused", "bn", "renorm"
    return [
        # FusedBatchNorm2d: layouts, dtypes, addend or not, NaN, options
        Case("fused2d", (4, 3, 3, 4), F),
        Case("fused2d_cl", (4, 3, 3, 4), F, fmt="channels_last"),
        Case("fused2d_nhwc", (3, 4, 2, 3), F, fmt="nhwc_view"),
        Case("fused2d_noadd", (4, 3, 3, 4), F, addend=False),
        Case("fused2d_odd", (2, 5, 3, 5), F, fmt="channels_last"),
        Case("fused2d_odd_plane", (2, 5, 3, 5), F),
        Case("fused2d_f64", (3, 3, 3, 4), F, dtype="float64"),
        Case("fused2d_f16", (3, 3, 3, 4), F, dtype="float16"),
        Case("fused2d_bf16_cl", (3, 3, 3, 4), F, dtype="bfloat16", fmt="channels_last"),
        Case("fused2d_nan_x", (4, 3, 2, 3), F, nan="x"),
        Case("fused2d_nan_addend", (4, 3, 2, 3), F, nan="addend"),
        Case("fused2d_cumulative", (3, 3, 2, 3), F, momentum=None, steps=3),
        Case("fused2d_noaffine", (3, 3, 2, 3), F, affine=False),
        Case("fused2d_notrack", (3, 3, 2, 3), F, track=False),
        Case("fused2d_ghost", (6, 3, 2, 3), F, vb=2),
        Case("fused2d_skip", (3, 3, 2, 3), F, ema="skip"),
        # ghost BN on every rank and layout
        Case("ghost1d_nc", (8, 4), G, vb=2),
        Case("ghost1d_ncl", (6, 3, 5), G, vb=3),
        Case("ghost2d", (8, 3, 2, 3), G, vb=4),
        Case("ghost2d_cl", (8, 3, 2, 3), G, vb=2, fmt="channels_last"),
        Case("ghost2d_v1", (4, 3, 2, 2), G, vb=1),
        Case("ghost2d_vN", (4, 3, 2, 2), G, vb=4),
        Case("ghost3d", (4, 3, 2, 2, 3), G, vb=2),
        Case("ghost3d_cl", (4, 3, 2, 2, 3), G, vb=2, fmt="channels_last"),
        Case("ghost2d_f64", (6, 3, 2, 3), G, vb=3, dtype="float64"),
        Case("ghost2d_f16", (6, 3, 2, 3), G, vb=2, dtype="float16"),
        Case("ghost2d_bf16", (6, 3, 2, 3), G, vb=2, dtype="bfloat16"),
        Case("ghost2d_cumulative", (6, 3, 2, 2), G, vb=3, momentum=None, steps=3),
        Case("ghost2d_notrack", (6, 3, 2, 2), G, vb=2, track=False),
        Case("ghost2d_noaffine", (6, 3, 2, 2), G, vb=2, affine=False),
        # ema_update="skip"
        Case("skip2d", (4, 3, 2, 3), G, ema="skip"),
        Case("skip1d_ghost", (8, 3), G, ema="skip", vb=4),
        # BatchRenorm: clipping active (rmax 1.5, dmax 0.5) and the defaults
        Case("renorm1d", (8, 4), R, rmax=1.5, dmax=0.5, steps=3),
        Case("renorm1d_ncl", (4, 3, 5), R, rmax=1.5, dmax=0.5),
        Case("renorm2d", (4, 3, 3, 4), R, rmax=1.5, dmax=0.5, steps=3),
        Case("renorm2d_cl", (4, 3, 3, 4), R, rmax=1.5, dmax=0.5, fmt="channels_last"),
        Case("renorm2d_defaults", (4, 3, 3, 4), R, scale=5, shift=3),
        Case("renorm3d", (2, 3, 2, 3, 2), R, rmax=1.2, dmax=0.3),
        Case("renorm3d_cl", (2, 3, 2, 3, 2), R, rmax=1.2, dmax=0.3, fmt="channels_last"),
        Case("renorm2d_f64", (3, 3, 3, 4), R, dtype="float64", rmax=1.5, dmax=0.5),
        Case("renorm2d_f16", (3, 3, 3, 4), R, dtype="float16", rmax=1.5, dmax=0.5),
        Case("renorm2d_bf16", (3, 3, 3, 4), R, dtype="bfloat16", rmax=1.5, dmax=0.5),
        Case("renorm2d_ghost", (8, 3, 2, 3), R, vb=2, rmax=1.5, dmax=0.5),
        Case("renorm2d_skip", (4, 3, 2, 3), R, ema="skip", rmax=1.5, dmax=0.5),
        Case("renorm2d_cumulative", (4, 3, 2, 3), R, momentum=None, rmax=1.5, dmax=0.5,
             steps=3),
        Case("renorm2d_noaffine", (4, 3, 2, 3), R, affine=False, rmax=1.5, dmax=0.5),
    ]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
        "batchnorm_variants")
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    out, meta = {}, {}
    for c in cases():
        run_case(out, meta, c)
    meta["generator"] = f"scripts/gen_bn_variant_fixtures.py, torch {torch.__version__}"
    path = os.path.join(outdir, "variants.safetensors")
    save_file({k: v.contiguous().clone() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
