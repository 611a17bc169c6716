#!/usr/bin/env python3
"""Writes Debian's Fashion-MNIST as an image folder in torchvision's layout, for the TS3 demo:

    python3 scripts/fashion_mnist_png.py downloaded_datasets/FashionMNIST-png [--per-class N]

OUT/train/<class>/<index>.png and OUT/val/<class>/<index>.png, 28x28 grey PNGs (the data set's test split is
the val folder). --per-class keeps the first N images of each class in each split (smoke tests). Writes into a
temporary sibling and renames it into place, so an interrupted run leaves nothing half-written.
"""
import argparse
import gzip
import os
import shutil
import sys

import numpy as np
from PIL import Image

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path, magic, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if int.from_bytes(data[0:4], "big") != magic:
        sys.exit(f"{path}: bad magic number (not an IDX file)")
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--source", default="/usr/share/datasets/fashion-mnist",
                    help="folder of the four .gz IDX files (Debian's dataset-fashion-mnist package)")
    ap.add_argument("--per-class", type=int, default=0, help="images per class and split (0: all)")
    args = ap.parse_args()
    if os.path.isdir(args.out):
        print(f"{args.out}: exists, nothing to do")
        return
    tmp = args.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = read_idx(f"{args.source}/{prefix}-images-idx3-ubyte.gz", 2051, 3)
        labels = read_idx(f"{args.source}/{prefix}-labels-idx1-ubyte.gz", 2049, 1)
        count = [0] * len(CLASSES)
        for c in CLASSES:
            os.makedirs(f"{tmp}/{split}/{c}")
        for i, (img, label) in enumerate(zip(images, labels)):
            if args.per_class and count[label] >= args.per_class:
                continue
            count[label] += 1
            Image.fromarray(img, "L").save(f"{tmp}/{split}/{CLASSES[label]}/{i:05d}.png")
        print(f"{split}: {sum(count)} images")
    os.rename(tmp, args.out)


if __name__ == "__main__":
    main()
