#!/usr/bin/python3
"""The PyTorch baseline of bench/wanda_pass.sh: Wanda's sequential unstructured pass (sparsity 0.5, each row's
lowest |W| * ||X||_2 removed, every Conv2d/Linear but conv1 in forward order, each calibrated on the model with the
earlier layers already pruned), written the way a PyTorch user would: torchvision ResNet-18, the calibration
inputs of each block kept (as the Wanda reference code does for transformer layers), a forward pre-hook per layer,
F.unfold for a convolution's input norms, a stable sort per row. Same model shape, images, batch and threads as
build/expctl_bench_wanda_pass. Prints one JSON line."""
import argparse, copy, json, time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class Stop(Exception):
    pass


def layers_of(segment):
    return [m for m in segment.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def input_sq_norms(layer, x):
    x = x.double()
    if isinstance(layer, nn.Linear):
        return x.square().reshape(-1, x.shape[-1]).sum(0)
    cols = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)  # [N, C*kh*kw, L]
    return cols.square().sum((0, 2))


def prune_pass(model, batches, sparsity=0.5, exclude=("conv1",)):
    segments = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool), *model.layer1, *model.layer2,
                *model.layer3, *model.layer4, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)]
    names = {m: n for n, m in model.named_modules()}
    inputs = list(batches)
    for i, segment in enumerate(segments):
        for layer in layers_of(segment):
            if names[layer] in exclude:
                continue
            acc = []

            def hook(module, args):
                acc.append(input_sq_norms(module, args[0]))
                raise Stop

            handle = layer.register_forward_pre_hook(hook)
            for x in inputs:
                try:
                    segment(x)
                except Stop:
                    pass
            handle.remove()
            norms = torch.stack(acc).sum(0)
            w = layer.weight.data
            score = w.double().abs().reshape(w.shape[0], -1) * norms.sqrt().reshape(1, -1)
            k = int(sparsity * score.shape[1] + 0.5)
            order = torch.sort(score, dim=1, stable=True)[1][:, :k]
            mask = torch.ones_like(score, dtype=torch.bool).scatter_(1, order, False)
            w.mul_(mask.reshape(w.shape))
        if i + 1 < len(segments):
            inputs = [segment(x) for x in inputs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["ts0", "ts1"], default="ts0")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10)
    if a.model == "ts1":
        base.conv1, base.maxpool, side, chans = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity(), 32, 3
    else:
        base.conv1, side, chans = nn.Conv2d(1, 64, 7, 2, 3, bias=False), 28, 1
    base.eval()
    images = torch.randn(a.images, chans, side, side)
    batches = images.split(a.batch)
    seconds = []
    for _ in range(a.repeats):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        with torch.no_grad():
            prune_pass(model, batches)
        seconds.append(time.perf_counter() - t0)
    seconds.sort()
    print(json.dumps({"seconds": seconds[len(seconds) // 2], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
