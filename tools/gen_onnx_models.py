#!/usr/bin/env python3
"""Export the PyTorch models kiln's ONNX import is tested against (issue #5).

Writes tests/data/onnx/<name>.onnx plus, for two batch sizes B, <name>.in.bB.npy and
<name>.out.bB.npy (PyTorch's output for that input). The batch dim is exported as the symbolic
"batch" (dynamic_axes), so one imported graph must serve both batch sizes. Models (eval mode,
seeded): a CNN with BatchNorm, an MLP (the Fashion-MNIST shape), a transformer encoder layer.

    /usr/bin/python3 tools/gen_onnx_models.py      # Debian python3-torch 1.13 + python3-numpy

Running it twice gives the same files (seeded; torch's exporter is deterministic).
"""
import os

import numpy as np
import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "onnx")
OPSET = 13


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(),
                                  nn.Linear(32, 10), nn.LogSoftmax(dim=1))

    def forward(self, x):
        return self.head(self.features(x))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32),
                         nn.ReLU(), nn.Linear(32, 10))


def encoder():
    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                      batch_first=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    models = [("cnn_bn", CNN, (1, 28, 28)), ("mlp", mlp, (1, 28, 28)),
              ("encoder", encoder, (7, 32))]
    for name, make, shape in models:
        torch.manual_seed(0)
        m = make().eval()
        for mod in m.modules():  # non-trivial BatchNorm statistics
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, *shape)
        path = os.path.join(OUT, name + ".onnx")
        torch.onnx.export(m, x, path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)
        for b in (2, 5):
            xb = torch.randn(b, *shape)
            with torch.no_grad():
                y = m(xb)
            np.save(os.path.join(OUT, "%s.in.b%d.npy" % (name, b)), xb.numpy())
            np.save(os.path.join(OUT, "%s.out.b%d.npy" % (name, b)), y.numpy())
        print(path)


if __name__ == "__main__":
    main()
