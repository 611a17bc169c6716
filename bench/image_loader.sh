#!/usr/bin/env bash
# Image folders at 224x224: (1) images decoded + augmented per second by the loader with WORKERS threads, streamed
# against held in memory; (2) ResNet-18 training throughput on the same folder, streamed against held in memory,
# one epoch each, same model, data, seed and threads, in one run. Target: the loader never the bottleneck.
# The folder is IMAGES synthetic JPEGs of 500x375 (ImageNet's typical size), 10 classes, made once.
#   bench/image_loader.sh [IMAGES=640] [WORKERS=2] [SIZE=224]
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-640} workers=${2:-2} size=${3:-224}
py=${PYTHON:-/usr/bin/python3}
dir=${BENCH_DIR:-/tmp/expctl_bench_images}
folder=$dir/jpeg_$images
if [ ! -d "$folder" ]; then
  "$py" - "$folder" "$images" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for split, count in (("train", n), ("val", max(10, n // 8))):
    for i in range(count):
        c = i % 10
        os.makedirs(f"{out}.partial/{split}/class{c}", exist_ok=True)
        y, x = np.mgrid[0:375, 0:500]
        img = np.stack([(x * (c + 1) + y * k) % 256 for k in (1, 2, 3)], -1) + rng.normal(0, 25, (375, 500, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"{out}.partial/{split}/class{c}/{i:05d}.jpg", quality=90)
os.rename(f"{out}.partial", out)
PY
fi
echo "== loader: $images JPEGs 500x375 -> RandomResizedCrop($size) + flip, $workers threads"
build/expctl_bench_image_loader "$folder" "$size" "$workers" 64 8
echo "== ResNet-18 training at ${size}x${size}, one epoch of $images images, batch 32, $workers threads"
for load in stream memory; do
  ck=$dir/ckpt_$load
  rm -rf "$ck"
  build/expctl run configs/test_scenarios/TS3/finetune.yaml --only finetune --set paths.checkpoints="$ck" \
    --set dataset.path="$folder" --set dataset.channels=3 --set dataset.image_size="$size" --set dataset.resize=0 \
    --set dataset.train_subset=0 --set dataset.test_subset=0 --set dataset.load=$load --set dataset.workers="$workers" \
    --set dataset.memory_limit_mb=100000 \
    --set finetune.epochs=1 --set finetune.batch_size=32 --set runtime.threads="$workers" >/dev/null
  "$py" - "$ck/TS3_FineTuning_ResNet18_ImageFolder/finetune_metrics.json" "$load" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))["history"][0]
extra = ""
if "decoded_images" in h:
    extra = f"  (decoded at {h['decode_images_per_second']:.0f} img/s, waited {h['data_wait_seconds']:.1f} s of {h['seconds']:.1f} s)"
print(f"  {sys.argv[2]:<8} {h['images_per_second']:8.1f} img/s training{extra}")
PY
done
