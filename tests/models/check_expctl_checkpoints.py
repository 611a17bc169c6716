#!/usr/bin/env python3
"""Opens expctl checkpoints with plain torch.load and checks them against torchvision.

usage: check_expctl_checkpoints.py CHECKPOINT IO_FILE [CHECKPOINT IO_FILE ...]
For each pair: the checkpoint must be a plain dict (weights_only=True must be enough on torch 2.x), its "arch" must describe a
torchvision ResNet-18/34 that, built at the (possibly pruned) widths of its state dict, loads "state_dict" strictly and reproduces the
logits expctl wrote into IO_FILE ({"x", "logits"}) within 1e-5. Beside each CHECKPOINT (X.pt), expctl's TorchScript
export X.torchscript.pt must load with torch.jit.load alone, hold the same state dict, and give the same logits.
Exit status 0 when every pair passes.
"""
import sys

import torch
import torch.nn as nn
import torchvision


def build(arch, state_dict):
    """torchvision's resnet18/34 at the widths of `state_dict` (a pruned model is the same graph, thinner).

    `arch` is the checkpoint's {"family": "graph", "name": "resnet18", "graph": [...]}: the name gives the depth,
    conv1's kernel the stem, the weights' shapes every width."""
    assert arch["family"] == "graph" and arch["name"] in ("resnet18", "resnet34"), arch.get("name")
    sd = state_dict
    num_classes, cin = sd["fc.weight"].shape[0], sd["conv1.weight"].shape[1]
    model = getattr(torchvision.models, arch["name"])(num_classes=num_classes)
    w0 = sd["conv1.weight"].shape[0]
    if sd["conv1.weight"].shape[2] == 3:
        model.conv1 = nn.Conv2d(cin, w0, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(cin, w0, 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(w0)
    width = w0
    for s, layer in enumerate([model.layer1, model.layer2, model.layer3, model.layer4]):
        for b, block in enumerate(layer):
            p = f"layer{s + 1}.{b}."
            inner, out = sd[p + "conv1.weight"].shape[0], sd[p + "conv2.weight"].shape[0]
            stride = block.conv1.stride
            block.conv1 = nn.Conv2d(width, inner, 3, stride, 1, bias=False)
            block.bn1 = nn.BatchNorm2d(inner)
            block.conv2 = nn.Conv2d(inner, out, 3, 1, 1, bias=False)
            block.bn2 = nn.BatchNorm2d(out)
            if block.downsample is not None:
                block.downsample = nn.Sequential(nn.Conv2d(width, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            width = out
    model.fc = nn.Linear(width, num_classes)
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
    model = build(arch, ckpt["state_dict"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval()
    io = torch.load(io_path, weights_only=True)  # no floats outside tensors
    with torch.no_grad():
        logits = model(io["x"])
    diff = (logits - io["logits"]).abs().max().item()
    widths = [ckpt["state_dict"][f"layer{s}.0.conv2.weight"].shape[0] for s in range(1, 5)]
    print(f"{ckpt_path}: {arch['name']} widths {widths} meta {meta} max|diff| {diff:.3g}")

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
