#!/usr/bin/env bash
# Data-parallel training throughput on this machine: the same short fine-tuning (ResNet-18, ImageNet stem, gray
# 28x28 Fashion-MNIST subset from Debian, one epoch, the same global batch) as
#   1 process  x 1 thread    (reference)
#   1 process  x 2 threads   (what a single expctl does on 2 cores)
#   2 processes x 1 thread   (Gloo over 127.0.0.1, torchrun-style variables set by this script; no torchrun needed)
# and prints the training and evaluation images per second from finetune_metrics.json (with several processes
# these are global rates: all ranks' images over rank 0's wall time). Prints a table; asserts nothing.
#   bench/ddp_throughput.sh [TRAIN_IMAGES] [GLOBAL_BATCH]      (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-4096}
batch=${2:-128}
bin=${EXPCTL:-build/expctl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
md5s=$(for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  md5sum /usr/share/datasets/fashion-mnist/$f | cut -d' ' -f1; done | paste -sd, -)

# scenario NAME THREADS: a scenario file whose reports go to $work/NAME
scenario() {
  cat > "$work/$1.yaml" <<YAML
schema: 1
scenario: {test_scenario: BENCH, method: DDP}
model: {name: ResNet18, pretrained: false, stem: imagenet}
dataset: {name: FashionMNIST, url: "file:///usr/share/datasets/fashion-mnist/", md5: [$md5s],
          train_subset: $train, test_subset: 2000, augment: {crop_padding: 2, hflip: false}}
runtime: {threads: $2}
paths: {checkpoints: $work/$1, datasets: $work/data, models: $work/models}
stages: [download, finetune]
finetune: {epochs: 1, batch_size: $batch, eval_batch_size: 500, optimizer: {lr: 0.05}, warmup_epochs: 0}
YAML
}

# rates NAME: "train_img_s eval_img_s" of a finished run
rates() {
  python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history'][0]; print(h['images_per_second'], h['eval_images_per_second'])" \
    "$work/$1/BENCH_DDP_ResNet18_FashionMNIST/finetune_metrics.json"
}

single() {  # single NAME THREADS
  scenario "$1" "$2"
  env -u RANK -u WORLD_SIZE "$bin" run "$work/$1.yaml" > "$work/$1.log" 2>&1 || { cat "$work/$1.log"; exit 1; }
}

parallel() {  # parallel NAME PROCESSES THREADS_EACH
  scenario "$1" "$3"
  local port pids=() r
  port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  for ((r = 0; r < $2; r++)); do
    RANK=$r WORLD_SIZE=$2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=$2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$bin" run "$work/$1.yaml" > "$work/$1.$r.log" 2>&1 &
    pids+=($!)
  done
  for ((r = 0; r < $2; r++)); do
    wait "${pids[$r]}" || { cat "$work/$1".*.log; exit 1; }
  done
}

single one1 1
single one2 2
parallel two1 2 1

read -r a_train a_eval < <(rates one1)
read -r b_train b_eval < <(rates one2)
read -r c_train c_eval < <(rates two1)
printf '\nResNet-18 (ImageNet stem, 1x28x28), %s training images, global batch %s, 1 epoch, %s cores, %s\n' \
  "$train" "$batch" "$(nproc)" "$(uname -m)"
printf '%-32s %14s %14s\n' "" "train img/s" "eval img/s"
printf '%-32s %14.1f %14.1f\n' "1 process  x 1 thread" "$a_train" "$a_eval"
printf '%-32s %14.1f %14.1f\n' "1 process  x 2 threads" "$b_train" "$b_eval"
printf '%-32s %14.1f %14.1f\n' "2 processes x 1 thread (Gloo)" "$c_train" "$c_eval"
python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); print(f'{\"2 processes / 1 process x 2 threads\":<32} {c/b:13.2f}x'); print(f'{\"2 processes / 1 process x 1 thread\":<32} {c/a:13.2f}x')" \
  "$a_train" "$b_train" "$c_train"
