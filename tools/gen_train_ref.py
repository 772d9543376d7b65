#!/usr/bin/env python3
"""Expected training trajectories for kiln's llm.c-style training test (tests/test_train.c).

Builds the Fashion-MNIST example's two models in PyTorch (Debian python3-torch, run with
/usr/bin/python3), gives every parameter deterministic initial values from a formula that the C
test reproduces exactly (so no weights need storing), trains 10 steps on deterministic synthetic
batches with SGD (momentum 0.9) and with AdamW, and writes to tests/golden/train_ref.safetensors:
  <model>.<optim>.losses   (10,) f32   loss before each step
  <model>.<optim>.<param>  final parameters (LeNet: all; MLP: every 7th element, flattened)
Formulas (mirror them in C):
  param k (state_dict order, 0-based), element i: bound_k * sin(0.7 * i + 1.3 * k + 0.1)
  bound_k = 1 / sqrt(fan_in) of its layer (fan_in = in_features or in_ch * kh * kw)
  batch b (0-based), sample n, pixel p: x = ((n * 131 + p * 17 + b * 7) % 256) as u8, then
  x_f32 = (x / 255 - 0.2860) / 0.3530 ; label = (n * 7 + b * 3) % 10
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn

STEPS, BATCH = 10, 64
MEAN, STD = 0.2860, 0.3530


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def init(model):
    with torch.no_grad():
        mods = {n: m for n, m in model.named_modules()}
        for k, (name, p) in enumerate(model.state_dict().items()):
            layer = mods[name.rsplit(".", 1)[0]]
            w = layer.weight
            fan_in = w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)
            bound = 1.0 / math.sqrt(fan_in)
            i = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((bound * torch.sin(0.7 * i + 1.3 * k + 0.1)).reshape(p.shape).float())


def batch(b, image):
    n = torch.arange(BATCH).reshape(-1, 1)
    p = torch.arange(784).reshape(1, -1)
    x = ((n * 131 + p * 17 + b * 7) % 256).to(torch.uint8).float()
    x = (x / 255.0 - MEAN) / STD
    x = x.reshape(BATCH, 1, 28, 28) if image else x.reshape(BATCH, 784)
    y = (torch.arange(BATCH) * 7 + b * 3) % 10
    return x, y


def run(model_fn, image, opt_name):
    torch.manual_seed(0)
    model = model_fn()
    init(model)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for b in range(STEPS):
        x, y = batch(b, image)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses, model.state_dict()


def write_safetensors(path, tensors, meta):
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.set_num_threads(1)
    out = {}
    for mname, fn, image in (("mlp", mlp, False), ("lenet", lenet, True)):
        for oname in ("sgd", "adamw"):
            losses, sd = run(fn, image, oname)
            out[f"{mname}.{oname}.losses"] = torch.tensor(losses, dtype=torch.float32)
            for pname, p in sd.items():
                flat = p.reshape(-1).float()
                out[f"{mname}.{oname}.{pname}"] = flat[::7].clone() if mname == "mlp" else p.float()
            print(mname, oname, " ".join(f"{v:.5f}" for v in losses))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "golden", "train_ref.safetensors")
    write_safetensors(path, out, {"generator": "tools/gen_train_ref.py", "torch": torch.__version__,
                                  "steps": str(STEPS), "batch": str(BATCH)})
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    sys.exit(main())
