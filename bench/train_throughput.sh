#!/usr/bin/env bash
# Training and evaluation throughput of expctl's finetune stage against the equivalent PyTorch script
# (bench/train_throughput.py), same model, data, batch size, threads and device, run one after the other on this
# machine. Prints a table; asserts nothing.
#   bench/train_throughput.sh [--device cpu|cuda] [--cifar TARBALL] [--epochs N] [--workers N]
#                             [--precision auto|fp32|bf16] [--channels-last 0|1] [TRAIN_IMAGES] [THREADS]
# Default (after `make build`): ResNet-18 with the ImageNet stem on gray Fashion-MNIST from Debian, as TS0.
# --cifar TARBALL: TS1's own finetune.yaml (cifar stem, its batch size and augmentation, no pretrained weights)
#   on a cifar-10-binary.tar.gz (bench/gpu.sh makes one of random images: throughput does not depend on them).
# --precision / --channels-last: finetune.precision and finetune.channels_last of expctl; the script does the same
#   (auto: bf16 autocast on CUDA and on CPUs with native bf16; the precision expctl chose is printed and passed on).
# The figures are those of the last of --epochs epochs (default 1; on CUDA use 2: the first pays for cuDNN's
# algorithm search). --workers: DataLoader processes of the PyTorch script (default 0). TEST_IMAGES: images
# evaluated after the epoch (default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu cifar="" epochs=1 workers=0 precision=auto channels_last=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --cifar) cifar=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --channels-last) channels_last=$2; shift 2 ;;
    -*) echo "train_throughput.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
train=${1:-10000}
threads=${2:-$(nproc)}
test_images=${TEST_IMAGES:-5000}  # evaluated after the epoch (eval img/s)
bin=${EXPCTL:-build/expctl}
py=${PYTHON:-/usr/bin/python3}   # Debian's python3 with python3-torch: the same LibTorch underneath
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
paths="paths: {checkpoints: $work/ckpt, datasets: $work/data, models: $work/models}"
if [ -n "$cifar" ]; then
  cifar=$(realpath "$cifar")
  scenario=TS1_FineTuning_ResNet18_CIFAR10
  "$bin" run configs/test_scenarios/TS1/finetune.yaml --set "stages=[download, finetune]" \
    --set model.pretrained=false --set dataset.url="file://$cifar" --set dataset.md5="$(md5sum "$cifar" | cut -d' ' -f1)" \
    --set dataset.train_subset="$train" --set dataset.test_subset="$test_images" --set runtime.device="$device" \
    --set runtime.threads="$threads" --set finetune.epochs="$epochs" --set finetune.save_every=0 \
    --set finetune.precision="$precision" --set finetune.channels_last="$([ "$channels_last" = 1 ] && echo true || echo false)" \
    --set paths.checkpoints="$work/ckpt" --set paths.datasets="$work/data" --set paths.models="$work/models" \
    > "$work/expctl.log" 2>&1 || { cat "$work/expctl.log"; exit 1; }
  batch=$("$bin" show-config configs/test_scenarios/TS1/finetune.yaml |
    awk '/^finetune:/ {f = 1; next} /^[a-z]/ {f = 0} f && /^  batch_size:/ {print $2; exit}')
  mkdir -p "$work/cifar" && tar -xzf "$cifar" -C "$work/cifar"
  data_args=(--cifar "$(dirname "$(find "$work/cifar" -name data_batch_1.bin | head -1)")")
  what="ResNet-18 (cifar stem, 3x32x32, TS1's finetune block)"
else
  md5s=$(for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    md5sum /usr/share/datasets/fashion-mnist/$f | cut -d' ' -f1; done | paste -sd, -)
  scenario=BENCH_Throughput_ResNet18_FashionMNIST
  batch=128
  cat > "$work/bench.yaml" <<YAML
schema: 1
scenario: {test_scenario: BENCH, method: Throughput}
model: {name: ResNet18, pretrained: false, stem: imagenet}
dataset: {name: FashionMNIST, url: "file:///usr/share/datasets/fashion-mnist/", md5: [$md5s],
          train_subset: $train, test_subset: $test_images, augment: {crop_padding: 2, hflip: false}}
runtime: {threads: $threads, device: $device}
$paths
stages: [download, finetune]
finetune: {epochs: $epochs, batch_size: $batch, eval_batch_size: 512, optimizer: {lr: 0.05}, warmup_epochs: 0,
           precision: $precision, channels_last: $([ "$channels_last" = 1 ] && echo true || echo false)}
YAML
  "$bin" run "$work/bench.yaml" > "$work/expctl.log" 2>&1 || { cat "$work/expctl.log"; exit 1; }
  data_args=()
  what="ResNet-18 (ImageNet stem, 1x28x28)"
fi
read -r e_train e_eval e_bf16 < <(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); h=m['history'][-1]; print(h['images_per_second'], h['eval_images_per_second'], 'bf16' if m['precision']['forward'].startswith('bf16') else 'fp32')" "$work/ckpt/$scenario/finetune_metrics.json")
out=$(OMP_NUM_THREADS=$threads "$py" bench/train_throughput.py "${data_args[@]}" --train "$train" --threads "$threads" \
  --batch "${batch:-128}" --epochs "$epochs" --device "$device" --workers "$workers" --test "$test_images" --precision "$e_bf16" \
  --channels-last "$channels_last")
p_train=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['train_images_per_second'])" "$out")
p_eval=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['eval_images_per_second'])" "$out")
p_torch=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['torch'])" "$out")
printf '\n%s, %s training images, batch %s, %s threads, device %s, %s%s, epoch %s of %s, %s\n' \
  "$what" "$train" "${batch:-128}" "$threads" "$device" "$e_bf16" "$([ "$channels_last" = 1 ] && echo ' + channels_last')" \
  "$epochs" "$epochs" "$(uname -m)"
printf '%-40s %14s %14s\n' "" "train img/s" "eval img/s"
printf '%-40s %14.1f %14.1f\n' "expctl (C++, LibTorch)" "$e_train" "$e_eval"
printf '%-40s %14.1f %14.1f\n' "PyTorch ${p_torch%%+*} script, $workers workers" "$p_train" "$p_eval"
python3 -c "import sys; e,p,ee,pe=map(float,sys.argv[1:]); print(f'{\"expctl / PyTorch\":<40} {e/p:13.2f}x {ee/pe:13.2f}x')" "$e_train" "$p_train" "$e_eval" "$p_eval"
