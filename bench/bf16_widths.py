#!/usr/bin/env python3
"""How much the deployed bf16 form gains over the deployed fp32 form as a function of channel widths alone: a
ResNet-18-like network (cifar stem, two basic blocks per stage, random weights, 32x32 input, batch 128) at several
stage widths, each frozen and optimized for inference (torch.jit.optimize_for_inference(torch.jit.freeze(m))) in
fp32 and, as models::to_bf16 does, with its frozen weights rounded to bf16 and a bf16 input. All forms are timed
interleaved in one process (4 rounds of 2 passes each), median ms per image.

usage: bf16_widths.py [threads=2]
"""
import statistics
import sys
import time

import torch
from torch import nn

WIDTHS = {
    "ResNet-18 widths 64, 128, 256, 512": (64, 128, 256, 512),
    "half: 32, 64, 128, 256": (32, 64, 128, 256),
    "multiples of 8: 40, 72, 136, 264": (40, 72, 136, 264),
    "multiples of 16: 48, 80, 144, 272": (48, 80, 144, 272),
}


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def network(widths):
    layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for i, c in enumerate(widths):
        layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers).eval()


def to_bf16(frozen):
    """Every fp32 tensor constant of the frozen graph rounded to bf16 (what models::to_bf16 does in C++)."""
    g = frozen.graph
    for node in list(g.nodes()):
        if node.kind() == "prim::Constant" and node.output().type().kind() == "TensorType":
            t = node.output().toIValue()
            if t.dtype == torch.float32:
                with g.insert_point_guard(node):
                    c = g.insertConstant(t.to(torch.bfloat16))
                node.output().replaceAllUsesWith(c)
                node.destroy()
    return frozen


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    forms = {}
    for name, widths in WIDTHS.items():
        m = network(widths)
        fp32 = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(m)))
        bf16 = torch.jit.optimize_for_inference(to_bf16(torch.jit.freeze(torch.jit.script(m))))
        forms[(name, "fp32")] = (fp32, torch.float32)
        forms[(name, "bf16")] = (bf16, torch.bfloat16)
    x = torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times = {k: [] for k in forms}
    with torch.inference_mode():
        for model, dtype in forms.values():
            for _ in range(2):
                model(x.to(dtype))
        for _ in range(4):
            for k, (model, dtype) in forms.items():
                xx = x.to(dtype)
                for _ in range(2):
                    t = time.perf_counter()
                    model(xx)
                    times[k].append((time.perf_counter() - t) * 1000 / x.shape[0])
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, ms per image (median):")
    for name in WIDTHS:
        f, b = statistics.median(times[(name, "fp32")]), statistics.median(times[(name, "bf16")])
        print(f"  {name}: fp32 {f:.3f}, bf16 {b:.3f}, bf16 over fp32 x{f / b:.2f}")


if __name__ == "__main__":
    main()
