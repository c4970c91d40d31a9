#!/usr/bin/env python3
"""Write tests/fixtures/optim/cases.safetensors: PyTorch's own SGD, Adam and
AdamW updates, step by step, the reference for tests/spec/optim_spec.lua
(which does not need PyTorch).

Needs torch and safetensors (CPU wheels are enough):
    python3 -m venv /tmp/optim-venv
    /tmp/optim-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/optim-venv/bin/pip install safetensors
Usage: /tmp/optim-venv/bin/python scripts/gen_optim_fixtures.py [output_dir]

Every case optimizes two parameters, p1 (3x4) and p2 (5), with PyTorch's
single-tensor implementation (foreach=False), from the same initial values
and the same gradient sequence. p2 gets no gradient at step 3 (an update
must skip it); the gradients' scale falls and rises so that amsgrad's
running maximum matters.

Metadata "case.NAME" holds the case as space-separated key=value words:
    optim=SGD|Adam|AdamW dtype=float32|float64 steps=K groups=1|2
    then the constructor's options (betas as "b1,b2"), and with groups=2
    the second group's overrides as g2.KEY=VALUE (p1 is in group 1, p2 in
    group 2).
Tensors, for parameter j = 1, 2 and step k = 1..K:
    NAME.p{j}.0     initial value
    NAME.g{j}.{k}   gradient given before step k (absent: no gradient)
    NAME.p{j}.{k}   value after step k
    NAME.state.{j}.{key}  the optimizer's state after the last step
                    (momentum_buffer; step, exp_avg, exp_avg_sq,
                    max_exp_avg_sq), as PyTorch's state_dict() holds it
"""
import os
import sys

import torch
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CLASSES = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
SCALES = [1.0, 3.0, 0.5, 2.0, 0.1, 0.05, 1.5]   # gradient scale per step
SKIP = {(2, 3)}                                  # (param, step) without grad


def word(k, v):
    if isinstance(v, bool):
        v = "true" if v else "false"
    elif isinstance(v, tuple):
        v = ",".join(repr(x) for x in v)
    else:
        v = repr(v)
    return f"{k}={v}"


def case(out, meta, name, optim, dtype, opts, g2=None):
    dt = DTYPES[dtype]
    steps = len(SCALES)
    p1 = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64).to(dt))
    p2 = torch.nn.Parameter((torch.randn(5, dtype=torch.float64) + 1).to(dt))
    params = [p1, p2]
    for j, p in enumerate(params, 1):
        out[f"{name}.p{j}.0"] = p.detach().clone()
    if g2 is None:
        groups = [{"params": params}]
    else:
        groups = [{"params": [p1]}, dict(g2, params=[p2])]
    opt = CLASSES[optim](groups, foreach=False, **opts)
    words = [f"optim={optim}", f"dtype={dtype}", f"steps={steps}",
             f"groups={len(groups)}"]
    words += [word(k, v) for k, v in opts.items()]
    words += [word("g2." + k, v) for k, v in (g2 or {}).items()]
    meta[f"case.{name}"] = " ".join(words)
    for k in range(1, steps + 1):
        opt.zero_grad()
        for j, p in enumerate(params, 1):
            if (j, k) in SKIP:
                continue
            g = (torch.randn(p.shape, dtype=torch.float64) * SCALES[k - 1]).to(dt)
            p.grad = g.clone()
            out[f"{name}.g{j}.{k}"] = g
        opt.step()
        for j, p in enumerate(params, 1):
            out[f"{name}.p{j}.{k}"] = p.detach().clone()
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                out[f"{name}.state.{idx + 1}.{key}"] = v.detach().clone().contiguous()


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    out, meta = {}, {}
    cases = [
        ("sgd_plain", "SGD", {"lr": 0.1}, None),
        ("sgd_momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, None),
        ("sgd_dampening", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, None),
        ("sgd_nesterov", "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}, None),
        ("sgd_wd", "SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, None),
        ("sgd_maximize", "SGD", {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1,
                                 "maximize": True}, None),
        ("sgd_groups", "SGD", {"lr": 0.1, "momentum": 0.9},
         {"lr": 0.01, "nesterov": True, "weight_decay": 0.01}),
        ("adam_default", "Adam", {}, None),
        ("adam_lr", "Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}, None),
        ("adam_wd", "Adam", {"lr": 0.01, "weight_decay": 0.1}, None),
        ("adam_amsgrad", "Adam", {"lr": 0.02, "amsgrad": True}, None),
        ("adam_maximize", "Adam", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.05,
                                   "maximize": True}, None),
        ("adam_groups", "Adam", {"lr": 0.01},
         {"lr": 0.1, "betas": (0.5, 0.9), "amsgrad": True}),
        ("adamw_default", "AdamW", {}, None),
        ("adamw_wd", "AdamW", {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True}, None),
        ("adamw_maximize", "AdamW", {"lr": 0.03, "maximize": True, "eps": 1e-4}, None),
        ("adamw_groups", "AdamW", {"lr": 0.01, "weight_decay": 0.1},
         {"weight_decay": 0.0, "lr": 0.05}),
    ]
    for dtype in DTYPES:
        for name, optim, opts, g2 in cases:
            case(out, meta, f"{name}_{dtype}", optim, dtype, opts, g2)
    meta["torch"] = torch.__version__
    path = os.path.join(out_dir, "cases.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {len(out)} tensors, {len(meta) - 1} cases to {path}")


if __name__ == "__main__":
    main()
