#!/usr/bin/env python3
"""Train examples/train_digits.lua's models in PyTorch and export them to
safetensors files that lunet loads as they are, with a fixture of inputs
and PyTorch's logits: tests/spec/interop_spec.lua checks that lunet's
model, given PyTorch's weights, computes the same logits.

Needs torch and safetensors (CPU wheels are enough):
    python3 -m venv /tmp/io-venv
    /tmp/io-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/io-venv/bin/pip install safetensors
Usage: /tmp/io-venv/bin/python scripts/export_torch_digits.py [output_dir]
(default tests/fixtures/interop). For each model (cnn, mlp) it writes:

digits_MODEL.safetensors -- the state dict of the trained model in eval
    form (weights, BatchNorm's running_mean, running_var and
    num_batches_tracked), keys exactly as lunet's model names them;
    metadata "lunet.state_dict_versions" holds PyTorch's module versions
    as lunet.save writes them ({"":1,"1.2":2,...}), so the file is what
    lunet.save would have written. Load it in lunet with
        model:load_state_dict(assert(lunet.load(path)))
digits_MODEL_logits.safetensors -- "input" (32 held-out images, float32
    (32, 1, 8, 8)), "logits" (PyTorch's eval-mode output, float32 (32, 10)),
    "label" (int64, 1-based class indices as lunet's); metadata "keys": the
    state dict's keys in PyTorch's order, space-separated; "accuracy":
    PyTorch's accuracy on its held-out images.

Key mapping, in one place: lunet's nn.Sequential names its children
"1", "2", ... (Lua's 1-based indexing) where PyTorch's names them "0",
"1", ... . The PyTorch models below are built from OrderedDicts named
"1", "2", ..., so their state-dict keys ("1.1.weight", "1.2.running_mean",
..., "8.weight") are lunet's, with no translation. The layouts need none
either: Conv2d weights are (out, in, kh, kw) and Linear weights (out, in)
in both, and Flatten flattens (C, H, W) in the same order.
"""
import gzip
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

DIGITS = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
FIXTURE_IMAGES = 32


def seq(*modules):
    """nn.Sequential with lunet's child names "1", "2", ..."""
    return nn.Sequential(OrderedDict((str(i + 1), m) for i, m in enumerate(modules)))


def conv_block(c_in, c_out):
    return seq(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def linear_block(n_in, n_out):
    return seq(nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU())


def build_model(kind):
    """M.build_model of examples/train_digits.lua, module for module."""
    if kind == "cnn":
        return seq(conv_block(1, 16), conv_block(16, 16), nn.MaxPool2d(2),
                   conv_block(16, 32), nn.MaxPool2d(2),
                   nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 2 * 2, 10))
    return seq(nn.Flatten(), linear_block(64, 128), linear_block(128, 64),
               nn.Dropout(0.25), nn.Linear(64, 10))


def load_digits():
    """images (1797, 1, 8, 8) float32 in [0, 1] and digits (1797) int64,
    read as lunet.data.digits reads them."""
    with gzip.open(DIGITS, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :64] / 16).reshape(-1, 1, 8, 8)
    return images, torch.from_numpy(table[:, 64].astype(np.int64))


def train(model, x, y, epochs=5, batch_size=32):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def versions(model):
    """PyTorch's module versions as lunet keeps them: prefix -> version."""
    meta = model.state_dict()._metadata
    return json.dumps({k: v["version"] for k, v in meta.items() if "version" in v},
                      separators=(",", ":"))


def save(tensors, path, metadata):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/interop"
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    images, digits = load_digits()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    held_out, train_idx = perm[:360], perm[360:]
    for kind in ("cnn", "mlp"):
        model = build_model(kind)
        train(model, images[train_idx], digits[train_idx])
        model.eval()
        with torch.no_grad():
            accuracy = (model(images[held_out]).argmax(1) == digits[held_out]).float().mean()
            x = images[held_out[:FIXTURE_IMAGES]]
            logits = model(x)
        sd = model.state_dict()
        save(sd, os.path.join(outdir, f"digits_{kind}.safetensors"),
             {"lunet.state_dict_versions": versions(model)})
        save({"input": x, "logits": logits, "label": digits[held_out[:FIXTURE_IMAGES]] + 1},
             os.path.join(outdir, f"digits_{kind}_logits.safetensors"),
             {"keys": " ".join(sd.keys()), "accuracy": f"{accuracy.item():.4f}"})


if __name__ == "__main__":
    main()
