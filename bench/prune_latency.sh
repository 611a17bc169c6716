#!/usr/bin/env bash
# Dense against Neuron-Coverage-pruned for every built-in model (small-input variant, 32x32): expctl's latency of the
# eager, the deployed and the deployed bf16 form (build/expctl_bench_prune_latency, interleaved in one process), then
# in one PyTorch process, interleaved, the very same models: expctl's TorchScript export as loaded and through
# PyTorch's optimize_for_inference(freeze(m)), against expctl's deployed file (bench/prune_latency_torch.py); one
# model after the other in one run.
#   bench/prune_latency.sh [sparsity=0.5] [threads=2] [large_batch=128] [repeats=20] [models...]
set -euo pipefail
cd "$(dirname "$0")/.."
sparsity=${1:-0.5}; threads=${2:-2}; large=${3:-128}; repeats=${4:-20}
shift $(( $# < 4 ? $# : 4 ))
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(ResNet18 ResNet50 VGG11_BN VGG16_BN MobileNetV2 DenseNet121)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for m in "${models[@]}"; do
  echo "=== $m"
  out=$(build/expctl_bench_prune_latency "$sparsity" "$threads" "$large" "$repeats" "$m" "$dir")
  echo "$out"
  factor=$(echo "$out" | sed -n 's/^MAC reduction x\([0-9.]*\)$/\1/p')
  /usr/bin/python3 bench/prune_latency_torch.py "$dir" "$m" "$factor" "$threads" "$large" "$repeats"
  rm -f "$dir/${m}"_*.pt
done
