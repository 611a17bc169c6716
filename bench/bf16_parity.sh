#!/usr/bin/env bash
# Accuracy parity of bf16 autocast training against fp32: TS0's finetune scenario (ResNet-18 from scratch on
# Fashion-MNIST, same seed, same data order), once per precision, both with channels_last, evaluated in fp32 on
# the whole test split. Prints both accuracies and the difference; asserts nothing.
#   bench/bf16_parity.sh [TRAIN_IMAGES=60000] [EPOCHS=3] [THREADS=nproc]
# Where the CPU has no native bf16 the bf16 run is emulated and ~15x slower: use a subset there.
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-60000} epochs=${2:-3} threads=${3:-$(nproc)}
bin=${EXPCTL:-build/expctl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scenario=TS0_FineTuning_ResNet18_FashionMNIST
for precision in fp32 bf16; do
  start=$(date +%s)
  "$bin" run configs/test_scenarios/TS0/finetune.yaml --set "stages=[download, finetune]" \
    --set dataset.train_subset="$train" --set finetune.epochs="$epochs" --set finetune.precision=$precision \
    --set runtime.threads="$threads" --set paths.checkpoints="$work/$precision/ckpt" \
    --set paths.datasets="$work/data" --set paths.models="$work/models" > "$work/$precision.log" 2>&1 ||
    { cat "$work/$precision.log"; exit 1; }
  m=$(find "$work/$precision" -name finetune_metrics.json | head -1)
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['after']['accuracy'], m['precision']['forward'].replace(' ', '_'), m['history'][-1]['images_per_second'], sys.argv[3])" \
    "$m" $precision $(( $(date +%s) - start )) >> "$work/results"
done
echo
echo "TS0 finetune, $train training images, $epochs epochs, seed from TS0, $threads threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
python3 - "$work/results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'precision':<10} {'forward':<16} {'test acc (%)':>12} {'train img/s':>12} {'seconds':>8}")
for name, acc, fwd, ips, secs in rows:
    print(f"{name:<10} {fwd.replace('_', ' '):<16} {float(acc):12.2f} {float(ips):12.1f} {secs:>8}")
print(f"bf16 - fp32: {float(rows[1][1]) - float(rows[0][1]):+.2f} points")
PY
