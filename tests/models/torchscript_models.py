#!/usr/bin/env python3
"""Python's side of the bring-your-own-model tests (tests/models/torchscript_import_test.cpp).

usage: torchscript_models.py make OUT_DIR [NAME...]
                                             traces each model (default: all) with torch.jit.trace (eval mode,
                                             randomised batch-norm statistics, 10 classes, 3x32x32 inputs) into
                                             OUT_DIR/ts_<name>.pt, with OUT_DIR/io_<name>.pth = {"x", "logits"}: the
                                             Python model's logits for a seeded batch; lstm (a CNN + LSTM) and
                                             scripted (OUT_DIR/scripted_hand.pt, torch.jit.script) expctl must refuse
       torchscript_models.py check DIR       loads each pruned export DIR/<name>_pruned.torchscript.pt written by the
                                             test with torch.jit.load and compares its logits with the ones expctl
                                             saved in DIR/<name>_pruned.io.pth; prints one line per model
       torchscript_models.py trace NAME OUT [SEED]
                                             traces one model (resnet18, mobilenet_v2, vgg11_bn, densenet121, hand;
                                             hand1: the hand CNN for 1-channel 28x28 images; weights from SEED,
                                             default 0) to OUT (bench/torchscript_import.sh, the TS4 demo)
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from make_torchvision_fixtures import randomise_bn  # the same randomised BN statistics

NAMES = ["resnet18", "mobilenet_v2", "vgg11_bn", "densenet121", "hand"]


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class HandCNN(nn.Module):
    """A CNN no registry has: two branches concatenated, a squeeze-excitation, a depthwise residual, functional
    pooling and a view into the classifier; every activation and pooling kind expctl's graph has."""

    def __init__(self, in_channels=3, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.b1 = nn.Conv2d(16, 8, 3, padding=1)
        self.b2 = nn.Conv2d(16, 8, 1)
        self.bn = nn.BatchNorm2d(16)
        self.fuse = nn.Conv2d(16, 24, 1, bias=False)
        self.se = SqueezeExcitation(24, 8)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.proj = nn.Conv2d(24, 24, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(24 * 4 * 4, classes)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([torch.relu(self.b1(x)), F.relu6(self.b2(x))], 1)
        y = F.hardsigmoid(self.bn(y))
        y = self.se(self.fuse(y))
        y = y + self.proj(self.dw(y))
        y = F.max_pool2d(y, 2)
        y = F.adaptive_max_pool2d(y, 4)
        return self.fc(self.drop(y.view(y.size(0), -1)))


class ConvLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x).flatten(2).transpose(1, 2)
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def build(name):
    if name == "hand":
        return HandCNN(), 3, 32
    if name == "hand1":
        return HandCNN(in_channels=1), 1, 28
    if name == "lstm":
        return ConvLSTM(), 3, 32
    model = getattr(torchvision.models, name)(num_classes=10)
    if name == "vgg11_bn":
        # torchvision's 4096-wide classifier on a 7x7 pool is 120 M parameters: a narrower one keeps the test file
        # small while keeping the structure (avgpool 7x7, flatten, linear, relu, dropout, linear).
        model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return model, 3, 32


def trace(name, out, gen):
    model, channels, size = build(name)
    randomise_bn(model, gen)
    model.eval()
    with torch.no_grad():
        torch.jit.trace(model, torch.randn(1, channels, size, size, generator=gen)).save(out)
    return model, channels, size


def make(out, names):
    for name in names:
        seed = (NAMES + ["lstm", "scripted"]).index(name)  # each file the same, whichever others are made with it
        torch.manual_seed(seed)
        if name == "scripted":
            torch.jit.script(HandCNN().eval()).save(f"{out}/scripted_hand.pt")  # control flow: expctl asks for a trace
            continue
        gen = torch.Generator().manual_seed(seed + 100)
        model, channels, size = trace(name, f"{out}/ts_{name}.pt", gen)
        x = torch.randn(2, channels, size, size, generator=gen)
        with torch.no_grad():
            torch.save({"x": x, "logits": model(x)}, f"{out}/io_{name}.pth")


def check(d):
    worst = 0.0
    for name in NAMES:
        exported = torch.jit.load(f"{d}/{name}_pruned.torchscript.pt")
        io = torch.load(f"{d}/{name}_pruned.io.pth")
        with torch.no_grad():
            got = exported(io["x"])
        diff = ((got - io["logits"]).abs().max() / io["logits"].abs().max().clamp(min=1)).item()
        print(f"{name}: pruned export loads in Python, max relative logit difference {diff:.2e}")
        worst = max(worst, diff)
    if worst > 1e-5:
        sys.exit(f"logits differ by {worst}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3:] or NAMES + ["lstm", "scripted"])
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "trace":
        seed = int(sys.argv[4]) if len(sys.argv) == 5 else 0
        torch.manual_seed(seed)
        trace(sys.argv[2], sys.argv[3], torch.Generator().manual_seed(seed + 1))
    else:
        sys.exit(__doc__)
