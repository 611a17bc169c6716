#!/usr/bin/env python3
"""Writes image fixtures and what PIL / torchvision make of them, for tests/data/image_folder_test.cpp.

    image_reference.py OUT

OUT/images/*: PNG and JPEG files in several modes; OUT/pil/<name>.<RGB|L>: PIL's decoded bytes (rows of
interleaved channels) after convert(mode); OUT/tv/*: torchvision transforms of images/rgb.png as a uint8 CHW
tensor; OUT/folder/: an ImageFolder tree; OUT/reference.json: shapes, crop windows, the folder's samples.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F

out = sys.argv[1]
rng = np.random.default_rng(7)
os.makedirs(f"{out}/images", exist_ok=True)
os.makedirs(f"{out}/pil", exist_ok=True)
os.makedirs(f"{out}/tv", exist_ok=True)
ref = {"images": {}, "transforms": {}, "crops": [], "folder": {}}


def smooth(h, w, c):
    # Smooth gradients plus noise: JPEG-friendly, and every resize tap matters.
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 5 + y * 3 + k * 60) % 256 for k in range(c)], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


rgb = smooth(37, 53, 3)
fixtures = {
    "rgb.png": Image.fromarray(rgb, "RGB"),
    "gray.png": Image.fromarray(smooth(29, 31, 1)[:, :, 0], "L"),
    "rgba.png": Image.fromarray(smooth(20, 24, 4), "RGBA"),
    "palette.png": Image.fromarray(rgb, "RGB").quantize(17),
    "rgb.jpg": Image.fromarray(rgb, "RGB"),
    "gray.jpg": Image.fromarray(smooth(29, 31, 1)[:, :, 0], "L"),
}
for name, img in fixtures.items():
    path = f"{out}/images/{name}"
    if name == "palette.png":
        img.info["transparency"] = 3
        img.save(path, transparency=3)
    elif name.endswith(".jpg"):
        img.save(path, quality=90)
    else:
        img.save(path)
    for mode in ("RGB", "L"):
        with Image.open(path) as im:
            dec = im.convert(mode)
        with open(f"{out}/pil/{name}.{mode}", "wb") as f:
            f.write(np.asarray(dec).tobytes())
        ref["images"][f"{name}.{mode}"] = [dec.height, dec.width]

# Transforms on the RGB PNG as a uint8 [C, H, W] tensor (torchvision's tensor path).
t = torch.from_numpy(np.asarray(Image.open(f"{out}/images/rgb.png").convert("RGB")).copy()).permute(2, 0, 1)
cases = {
    "resize_20": F.resize(t, 20, antialias=True),             # shorter side 37 -> 20: downscale both ways
    "resize_64": F.resize(t, 64, antialias=True),             # upscale
    "resize_exact_30x17": F.resize(t, [30, 17], antialias=True),
    "center_crop_24x30": F.center_crop(t, [24, 30]),
    "center_crop_40x60": F.center_crop(t, [40, 60]),          # larger than the image: zero padding
    "resized_crop_5_7_20_30_to_16": F.resized_crop(t, 5, 7, 20, 30, [16, 16], antialias=True),
}
for name, v in cases.items():
    with open(f"{out}/tv/{name}", "wb") as f:
        f.write(v.contiguous().numpy().tobytes())
    ref["transforms"][name] = list(v.shape)

# RandomResizedCrop windows after torch.manual_seed(seed).
for (h, w, scale, ratio) in [(37, 53, (0.08, 1.0), (3 / 4, 4 / 3)), (224, 160, (0.35, 1.0), (0.5, 2.0)),
                             (10, 200, (0.9, 1.0), (3 / 4, 4 / 3))]:
    for seed in range(6):
        torch.manual_seed(seed)
        i, j, ch, cw = RandomResizedCrop.get_params(torch.zeros(1, h, w), list(scale), list(ratio))
        ref["crops"].append({"h": h, "w": w, "scale": list(scale), "ratio": list(ratio), "seed": seed,
                             "window": [i, j, ch, cw]})

# An ImageFolder tree with the cases torchvision's ordering rules decide: nested folders, names with spaces,
# upper-case extensions, a non-image file.
root = f"{out}/folder"
for split, per_class in (("train", 3), ("val", 2)):
    for cls in ("dog", "cat", "a b", "Zebra"):
        for k in range(per_class):
            sub = f"{root}/{split}/{cls}" + ("/nested" if k == 2 else "")
            os.makedirs(sub, exist_ok=True)
            ext = ".PNG" if k == 1 else ".png"
            Image.fromarray(smooth(12 + k, 10 + 2 * k, 3), "RGB").save(f"{sub}/img {k}{ext}", format="PNG")
        with open(f"{root}/{split}/{cls}/notes.txt", "w") as f:
            f.write("not an image\n")
    Image.fromarray(smooth(9, 9, 3), "RGB").save(f"{root}/{split}/cat/extra.jpg", quality=95)
for split in ("train", "val"):
    ds = datasets.ImageFolder(f"{root}/{split}")
    ref["folder"][split] = {"classes": ds.classes,
                            "samples": [[os.path.relpath(p, root), label] for p, label in ds.samples]}

with open(f"{out}/reference.json", "w") as f:
    json.dump(ref, f, indent=1)
print("ok")
