#!/usr/bin/env bash
# Two expctl builds on identical work, alternating A B A B ...: training and evaluation throughput of one fine-tuning
# epoch of ResNet-18 on Fashion-MNIST from Debian (TS0's data, no network), as each build's finetune_metrics.json
# reports them. For a change that must not slow anything down (issue #27: one executor): build the old commit into
# another folder, then
#   bench/ab_builds.sh [--rounds N] [--train N] [--test N] [--stem cifar|imagenet] [--precision auto|fp32|bf16]
#                      [--threads N] OLD_BINARY NEW_BINARY
# Prints every round and the median of the paired ratios B / A; asserts nothing. Same seed, data, threads and
# settings for both; a round's two runs follow each other (A B, then B A), so slow drifts of this noisy host hit
# both and the order cancels out. Then
# compares the two builds' models of the last round tensor by tensor (the initial weights and those after the
# epoch, with Debian's python3-torch): a change that must not alter results gives "bit-identical".
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=4 train=4096 test=2048 stem=cifar precision=auto threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --train) train=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    --stem) stem=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -*) echo "ab_builds.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: bench/ab_builds.sh [options] OLD_BINARY NEW_BINARY" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
md5s=$(for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  md5sum /usr/share/datasets/fashion-mnist/$f | cut -d' ' -f1; done | paste -sd, -)

# run BINARY TAG: one epoch in a fresh folder; prints "train_img_s eval_img_s".
run() {
  local dir="$work/$2"
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/bench.yaml" <<YAML
schema: 1
scenario: {test_scenario: BENCH, method: AB}
model: {name: ResNet18, pretrained: false, stem: $stem}
dataset: {name: FashionMNIST, url: "file:///usr/share/datasets/fashion-mnist/", md5: [$md5s],
          train_subset: $train, test_subset: $test, augment: {crop_padding: 2, hflip: false}}
runtime: {threads: $threads, device: cpu, seed: 1}
paths: {checkpoints: $dir/ckpt, datasets: $dir/data, models: $dir/models}
stages: [download, finetune]
finetune: {epochs: 1, batch_size: 128, eval_batch_size: 512, optimizer: {lr: 0.05}, warmup_epochs: 0,
           precision: $precision, save_every: 0}
YAML
  "$1" run "$dir/bench.yaml" > "$dir/log" 2>&1 || { cat "$dir/log" >&2; exit 1; }
  python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history'][-1]; print(h['images_per_second'], h['eval_images_per_second'])" \
    "$dir/ckpt/BENCH_AB_ResNet18_FashionMNIST/finetune_metrics.json"
}

echo "ResNet-18 ($stem stem, 1x28x28), $train training images (batch 128), $test evaluated (batch 512), precision $precision, $threads threads"
echo "A = $a"
echo "B = $b"
printf '%-6s %12s %12s %12s %12s %9s %9s\n' round "A train/s" "B train/s" "A eval/s" "B eval/s" "B/A tr" "B/A ev"
ratios=()
for r in $(seq 1 "$rounds"); do
  # The run that comes second in a round measured a few percent slower on this host whichever build it was:
  # odd rounds run A first, even rounds B first, so the order cancels out of the median.
  if [ $((r % 2)) = 1 ]; then
    read -r at ae < <(run "$a" a)
    read -r bt be < <(run "$b" b)
  else
    read -r bt be < <(run "$b" b)
    read -r at ae < <(run "$a" a)
  fi
  line=$(python3 -c "import sys; at,bt,ae,be=map(float,sys.argv[1:]); print(f'{bt/at:.3f} {be/ae:.3f}')" "$at" "$bt" "$ae" "$be")
  ratios+=("$line")
  printf '%-6s %12.1f %12.1f %12.1f %12.1f %9s %9s\n' "$r" "$at" "$bt" "$ae" "$be" ${line}
done
printf '%s\n' "${ratios[@]}" | python3 -c "
import sys, statistics as st
rows=[tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
print(f'median B/A: training {st.median(r[0] for r in rows):.3f}, evaluation {st.median(r[1] for r in rows):.3f} '
      f'(range {min(r[0] for r in rows):.3f}-{max(r[0] for r in rows):.3f}, {min(r[1] for r in rows):.3f}-{max(r[1] for r in rows):.3f})')"
/usr/bin/python3 - "$work" <<'PY'
import sys, torch
work = sys.argv[1]
for what, rel in (("initial weights", "BENCH_AB_ResNet18_FashionMNIST/initial.pt"),
                  ("after the epoch", "BENCH/ResNet18_FashionMNIST_FT_1.pt")):
    a = torch.load(f"{work}/a/ckpt/{rel}")["state_dict"]
    b = torch.load(f"{work}/b/ckpt/{rel}")["state_dict"]
    if list(a) != list(b):
        print(f"{what}: the state dicts' keys differ")
        continue
    same = all(torch.equal(a[k], b[k]) for k in a)
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    print(f"{what}: {len(a)} tensors, " + ("bit-identical" if same else f"max |A - B| {diff:.3g}"))
PY
