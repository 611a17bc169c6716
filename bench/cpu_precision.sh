#!/usr/bin/env bash
# Training throughput on this CPU, expctl against the PyTorch script (bench/train_throughput.sh, same model, data,
# batch and threads, one after the other), for the ImageNet stem (TS0's Fashion-MNIST) and the cifar stem (TS1's
# finetune.yaml on a synthetic CIFAR-10 tarball), each in fp32 NCHW (expctl before channels_last), fp32 +
# channels_last and bf16 autocast + channels_last. Prints one table; asserts nothing.
#   bench/cpu_precision.sh [IMAGENET_STEM_IMAGES=2048] [CIFAR_STEM_IMAGES=512] [BF16_IMAGES=256] [THREADS=nproc]
# bf16 runs use fewer images: where the CPU has no native bf16 (see the log's "training precision" line) it is
# emulated and an order of magnitude slower.
set -euo pipefail
cd "$(dirname "$0")/.."
n_imagenet=${1:-2048} n_cifar=${2:-512} n_bf16=${3:-256} threads=${4:-$(nproc)}
tarball=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$tarball"' EXIT
bench/synthetic_cifar.sh "$tarball"
rows=()
run() {  # STEM IMAGES PRECISION CHANNELS_LAST
  local stem=$1 n=$2 precision=$3 cl=$4 args=() out
  [ "$stem" = cifar ] && args=(--cifar "$tarball")
  out=$(TEST_IMAGES=${TEST_IMAGES:-1000} bench/train_throughput.sh "${args[@]}" --precision "$precision" \
    --channels-last "$cl" "$n" "$threads")
  local e p
  e=$(awk '/^expctl \(C\+\+/ {print $(NF-1)}' <<<"$out")
  p=$(awk '/^PyTorch/ {print $(NF-1)}' <<<"$out")
  rows+=("$(printf '| %-8s | %-30s | %6s | %8s | %8s | %5.2fx |' "$stem" "$precision$([ "$cl" = 1 ] && echo ' + channels_last' || echo ' NCHW')" \
    "$n" "$e" "$p" "$(python3 -c "print($e/$p)")")")
  echo "${rows[-1]}" >&2
}
for stem in imagenet cifar; do
  n=$n_imagenet
  [ "$stem" = cifar ] && n=$n_cifar
  run $stem "$n" fp32 0
  run $stem "$n" fp32 1
  run $stem "$n_bf16" bf16 1
done
printf '\nTraining images/second, %s threads, %s (%s)\n\n' "$threads" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" \
  "$(grep -qw avx512_bf16 /proc/cpuinfo && echo 'AVX512_BF16' || echo 'no AVX512_BF16')"
echo "| stem     | precision                      | images | expctl   | PyTorch  | ratio  |"
echo "|----------|--------------------------------|--------|----------|----------|--------|"
printf '%s\n' "${rows[@]}"
