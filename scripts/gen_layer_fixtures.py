#!/usr/bin/env python3
"""Write tests/fixtures/layers/*.safetensors: PyTorch's own results for the
layers and losses (nn.Linear, nn.Conv2d, pooling, activations, losses), the
reference for tests/spec/layers_spec.lua (which does not need PyTorch).

Needs torch and safetensors (CPU wheels are enough):
    python3 -m venv /tmp/io-venv
    /tmp/io-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/io-venv/bin/pip install safetensors
Usage: /tmp/io-venv/bin/python scripts/gen_layer_fixtures.py [output_dir]

Every file holds cases; metadata "case.NAME" gives a case's configuration
as space-separated key=value words, and its tensors are named NAME.*.
Tensors are stored contiguous (the spec builds channels-last inputs
itself). For each case, gy is the gradient fed to backward and gx, gw, gb
the gradients of the input, weight and bias.

conv.safetensors -- F.conv2d: stride=a,b padding=a,b|same|valid
    dilation=a,b groups=g bias=true|false format=contiguous|channels_last
    dtype=float32|float64 unbatched=true|false; NAME.x .w [.b] .y .gy .gx .gw [.gb]
linear.safetensors -- F.linear: bias=true|false dtype=..; NAME.x .w [.b] .y .gy .gx .gw [.gb]
pool.safetensors -- op=max kernel=a,b stride=a,b padding=a,b dilation=a,b
    ceil_mode=true|false format=..; or op=adaptive size=a,b (-1: None);
    NAME.x .y .gy .gx
loss.safetensors -- op=cross_entropy reduction=mean|sum|none
    ignore_index=k weight=true|false: NAME.x, NAME.target (int64, 1-BASED
    class indices: PyTorch's plus one; ignore_index is given in the same
    numbering), NAME.weight, NAME.y, NAME.gy (reduction none), NAME.gx;
    op=mse reduction=..: NAME.a .b .y .gy .ga .gb;
    op=log_softmax|softmax dim=d (1-based): NAME.x .y .gy .gx
model.safetensors -- a small CNN's state dict (PyTorch's keys), an input
    "input" and its logits "logits"; metadata "keys" lists the state dict
    keys in PyTorch's order.
repr.safetensors -- no tensors of interest; metadata "repr.NAME" is
    PyTorch's repr of a module, "args.NAME" how the spec builds it.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def flag(b):
    return "true" if b else "false"


def pair(v):
    v = (v, v) if isinstance(v, int) else tuple(v)
    return f"{v[0]},{v[1]}"


def save(out, meta, path):
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)")


# ---- conv2d ----

def conv_case(out, meta, name, N, C, H, W, OC, k, stride=1, padding=0, dilation=1,
              groups=1, bias=True, fmt="contiguous", dtype="float32", unbatched=False):
    dt = DTYPES[dtype]
    k2 = (k, k) if isinstance(k, int) else k
    x = torch.randn(N, C, H, W, dtype=dt)
    w = torch.randn(OC, C // groups, *k2, dtype=dt) * 0.5
    b = torch.randn(OC, dtype=dt) if bias else None
    xin = x[0] if unbatched else x
    if fmt == "channels_last":
        xin = xin.contiguous(memory_format=torch.channels_last)
    xin = xin.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    bg = b.clone().requires_grad_(True) if bias else None
    y = F.conv2d(xin, wg, bg, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = torch.randn(y.shape, dtype=dt)
    y.backward(gy)
    pad = padding if isinstance(padding, str) else pair(padding)
    meta[f"case.{name}"] = " ".join([
        f"stride={pair(stride)}", f"padding={pad}", f"dilation={pair(dilation)}",
        f"groups={groups}", f"bias={flag(bias)}", f"format={fmt}", f"dtype={dtype}",
        f"unbatched={flag(unbatched)}",
        f"out_format={'channels_last' if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous() else 'contiguous'}"])
    out[f"{name}.x"] = xin.detach().contiguous()
    out[f"{name}.w"] = w
    if bias:
        out[f"{name}.b"] = b
        out[f"{name}.gb"] = bg.grad
    out[f"{name}.y"] = y.detach().contiguous()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = xin.grad.contiguous()
    out[f"{name}.gw"] = wg.grad.contiguous()


def conv_cases():
    out, meta = {}, {}
    conv_case(out, meta, "basic", 2, 3, 6, 6, 4, 3)
    conv_case(out, meta, "stride_pad", 2, 3, 7, 6, 5, 3, stride=2, padding=1)
    conv_case(out, meta, "rect", 2, 2, 7, 8, 3, (3, 2), stride=(2, 1), padding=(1, 0))
    conv_case(out, meta, "dilated", 2, 3, 9, 8, 4, 3, dilation=2, padding=2)
    conv_case(out, meta, "dilated_rect", 1, 2, 9, 9, 2, (2, 3), dilation=(3, 1), stride=(1, 2))
    conv_case(out, meta, "groups", 2, 4, 5, 5, 6, 3, groups=2, padding=1)
    conv_case(out, meta, "depthwise", 2, 3, 5, 6, 6, 3, groups=3, stride=2, padding=1)
    conv_case(out, meta, "nobias", 3, 3, 5, 5, 2, 3, bias=False)
    conv_case(out, meta, "one_by_one", 2, 5, 4, 3, 3, 1)
    conv_case(out, meta, "same_odd", 2, 3, 5, 6, 4, 3, padding="same")
    conv_case(out, meta, "same_even", 2, 2, 5, 6, 3, (4, 2), padding="same", dilation=(1, 2))
    conv_case(out, meta, "valid", 2, 3, 5, 6, 4, 3, padding="valid")
    conv_case(out, meta, "channels_last", 2, 3, 6, 5, 4, 3, padding=1, fmt="channels_last")
    conv_case(out, meta, "channels_last_groups", 2, 4, 6, 5, 4, 3, stride=2, groups=2,
              fmt="channels_last")
    conv_case(out, meta, "unbatched", 1, 3, 5, 5, 4, 3, padding=1, unbatched=True)
    conv_case(out, meta, "f64", 2, 3, 6, 5, 4, 3, stride=(1, 2), padding=(2, 1),
              dilation=(1, 2), dtype="float64")
    conv_case(out, meta, "f64_groups_cl", 2, 6, 5, 5, 9, (2, 3), groups=3, padding=1,
              fmt="channels_last", dtype="float64")
    return out, meta


# ---- linear ----

def linear_case(out, meta, name, xshape, out_features, bias=True, dtype="float32"):
    dt = DTYPES[dtype]
    x = torch.randn(*xshape, dtype=dt).requires_grad_(True)
    w = torch.randn(out_features, xshape[-1], dtype=dt).requires_grad_(True)
    b = torch.randn(out_features, dtype=dt).requires_grad_(True) if bias else None
    y = F.linear(x, w, b)
    gy = torch.randn(y.shape, dtype=dt)
    y.backward(gy)
    meta[f"case.{name}"] = f"bias={flag(bias)} dtype={dtype}"
    out[f"{name}.x"] = x.detach()
    out[f"{name}.w"] = w.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = x.grad
    out[f"{name}.gw"] = w.grad
    if bias:
        out[f"{name}.b"] = b.detach()
        out[f"{name}.gb"] = b.grad


def linear_cases():
    out, meta = {}, {}
    linear_case(out, meta, "basic", (4, 3), 5)
    linear_case(out, meta, "nobias", (4, 3), 2, bias=False)
    linear_case(out, meta, "batched3d", (2, 3, 4), 5)
    linear_case(out, meta, "vector", (6,), 3)
    linear_case(out, meta, "f64", (5, 7), 4, dtype="float64")
    return out, meta


# ---- pooling ----

def max_case(out, meta, name, shape, k, stride=None, padding=0, dilation=1, ceil_mode=False,
             fmt="contiguous", dtype="float32"):
    x = torch.randn(*shape, dtype=DTYPES[dtype])
    xin = x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x
    xin = xin.clone().requires_grad_(True)
    y = F.max_pool2d(xin, k, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode)
    gy = torch.randn(y.shape, dtype=x.dtype)
    y.backward(gy)
    meta[f"case.{name}"] = " ".join([
        "op=max", f"kernel={pair(k)}", f"stride={pair(stride if stride is not None else k)}",
        f"padding={pair(padding)}", f"dilation={pair(dilation)}",
        f"ceil_mode={flag(ceil_mode)}", f"format={fmt}", f"dtype={dtype}"])
    out[f"{name}.x"] = x
    out[f"{name}.y"] = y.detach().contiguous()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = xin.grad.contiguous()


def adaptive_case(out, meta, name, shape, size, fmt="contiguous", dtype="float32"):
    x = torch.randn(*shape, dtype=DTYPES[dtype])
    xin = x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x
    xin = xin.clone().requires_grad_(True)
    y = F.adaptive_avg_pool2d(xin, size)
    gy = torch.randn(y.shape, dtype=x.dtype)
    y.backward(gy)
    s = (size, size) if isinstance(size, int) else tuple(-1 if v is None else v for v in size)
    meta[f"case.{name}"] = f"op=adaptive size={s[0]},{s[1]} format={fmt} dtype={dtype}"
    out[f"{name}.x"] = x
    out[f"{name}.y"] = y.detach().contiguous()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = xin.grad.contiguous()


def pool_cases():
    out, meta = {}, {}
    max_case(out, meta, "max_basic", (2, 3, 6, 6), 2)
    max_case(out, meta, "max_overlap", (2, 2, 7, 7), 3, stride=2, padding=1)
    max_case(out, meta, "max_ceil", (2, 2, 7, 6), 2, ceil_mode=True)
    max_case(out, meta, "max_ceil_pad", (1, 2, 8, 7), 3, stride=2, padding=1, ceil_mode=True)
    max_case(out, meta, "max_dilated", (2, 2, 9, 8), (2, 3), stride=(1, 2), dilation=(2, 1),
             padding=(1, 1))
    max_case(out, meta, "max_cl", (2, 3, 6, 5), 2, stride=1, fmt="channels_last")
    max_case(out, meta, "max_unbatched", (3, 6, 6), 3, stride=2)
    max_case(out, meta, "max_f64", (2, 3, 5, 5), 2, stride=1, padding=1, dtype="float64")
    adaptive_case(out, meta, "avg_down", (2, 3, 7, 5), 3)
    adaptive_case(out, meta, "avg_rect", (2, 2, 8, 9), (2, 4))
    adaptive_case(out, meta, "avg_none", (2, 2, 5, 6), (None, 4))
    adaptive_case(out, meta, "avg_up", (1, 2, 3, 2), (5, 4))
    adaptive_case(out, meta, "avg_global", (3, 4, 5, 5), 1, fmt="channels_last")
    adaptive_case(out, meta, "avg_unbatched", (2, 5, 7), (2, 3))
    adaptive_case(out, meta, "avg_f64", (2, 3, 6, 7), (4, 3), dtype="float64")
    return out, meta


# ---- losses and softmax ----

def ce_case(out, meta, name, shape, reduction="mean", weight=False, ignore_index=-100,
            dtype="float32", scale=2.0):
    dt = DTYPES[dtype]
    x = (torch.randn(*shape, dtype=dt) * scale).requires_grad_(True)
    C = shape[1] if len(shape) > 1 else shape[0]
    tshape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, C, tshape)
    if ignore_index >= 0:
        t.view(-1)[::3] = ignore_index
    w = torch.rand(C, dtype=dt) + 0.5 if weight else None
    y = F.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction)
    gy = torch.randn(y.shape, dtype=dt)
    y.backward(gy)
    lua_ignore = ignore_index + 1 if ignore_index >= 0 else ignore_index
    meta[f"case.{name}"] = (f"op=cross_entropy reduction={reduction} weight={flag(weight)} "
                            f"ignore_index={lua_ignore} dtype={dtype}")
    out[f"{name}.x"] = x.detach()
    # Lua's classes are PyTorch's plus one, and so is the ignore index, so
    # the entries equal to it are the ignored ones in both numberings
    out[f"{name}.target"] = t + 1
    if weight:
        out[f"{name}.weight"] = w
    out[f"{name}.y"] = y.detach()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = x.grad


def mse_case(out, meta, name, ashape, bshape, reduction="mean", dtype="float32"):
    dt = DTYPES[dtype]
    a = torch.randn(*ashape, dtype=dt).requires_grad_(True)
    b = torch.randn(*bshape, dtype=dt).requires_grad_(True)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        y = F.mse_loss(a, b, reduction=reduction)
    gy = torch.randn(y.shape, dtype=dt)
    y.backward(gy)
    meta[f"case.{name}"] = f"op=mse reduction={reduction} dtype={dtype}"
    out[f"{name}.a"] = a.detach()
    out[f"{name}.b"] = b.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.gy"] = gy
    out[f"{name}.ga"] = a.grad
    out[f"{name}.gb"] = b.grad


def softmax_case(out, meta, name, shape, dim, log=True, dtype="float32"):
    dt = DTYPES[dtype]
    x = (torch.randn(*shape, dtype=dt) * 3).requires_grad_(True)
    y = F.log_softmax(x, dim) if log else F.softmax(x, dim)
    gy = torch.randn(y.shape, dtype=dt)
    y.backward(gy)
    lua_dim = dim + 1 if dim >= 0 else dim
    meta[f"case.{name}"] = f"op={'log_softmax' if log else 'softmax'} dim={lua_dim} dtype={dtype}"
    out[f"{name}.x"] = x.detach()
    out[f"{name}.y"] = y.detach()
    out[f"{name}.gy"] = gy
    out[f"{name}.gx"] = x.grad


def loss_cases():
    out, meta = {}, {}
    for r in ("mean", "sum", "none"):
        ce_case(out, meta, f"ce_{r}", (6, 5), reduction=r)
        ce_case(out, meta, f"ce_weight_{r}", (6, 5), reduction=r, weight=True)
        ce_case(out, meta, f"ce_ignore_{r}", (7, 4), reduction=r, weight=True, ignore_index=1)
        ce_case(out, meta, f"ce_spatial_{r}", (2, 4, 3, 2), reduction=r)
        mse_case(out, meta, f"mse_{r}", (4, 3), (4, 3), reduction=r)
    ce_case(out, meta, "ce_unbatched", (7,))
    ce_case(out, meta, "ce_unbatched_none", (7,), reduction="none")
    ce_case(out, meta, "ce_f64", (5, 6), dtype="float64", weight=True)
    ce_case(out, meta, "ce_large", (3, 4), dtype="float64", scale=1000.0)   # stability
    mse_case(out, meta, "mse_broadcast", (4, 3), (1, 3))
    mse_case(out, meta, "mse_f64", (2, 3, 2), (2, 3, 2), dtype="float64")
    softmax_case(out, meta, "log_softmax_last", (4, 5), -1)
    softmax_case(out, meta, "log_softmax_dim1", (2, 3, 4), 1)
    softmax_case(out, meta, "softmax_dim0", (3, 4), 0, log=False)
    softmax_case(out, meta, "softmax_mid", (2, 5, 3), 1, log=False, dtype="float64")
    return out, meta


# ---- a model, for state dict keys and interop ----

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, groups=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(24, 10))

    def forward(self, x):
        return self.head(self.features(x))


def model_file():
    m = Net().eval()
    sd = m.state_dict()
    out = {k: v for k, v in sd.items()}
    x = torch.randn(3, 1, 10, 10)
    out["input"] = x
    out["logits"] = m(x).detach()
    return out, {"keys": ",".join(sd.keys())}


def repr_file():
    cases = {
        "linear": (nn.Linear(2, 3), "Linear 2 3"),
        "linear_nobias": (nn.Linear(2, 3, bias=False), "Linear 2 3 bias=false"),
        "conv": (nn.Conv2d(3, 8, 3), "Conv2d 3 8 3"),
        "conv_full": (nn.Conv2d(4, 8, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1),
                                groups=2, bias=False),
                      "Conv2d 4 8 3,5 stride=2 padding=1,2 dilation=2,1 groups=2 bias=false"),
        "conv_same": (nn.Conv2d(4, 8, 3, padding="same"), "Conv2d 4 8 3 padding=same"),
        "conv_valid": (nn.Conv2d(4, 8, 3, padding="valid"), "Conv2d 4 8 3 padding=valid"),
        "relu": (nn.ReLU(), "ReLU"),
        "relu_inplace": (nn.ReLU(inplace=True), "ReLU inplace=true"),
        "flatten": (nn.Flatten(), "Flatten"),
        "dropout": (nn.Dropout(), "Dropout"),
        "dropout_p": (nn.Dropout(0.25, inplace=True), "Dropout p=0.25 inplace=true"),
        "maxpool": (nn.MaxPool2d(2), "MaxPool2d 2"),
        "maxpool_full": (nn.MaxPool2d((2, 3), stride=1, padding=(1, 1), dilation=2,
                                      ceil_mode=True),
                         "MaxPool2d 2,3 stride=1 padding=1,1 dilation=2 ceil_mode=true"),
        "adaptive": (nn.AdaptiveAvgPool2d(5), "AdaptiveAvgPool2d 5"),
        "adaptive_pair": (nn.AdaptiveAvgPool2d((2, 3)), "AdaptiveAvgPool2d 2,3"),
        "ce": (nn.CrossEntropyLoss(), "CrossEntropyLoss"),
        "mse": (nn.MSELoss(), "MSELoss"),
    }
    meta = {}
    for name, (m, args) in cases.items():
        meta[f"repr.{name}"] = repr(m)
        meta[f"args.{name}"] = args
    return {"dummy": torch.zeros(1)}, meta


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures",
                                                                "layers")
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    for name, fn in (("conv", conv_cases), ("linear", linear_cases), ("pool", pool_cases),
                     ("loss", loss_cases), ("model", model_file), ("repr", repr_file)):
        out, meta = fn()
        save(out, meta, os.path.join(outdir, f"{name}.safetensors"))


if __name__ == "__main__":
    main()
