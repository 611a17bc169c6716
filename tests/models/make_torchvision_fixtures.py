#!/usr/bin/env python3
"""Writes the torchvision-side fixtures of expctl's model interop tests into OUT_DIR.

usage: make_torchvision_fixtures.py OUT_DIR        fixtures for tests/models/test_interop.cpp
       make_torchvision_fixtures.py --keys DEPTH    prints torchvision's state-dict keys and shapes (the committed
                                                    tests/models/torchvision_resnet{18,34}_keys.txt came from this)
Everything is random but seeded, so runs are repeatable.
"""
import sys

import torch
import torch.nn as nn
import torchvision


def randomise_bn(model, gen):
    # Default BN statistics (mean 0, var 1, weight 1, bias 0) would hide a mix-up of BN tensors.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)


def cifar_stem(model):
    # The same adaptation expctl's `stem: cifar` makes: 3x3 stride-1 conv1, no max-pool.
    model.conv1 = nn.Conv2d(model.conv1.in_channels, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def main():
    if sys.argv[1] == "--keys":
        depth = int(sys.argv[2])
        model = getattr(torchvision.models, f"resnet{depth}")()
        for k, v in model.state_dict().items():
            print(k, "x".join(str(s) for s in v.shape) or "scalar")
        return
    out = sys.argv[1]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    tv = torchvision.models.resnet18(num_classes=10)
    randomise_bn(tv, gen)
    tv.eval()
    x224 = torch.randn(2, 3, 64, 64, generator=gen)
    sd = tv.state_dict()
    torch.save(sd, f"{out}/tv_imagenet.pth")  # an OrderedDict, zip format: what torchvision ships
    with torch.no_grad():
        torch.save({"x": x224, "logits": tv(x224)}, f"{out}/io_imagenet.pth")
    # Legacy (pre-1.6) format, without num_batches_tracked like old model-zoo files.
    old = type(sd)((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    torch.save(old, f"{out}/tv_imagenet_legacy.pth", _use_new_zipfile_serialization=False)

    # The same ImageNet weights adapted in Python: centre 3x3 of conv1 (what adapt_pretrained does).
    x32 = torch.randn(2, 3, 32, 32, generator=gen)
    adapted = cifar_stem(torchvision.models.resnet18(num_classes=10))
    asd = dict(sd)
    asd["conv1.weight"] = sd["conv1.weight"][:, :, 2:5, 2:5].contiguous()
    adapted.load_state_dict(asd)
    adapted.eval()
    with torch.no_grad():
        torch.save({"x": x32, "logits": adapted(x32)}, f"{out}/io_adapted_cifar.pth")

    # A model trained with the cifar stem patched in Python.
    cf = cifar_stem(torchvision.models.resnet18(num_classes=10))
    randomise_bn(cf, gen)
    cf.eval()
    torch.save(cf.state_dict(), f"{out}/tv_cifar.pth")
    with torch.no_grad():
        torch.save({"x": x32, "logits": cf(x32)}, f"{out}/io_cifar.pth")

    # Foreign content: a whole pickled module instead of a state dict.
    torch.save(nn.Linear(2, 2), f"{out}/whole_module.pth")


if __name__ == "__main__":
    main()
