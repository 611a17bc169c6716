#!/usr/bin/python3
"""The PyTorch baseline of bench/train_throughput.sh: the same training and evaluation as expctl's finetune stage,
written the way a PyTorch user would (torchvision ResNet-18, DataLoader with per-sample transforms), on the same
data, batch size and thread count. Two set-ups:
  default   Fashion-MNIST (Debian's IDX files), gray input, ImageNet stem, crop padding 2 (as TS0)
  --cifar   a CIFAR-10 binary folder (cifar-10-batches-bin), cifar stem, crop padding 4 + flip (as TS1)
It trains as expctl does: --precision (auto: bf16 autocast on CUDA, fp32 on a CPU; bf16: autocast on either) and
--channels-last (default 1); on CUDA with cuDNN benchmark and pinned memory.
Throughput is that of the last of --epochs epochs (the first one pays for cuDNN's algorithm search).
Prints one JSON line with images/second and the training epoch's health as expctl records it (steps, CPU seconds,
system-time share and page faults of the whole process)."""
import argparse, contextlib, gzip, json, os, resource, time

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


def read_cifar(folder, train):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    raw = np.concatenate([np.fromfile(os.path.join(folder, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


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
    ap.add_argument("--cifar", help="a cifar-10-batches-bin folder: CIFAR-10 set-up instead of Fashion-MNIST")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--channels-last", type=int, choices=[0, 1], default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if a.cifar:
        xtr, ytr = read_cifar(a.cifar, True)
        xte, yte = read_cifar(a.cifar, False)
        xtr, ytr, xte, yte = torch.from_numpy(xtr[: a.train].copy()), ytr[: a.train], torch.from_numpy(xte[: a.test].copy()), yte[: a.test]
        norm = T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        crop = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    else:
        xtr = torch.from_numpy(read_idx(f"{a.dir}/train-images-idx3-ubyte.gz")[: a.train].copy()).unsqueeze(1)
        ytr = read_idx(f"{a.dir}/train-labels-idx1-ubyte.gz")[: a.train]
        xte = torch.from_numpy(read_idx(f"{a.dir}/t10k-images-idx3-ubyte.gz")[: a.test].copy()).unsqueeze(1)
        yte = read_idx(f"{a.dir}/t10k-labels-idx1-ubyte.gz")[: a.test]
        norm = T.Normalize((0.2860,), (0.3530,))
        crop = [T.RandomCrop(28, padding=2)]
    to_float = T.ConvertImageDtype(torch.float)
    train_tf = T.Compose(crop + [to_float, norm])
    test_tf = T.Compose([to_float, norm])
    kw = dict(num_workers=a.workers, pin_memory=cuda, persistent_workers=a.workers > 0)
    train = DataLoader(Images(xtr, ytr, train_tf), batch_size=a.batch, shuffle=True, drop_last=True, **kw)
    test = DataLoader(Images(xte, yte, test_tf), batch_size=512, **kw)

    model = torchvision.models.resnet18(num_classes=10)
    if a.cifar:  # cifar stem (as TS1): 3x3 stride-1 conv1, no max-pool
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:  # gray input, ImageNet stem (as TS0)
        model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model = model.to(dev)
    # As expctl's precision/channels_last: auto = bf16 autocast on CUDA (and on CPUs with native bf16, which the
    # shell script decides and passes as --precision), fp32 elsewhere; channels_last on by default.
    bf16 = a.precision == "bf16" or (a.precision == "auto" and cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(a.epochs):
        model.train()
        seen, t0, u0 = 0, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        for x, y in train:
            x = x.to(dev, non_blocking=True).contiguous(memory_format=mf)
            y = y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with amp():
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
        sync()
        train_ips = seen / (time.perf_counter() - t0)
        u1 = resource.getrusage(resource.RUSAGE_SELF)  # the whole process, as expctl's epoch health figures
        cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
        health = {"steps": len(train), "cpu_seconds": cpu,
                  "system_time_share": (u1.ru_stime - u0.ru_stime) / cpu if cpu > 0 else 0.0,
                  "page_faults": (u1.ru_minflt - u0.ru_minflt) + (u1.ru_majflt - u0.ru_majflt)}

        model.eval()
        seen, t0 = 0, time.perf_counter()
        with torch.inference_mode():
            for x, y in test:
                model(x.to(dev, non_blocking=True).contiguous(memory_format=mf)).argmax(1).cpu()
                seen += len(y)
        sync()
        eval_ips = seen / (time.perf_counter() - t0)
    print(json.dumps({"train_images_per_second": train_ips, "eval_images_per_second": eval_ips, **health,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev),
                      "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": bool(a.channels_last)}))


if __name__ == "__main__":
    main()
