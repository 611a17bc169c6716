#!/usr/bin/env bash
# Wanda against magnitude pruning at the same sparsity, before recovery, on the same fine-tuned model (the TS0
# Fashion-MNIST demo's FT checkpoint, which must exist: run configs/test_scenarios/TS0/finetune.yaml first), and
# the calibration time against one training epoch. Prints a table; asserts nothing.
#   bench/wanda_vs_magnitude.sh [SPARSITY]
set -euo pipefail
cd "$(dirname "$0")/.."
sparsity=${1:-0.5}
bin=${EXPCTL:-build/expctl}
py=${PYTHON:-/usr/bin/python3}   # Debian's python3 with python3-torch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ts0=configs/test_scenarios/TS0
# Each variant gets a method name of its own so its report folder does not collide with the plain run's.
for variant in "Wanda wanda unstructured" "WandaMagnitude magnitude unstructured" "Wanda24 wanda n:m" "NC - -"; do
  set -- $variant
  if [ "$1" = NC ]; then
    "$bin" run $ts0/nc.yaml --only prune --set scenario.method=BenchNC --set prune.sparsity="$sparsity" > "$work/$1.log" 2>&1 || { cat "$work/$1.log"; exit 1; }
  else
    "$bin" run $ts0/wanda.yaml --only prune --set scenario.method=Bench$1 --set prune.score="$2" --set prune.mode="$3" \
      --set prune.sparsity="$sparsity" > "$work/$1.log" 2>&1 || { cat "$work/$1.log"; exit 1; }
  fi
done
"$py" - "$sparsity" <<'PY'
import json, sys
ft = json.load(open("checkpoints/TS0_FineTuning_ResNet18_FashionMNIST/finetune_metrics.json"))
epoch_s = ft["history"][-1]["seconds"]
print(f"\nTS0 (ResNet-18 on Fashion-MNIST), sparsity {sys.argv[1]}, before recovery; one training epoch = {epoch_s:.1f} s")
print(f"{'method':<34}{'acc before':>11}{'acc after':>11}{'held-out after':>16}{'prune time':>12}{'x epoch':>9}")
rows = [("Wanda, unstructured", "BenchWanda"), ("magnitude, unstructured", "BenchWandaMagnitude"),
        ("Wanda, 2:4", "BenchWanda24"), ("Neuron Coverage, structured", "BenchNC")]
for label, method in rows:
    m = json.load(open(f"checkpoints/TS0_{method}_ResNet18_FashionMNIST/prune_metrics.json"))
    print(f"{label:<34}{m['before']['accuracy']:>10.2f}%{m['after']['accuracy']:>10.2f}%"
          f"{m['after']['held_out']['accuracy']:>15.2f}%{m['prune_seconds']:>11.1f}s{m['prune_seconds'] / epoch_s:>9.2f}")
PY
