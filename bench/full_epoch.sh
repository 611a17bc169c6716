#!/usr/bin/env bash
# One full 50,000-image training epoch of TS1's fine-tuning settings (ResNet-18, cifar stem, 32x32, its batch size
# and augmentation, precision auto, channels_last; no pretrained weights: the rate does not depend on them) on a
# CIFAR-10 binary tarball of random images made here, beside PyTorch's best configuration on the same images, batch
# size and threads (bench/train_throughput.py: bf16 autocast when expctl chose it, channels_last, no DataLoader
# workers), interleaved expctl, PyTorch, expctl, PyTorch... in one run, then expctl's short epoch (default 3,072
# images) to compare the full epoch's pace with its first thousand images. Prints one row per run and the ratios;
# asserts nothing.
#   bench/full_epoch.sh [--rounds N] [--train N] [--short N] [--threads N] [--torch-malloc keep|default]
#                       [--only expctl|torch|short] [--precision bf16|fp32]
# --torch-malloc: the PyTorch runs' glibc malloc. keep (default): freed memory kept mapped, as expctl keeps it itself
#   (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ at its maximum): the same allocator policy on both sides. default:
#   glibc's defaults. expctl's own is EXPCTL_MALLOC from the environment (keep unless set to default).
# --only: one run of one side (for a timer that pairs whole processes, e.g. /usr/bin/time -v).
# --precision: the PyTorch side's (default: what expctl's `auto` chooses here, found with a one-batch run first).
# Each row: training img/s over the epoch, and the epoch's health (system-time share of the CPU time, page faults per
# step, and for expctl the seconds waited for data), as both sides measure them with getrusage.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=1 train=50000 short=3072 threads=$(nproc) torch_malloc=keep only="" precision=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --train) train=$2; shift 2 ;;
    --short) short=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --torch-malloc) torch_malloc=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    *) echo "full_epoch.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$torch_malloc" in keep|default) ;; *) echo "full_epoch.sh: --torch-malloc keep|default" >&2; exit 2 ;; esac
bin=${EXPCTL:-build/expctl}
py=${PYTHON:-/usr/bin/python3}  # Debian's python3 with python3-torch: the same LibTorch underneath
# The images are made once and kept between calls (set FULL_EPOCH_DATA to choose where): 180 MB.
data=${FULL_EPOCH_DATA:-${TMPDIR:-/tmp}/expctl-full-epoch}
mkdir -p "$data"
if [ ! -f "$data/cifar-10-binary.tar.gz" ]; then
  bench/synthetic_cifar.sh "$data/cifar.part" && mv "$data/cifar.part" "$data/cifar-10-binary.tar.gz"
fi
tarball=$data/cifar-10-binary.tar.gz
if [ ! -f "$data/extracted/cifar-10-batches-bin/test_batch.bin" ]; then
  rm -rf "$data/extracted" && mkdir -p "$data/extracted" && tar -xzf "$tarball" -C "$data/extracted"
fi
md5=$(md5sum "$tarball" | cut -d' ' -f1)
batch=$("$bin" show-config configs/test_scenarios/TS1/finetune.yaml |
  awk '/^finetune:/ {f = 1; next} /^[a-z]/ {f = 0} f && /^  batch_size:/ {print $2; exit}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# expctl IMAGES: prints "img/s system_share faults_per_step data_wait_s precision"
run_expctl() {
  local n=$1 out=$work/e$RANDOM
  "$bin" run configs/test_scenarios/TS1/finetune.yaml --set "stages=[download, finetune]" \
    --set model.pretrained=false --set dataset.url="file://$tarball" --set dataset.md5="$md5" \
    --set dataset.train_subset="$n" --set dataset.test_subset=1000 --set runtime.device=cpu \
    --set runtime.threads="$threads" --set finetune.epochs=1 --set finetune.save_every=0 \
    --set paths.checkpoints="$out/ckpt" --set paths.datasets="$data/expctl" --set paths.models="$out/models" \
    > "$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
  "$py" -c "import json,sys; m=json.load(open(sys.argv[1])); h=m['history'][-1]
print(h['images_per_second'], h['system_time_share'], h['page_faults']/h['steps'], h['data_wait_seconds'],
      'bf16' if m['precision']['forward'].startswith('bf16') else 'fp32')" \
    "$out/ckpt/TS1_FineTuning_ResNet18_CIFAR10/finetune_metrics.json"
  rm -rf "$out" "$out.log"
}

# torch IMAGES PRECISION: prints "img/s system_share faults_per_step"
run_torch() {
  local env=()
  [ "$torch_malloc" = keep ] && env=(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647)
  env "${env[@]}" OMP_NUM_THREADS="$threads" "$py" bench/train_throughput.py --cifar "$data/extracted/cifar-10-batches-bin" \
    --train "$1" --test 1000 --threads "$threads" --batch "$batch" --epochs 1 --device cpu --workers 0 \
    --precision "$2" --channels-last 1 |
    "$py" -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['train_images_per_second'], r['system_time_share'], r['page_faults']/r['steps'])"
}

case "$only" in
  expctl) run_expctl "$train"; exit 0 ;;
  short) run_expctl "$short"; exit 0 ;;
  torch) run_torch "$train" "${precision:-$(run_expctl "$batch" | awk '{print $5}')}"; exit 0 ;;
  "") ;;
  *) echo "full_epoch.sh: --only expctl|torch|short" >&2; exit 2 ;;
esac
# A one-batch epoch: the precision `auto` chooses on this CPU.
[ -n "$precision" ] || precision=$(run_expctl "$batch" | awk '{print $5}')

printf 'ResNet-18 (cifar stem, 3x32x32), TS1 finetune block, batch %s, %s threads, %s + channels_last, %s, EXPCTL_MALLOC=%s, PyTorch malloc %s\n' \
  "$batch" "$threads" "$precision" "$(uname -m)" "${EXPCTL_MALLOC:-keep}" "$torch_malloc"
printf '%-28s %9s %10s %14s %12s %14s\n' run images "img/s" "system time" "faults/step" "data wait s"
e_all=() t_all=()
for r in $(seq 1 "$rounds"); do
  read -r e es ef ew _ < <(run_expctl "$train")
  printf '%-28s %9s %10.1f %13.1f%% %12.0f %14.1f\n' "expctl, round $r" "$train" "$e" "$(echo "$es*100" | bc -l)" "$ef" "$ew"
  read -r t ts tf < <(run_torch "$train" "$precision")
  printf '%-28s %9s %10.1f %13.1f%% %12.0f %14s\n' "PyTorch script, round $r" "$train" "$t" "$(echo "$ts*100" | bc -l)" "$tf" "-"
  e_all+=("$e") t_all+=("$t")
done
read -r s ss sf sw _ < <(run_expctl "$short")
printf '%-28s %9s %10.1f %13.1f%% %12.0f %14.1f\n' "expctl, short epoch" "$short" "$s" "$(echo "$ss*100" | bc -l)" "$sf" "$sw"
"$py" - "$s" "${#e_all[@]}" "${e_all[@]}" "${t_all[@]}" <<'PY'
import statistics, sys
short, n = float(sys.argv[1]), int(sys.argv[2])
e, t = list(map(float, sys.argv[3:3 + n])), list(map(float, sys.argv[3 + n:3 + 2 * n]))
pairs = [a / b for a, b in zip(e, t)]
print(f"expctl / PyTorch, full epoch, per round: {', '.join(f'{p:.3f}' for p in pairs)} (median {statistics.median(pairs):.3f})")
print(f"expctl full epoch / short epoch: {statistics.median(e) / short:.3f}")
PY
