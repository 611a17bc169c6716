#!/usr/bin/env python3
"""torchvision's side of the built-in model interop tests (tests/models/zoo_test.cpp).

usage: zoo_interop.py make OUT_DIR     for each model: tv_<arch>.pth (a torchvision state dict with randomised
                                       batch-norm statistics) and io_<arch>.pth ({"x", "logits"}: torchvision's
                                       logits for a seeded input)
       zoo_interop.py check DIR        for each expctl checkpoint DIR/<arch>.pt (dense, written by the test):
                                       loads its state dict into torchvision's model and its TorchScript export
                                       DIR/<arch>.torchscript.pt with torch.jit.load, and compares both with the
                                       logits expctl saved in DIR/<arch>.io.pth; then the pruned model's
                                       checkpoint DIR/<arch>_pruned.pt against its export (tensors, logits);
                                       prints one line per model
"""
import sys

import torch
import torchvision

from make_torchvision_fixtures import randomise_bn  # the same randomised BN statistics

ARCHS = ["vgg11_bn", "mobilenet_v2", "densenet121", "resnet50"]
SIZE = 64  # big enough for every network's down-sampling (DenseNet and VGG reach 2x2)


def make(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    for arch in ARCHS:
        model = getattr(torchvision.models, arch)(num_classes=10)
        randomise_bn(model, gen)
        model.eval()
        x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
        torch.save(model.state_dict(), f"{out}/tv_{arch}.pth")
        with torch.no_grad():
            torch.save({"x": x, "logits": model(x)}, f"{out}/io_{arch}.pth")


def check(d):
    worst = 0.0
    for arch in ARCHS:
        ckpt = torch.load(f"{d}/{arch}.pt")
        assert ckpt["arch"]["family"] == "graph" and ckpt["arch"]["name"] == arch, ckpt["arch"]["name"]
        io = torch.load(f"{d}/{arch}.io.pth")
        model = getattr(torchvision.models, arch)(num_classes=io["logits"].shape[1])
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        scripted = torch.jit.load(f"{d}/{arch}.torchscript.pt")
        # Relative to the logits' size: random weights with random BN statistics give logits in the hundreds for
        # the deeper networks, where float32 summation order alone moves the 7th significant digit.
        scale = max(1.0, io["logits"].abs().max().item())
        with torch.no_grad():
            a = (model(io["x"]) - io["logits"]).abs().max().item() / scale
            b = (scripted(io["x"]) - io["logits"]).abs().max().item() / scale
        # The same model with half of every channel group removed: no torchvision class has its widths, so the
        # checkpoint's state dict must match its TorchScript export's key for key and shape for shape.
        pruned = torch.load(f"{d}/{arch}_pruned.pt")
        pruned_io = torch.load(f"{d}/{arch}_pruned.io.pth")
        pruned_scripted = torch.jit.load(f"{d}/{arch}_pruned.torchscript.pt")
        exported = pruned_scripted.state_dict()
        assert set(exported) == set(pruned["state_dict"]), arch
        for k, v in pruned["state_dict"].items():
            assert torch.equal(exported[k], v), (arch, k)
        pruned_scale = max(1.0, pruned_io["logits"].abs().max().item())
        with torch.no_grad():
            c = (pruned_scripted(pruned_io["x"]) - pruned_io["logits"]).abs().max().item() / pruned_scale
        # The deployed form (runner/models/deployment.h): frozen, batch norms folded; PyTorch's own
        # optimize_for_inference applies to it as loaded.
        deployed = torch.jit.load(f"{d}/{arch}_pruned.deployed.pt")
        # DenseNet's batch norms read concatenations, not convs: they stay (tests/models/deployment_test.cpp).
        if arch != "densenet121":
            assert "aten::batch_norm" not in str(deployed.graph), f"{arch}: a batch norm is left in the deployed graph"
        with torch.no_grad():
            e = (deployed(pruned_io["x"]) - pruned_io["logits"]).abs().max().item() / pruned_scale
        optimized = torch.jit.optimize_for_inference(deployed)  # rewrites `deployed` in place
        try:
            with torch.no_grad():
                f = (optimized(pruned_io["x"]) - pruned_io["logits"]).abs().max().item() / pruned_scale
        except RuntimeError as err:
            # oneDNN refuses VGG's 7x7 adaptive pooling of the 2x2 map a 64x64 image leaves (an output size that
            # does not divide the input); expctl then times the frozen form (runner/models/deployment.h).
            assert arch == "vgg11_bn" and "divisible" in str(err), (arch, err)
            f = 0.0
        print(f"{arch} (logits up to {scale:.3g}): relative difference torchvision {a:.3g}, torchscript {b:.3g}, "
              f"pruned torchscript {c:.3g}, deployed {e:.3g}, deployed and optimized {f:.3g}")
        # Folding a batch norm into its conv changes the float32 rounding, not the function.
        worst = max(worst, a, b, c, e / 10, f / 10)
    if worst > 1e-5:
        sys.exit(f"logits differ by {worst} (relative)")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
