#!/usr/bin/env python3
"""Export the PyTorch models kiln's ONNX import is tested and benchmarked against (issue #5).

Writes tests/data/onnx/<name>.onnx plus, for two batch sizes B, <name>.in.bB.npy and
<name>.out.bB.npy (PyTorch's output for that input). The batch dim is exported as the symbolic
"batch" (dynamic_axes), so one imported graph must serve both batch sizes. Models (eval mode,
seeded): a CNN with BatchNorm, an MLP (the Fashion-MNIST shape), a transformer encoder layer.

    /usr/bin/python3 tools/gen_onnx_models.py      # Debian python3-torch 1.13 + python3-numpy
    /usr/bin/python3 tools/gen_onnx_models.py --bench DIR

--bench writes the benchmark models of `make bench B=onnx` into DIR instead (not committed):
the Fashion-MNIST MLP and LeNet of bench/bench_models.h and ResNet-18 (random weights, 3x224x224,
defined here: torchvision is not packaged), each with a symbolic batch dim.

Running it twice gives the same files (seeded; torch's exporter is deterministic).
"""
import os
import sys

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


def bench_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def bench_lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


def resnet18():
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def export_bench(out):
    os.makedirs(out, exist_ok=True)
    for name, make, shape in (("mlp", bench_mlp, (1, 28, 28)), ("lenet", bench_lenet, (1, 28, 28)),
                              ("resnet18", resnet18, (3, 224, 224))):
        torch.manual_seed(0)
        m = make().eval()
        path = os.path.join(out, name + ".onnx")
        torch.onnx.export(m, torch.randn(1, *shape), path, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)
        print(path)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        export_bench(sys.argv[2])
        return
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
