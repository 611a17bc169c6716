#!/usr/bin/env python3
"""Opens expctl checkpoints with plain torch.load and checks them against torchvision.

usage: check_expctl_checkpoints.py CHECKPOINT IO_FILE [CHECKPOINT IO_FILE ...]
For each pair: the checkpoint must be a plain dict (weights_only=True must be enough on torch 2.x), its "arch" must describe a
torchvision ResNet that, built at the (possibly pruned) widths, loads "state_dict" strictly and reproduces the
logits expctl wrote into IO_FILE ({"x", "logits"}) within 1e-5. Beside each CHECKPOINT (X.pt), expctl's TorchScript
export X.torchscript.pt must load with torch.jit.load alone, hold the same state dict, and give the same logits.
Exit status 0 when every pair passes.
"""
import sys

import torch
import torch.nn as nn
import torchvision


def build(arch):
    """torchvision's resnet18/34 with the stem and widths of `arch` (a pruned model is the same graph, thinner)."""
    model = getattr(torchvision.models, f"resnet{arch['depth']}")(num_classes=arch["num_classes"])
    sw, bw, cin = arch["stage_widths"], arch["block_widths"], arch["in_channels"]
    if arch["stem"] == "cifar":
        model.conv1 = nn.Conv2d(cin, sw[0], 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(cin, sw[0], 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(sw[0])
    i, width = 0, sw[0]
    for s, layer in enumerate([model.layer1, model.layer2, model.layer3, model.layer4]):
        for block in layer:
            stride = block.conv1.stride
            block.conv1 = nn.Conv2d(width, bw[i], 3, stride, 1, bias=False)
            block.bn1 = nn.BatchNorm2d(bw[i])
            block.conv2 = nn.Conv2d(bw[i], sw[s], 3, 1, 1, bias=False)
            block.bn2 = nn.BatchNorm2d(sw[s])
            if block.downsample is not None:
                block.downsample = nn.Sequential(nn.Conv2d(width, sw[s], 1, stride, bias=False),
                                                 nn.BatchNorm2d(sw[s]))
            width = sw[s]
            i += 1
    model.fc = nn.Linear(sw[3], arch["num_classes"])
    return model


def load(path):
    # torch >= 2.6 loads with weights_only=True by default, so the files must pass it; 1.13's weights-only
    # unpickler predates BINFLOAT (floats in "meta"), so plain torch.load there.
    if int(torch.__version__.split(".")[0]) >= 2:
        return torch.load(path, weights_only=True)
    return torch.load(path)


def check(ckpt_path, io_path):
    ckpt = load(ckpt_path)
    assert type(ckpt) is dict, f"top level is {type(ckpt)}"
    for key in ("arch", "state_dict", "meta", "masks"):
        assert key in ckpt, f"no '{key}'"
    arch, meta = ckpt["arch"], ckpt["meta"]
    assert isinstance(meta, dict)
    for name, mask in ckpt["masks"].items():
        assert mask.dtype == torch.bool and mask.shape == ckpt["state_dict"][name].shape, name
    model = build(arch)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval()
    io = torch.load(io_path, weights_only=True)  # no floats outside tensors
    with torch.no_grad():
        logits = model(io["x"])
    diff = (logits - io["logits"]).abs().max().item()
    print(f"{ckpt_path}: {arch['name']} widths {arch['stage_widths']} meta {meta} max|diff| {diff:.3g}")

    ts_path = ckpt_path[: -len(".pt")] + ".torchscript.pt"
    scripted = torch.jit.load(ts_path)
    sd = scripted.state_dict()
    assert list(sd.keys()) == list(ckpt["state_dict"].keys()), f"{ts_path}: state dict keys differ"
    for k, t in sd.items():
        assert torch.equal(t, ckpt["state_dict"][k]), f"{ts_path}: {k} differs"
    with torch.no_grad():
        ts_diff = (scripted(io["x"]) - io["logits"]).abs().max().item()
    print(f"{ts_path}: torch.jit.load, max|diff| {ts_diff:.3g}")
    return diff <= 1e-5 and ts_diff <= 1e-5


def main():
    args = sys.argv[1:]
    ok = all([check(args[i], args[i + 1]) for i in range(0, len(args), 2)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
