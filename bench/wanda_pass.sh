#!/usr/bin/env bash
# Wanda's sequential pruning pass: expctl (both of its calibration strategies) against the same rule in plain
# PyTorch (bench/wanda_pass.py), same model shape, random calibration images, batch and threads, in one run.
# Prints the times; exits non-zero only when expctl's two strategies disagree on a mask.
#   bench/wanda_pass.sh [ts0|ts1] [CALIBRATION_IMAGES=512] [THREADS=nproc] [REPEATS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-ts0} images=${2:-512} threads=${3:-$(nproc)} repeats=${4:-3}
bin=${BENCH:-build/expctl_bench_wanda_pass}
py=${PYTHON:-/usr/bin/python3}  # Debian's python3 with python3-torch: the same LibTorch underneath
"$bin" "$model" "$images" "$threads" "$repeats"
out=$(OMP_NUM_THREADS=$threads "$py" bench/wanda_pass.py --model "$model" --images "$images" --threads "$threads" \
  --repeats "$repeats")
python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(f'  {\"PyTorch \" + j[\"torch\"] + \" (same rule, block inputs kept)\":<40} {j[\"seconds\"]:8.3f} s')" "$out"
