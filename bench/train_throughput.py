#!/usr/bin/python3
"""The PyTorch baseline of bench/train_throughput.sh: the same training and evaluation as expctl's finetune stage,
written the way a PyTorch user would (torchvision ResNet-18, DataLoader with per-sample transforms), on the same
Fashion-MNIST subset, batch size and thread count. Prints one JSON line with images/second."""
import argparse, gzip, json, time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader, Dataset
import torchvision.transforms as T


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Images(Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    xtr = torch.from_numpy(read_idx(f"{a.dir}/train-images-idx3-ubyte.gz")[: a.train].copy()).unsqueeze(1)
    ytr = read_idx(f"{a.dir}/train-labels-idx1-ubyte.gz")[: a.train]
    xte = torch.from_numpy(read_idx(f"{a.dir}/t10k-images-idx3-ubyte.gz")[: a.test].copy()).unsqueeze(1)
    yte = read_idx(f"{a.dir}/t10k-labels-idx1-ubyte.gz")[: a.test]
    norm = T.Normalize((0.2860,), (0.3530,))
    to_float = T.ConvertImageDtype(torch.float)
    train_tf = T.Compose([T.RandomCrop(28, padding=2), to_float, norm])
    test_tf = T.Compose([to_float, norm])
    train = DataLoader(Images(xtr, ytr, train_tf), batch_size=a.batch, shuffle=True, drop_last=True, num_workers=a.workers)
    test = DataLoader(Images(xte, yte, test_tf), batch_size=512, num_workers=a.workers)

    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # gray input, ImageNet stem (as TS0)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    model.train()
    seen, t0 = 0, time.perf_counter()
    for x, y in train:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        seen += len(y)
    train_ips = seen / (time.perf_counter() - t0)

    model.eval()
    seen, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for x, y in test:
            model(x).argmax(1)
            seen += len(y)
    eval_ips = seen / (time.perf_counter() - t0)
    print(json.dumps({"train_images_per_second": train_ips, "eval_images_per_second": eval_ips,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
