#!/usr/bin/env bash
# Training and evaluation throughput of expctl's finetune stage against the equivalent PyTorch script
# (bench/train_throughput.py), same model (ResNet-18, ImageNet stem, gray input), data (Fashion-MNIST subset from
# Debian), batch size and threads, run one after the other on this machine. Prints a table; asserts nothing.
#   bench/train_throughput.sh [TRAIN_IMAGES] [THREADS]      (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-10000}
threads=${2:-$(nproc)}
bin=${EXPCTL:-build/expctl}
py=${PYTHON:-/usr/bin/python3}   # Debian's python3 with python3-torch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
md5s=$(for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  md5sum /usr/share/datasets/fashion-mnist/$f | cut -d' ' -f1; done | paste -sd, -)
cat > "$work/bench.yaml" <<YAML
schema: 1
scenario: {test_scenario: BENCH, method: Throughput}
model: {name: ResNet18, pretrained: false, stem: imagenet}
dataset: {name: FashionMNIST, url: "file:///usr/share/datasets/fashion-mnist/", md5: [$md5s],
          train_subset: $train, test_subset: 5000, augment: {crop_padding: 2, hflip: false}}
runtime: {threads: $threads}
paths: {checkpoints: $work/ckpt, datasets: $work/data, models: $work/models}
stages: [download, finetune]
finetune: {epochs: 1, batch_size: 128, eval_batch_size: 512, optimizer: {lr: 0.05}, warmup_epochs: 0}
YAML
"$bin" run "$work/bench.yaml" > "$work/expctl.log" 2>&1 || { cat "$work/expctl.log"; exit 1; }
read -r e_train e_eval < <(python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history'][0]; print(h['images_per_second'], h['eval_images_per_second'])" "$work/ckpt/BENCH_Throughput_ResNet18_FashionMNIST/finetune_metrics.json")
out=$(OMP_NUM_THREADS=$threads "$py" bench/train_throughput.py --train "$train" --threads "$threads")
p_train=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['train_images_per_second'])" "$out")
p_eval=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['eval_images_per_second'])" "$out")
printf '\nResNet-18 (ImageNet stem, 1x28x28), %s training images, batch 128, %s threads, %s\n' "$train" "$threads" "$(uname -m)"
printf '%-28s %14s %14s\n' "" "train img/s" "eval img/s"
printf '%-28s %14.1f %14.1f\n' "expctl (C++, LibTorch)" "$e_train" "$e_eval"
printf '%-28s %14.1f %14.1f\n' "PyTorch script (Python)" "$p_train" "$p_eval"
python3 -c "import sys; e,p,ee,pe=map(float,sys.argv[1:]); print(f'{\"expctl / PyTorch\":<28} {e/p:13.2f}x {ee/pe:13.2f}x')" "$e_train" "$p_train" "$e_eval" "$p_eval"
