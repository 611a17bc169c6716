#!/usr/bin/env bash
# Your own model against the built-in one: torchvision's ResNet-18 (10 classes) traced by Debian's python3-torch, then
# converted by expctl and trained beside the built-in ResNet18 in one run (build/expctl_bench_torchscript_import).
#   bench/torchscript_import.sh [threads=2] [batch=64] [steps=10] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 tests/models/torchscript_models.py trace resnet18 "$dir/resnet18.pt"
build/expctl_bench_torchscript_import "$dir/resnet18.pt" "${1:-2}" "${2:-64}" "${3:-10}" "${4:-3}"
