#!/usr/bin/env bash
# The one prepared run for a lent GPU machine: builds expctl against the LibTorch of the PyTorch installed there,
# runs the tests whose code paths differ on CUDA, the training-throughput benchmark against the PyTorch script,
# and the TS0 demo on real Fashion-MNIST, then prints one table. Prints only; every step has its own time limit,
# and a failed step does not stop the ones that do not need it.
#
# Here first:   scripts/gpu-debs.sh       (the Debian -dev packages that machine lacks, into .gpu/debs)
# There:        bench/gpu.sh [OUT_DIR]    (with the device tool: carry ".gpu"; OUT_DIR defaults to $OUT)
#
# Also runs on a CPU-only machine with a LibTorch (e.g. Debian's python3-torch + libtorch-dev): the CUDA cases
# are then skipped, saying so, and the benchmark runs on the CPU. Environment: PYTHON (default python3),
# EXPCTL_GPU_BUDGET (seconds for the whole run, default 540), JOBS (default nproc), BENCH_IMAGES (training images
# of the throughput run, default 50000), SKIP_TS0=1 (no TS0 demo), EXPCTL_GPU_LIMIT_SCALE (multiplies every step's
# time limit, for slow machines; default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
src=$PWD
out=${1:-${OUT:-/tmp/expctl-gpu}}
mkdir -p "$out"
py=${PYTHON:-python3}
jobs=${JOBS:-$(nproc)}
budget=${EXPCTL_GPU_BUDGET:-540}
start=$(date +%s)
root=/tmp/expctl-gpu-root   # the carried packages, unpacked outside the tree (never over /)
build=$src/build-gpu
summary=$out/summary.md
rm -f "$out"/{env.txt,build.log,tests.log,bench.log,ts0.log,summary.md}  # a rerun starts its logs afresh
rows=()

left() { echo $((budget - ($(date +%s) - start))); }
# limited SECONDS CMD...: runs CMD (a program or a function of this script) in its own process group, which is
# killed when it runs longer; returns CMD's status, or 124 for a time-out.
limited() {
  local limit=$1
  shift
  set -m
  ("$@") &
  local pid=$!
  set +m
  local waited=0
  while kill -0 $pid 2>/dev/null; do
    if [ $waited -ge "$limit" ]; then
      kill -TERM -- -$pid 2>/dev/null
      sleep 5
      kill -KILL -- -$pid 2>/dev/null
      wait $pid 2>/dev/null
      return 124
    fi
    sleep 1
    waited=$((waited + 1))
  done
  wait $pid
}
# step NAME LIMIT_S LOG CMD...: runs CMD with a time limit (cut to what is left of the budget), output to LOG.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local l
  l=$(left)
  if [ "$l" -lt 20 ]; then
    rows+=("| $name | skipped: budget spent | 0 |")
    return 1
  fi
  limit=$((limit * ${EXPCTL_GPU_LIMIT_SCALE:-1}))
  [ "$limit" -gt "$l" ] && limit=$l
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  limited "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  local s=$(($(date +%s) - t0))
  local what="ok"
  [ $rc -eq 124 ] && what="timed out" || { [ $rc -ne 0 ] && what="failed (exit $rc)"; }
  rows+=("| $name | $what | $s |")
  echo "   $name: $what in ${s}s"
  return $rc
}

# ---- the machine --------------------------------------------------------------------------------
env_log=$out/env.txt
{
  date -u
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  "$py" - <<'PY' 2>&1
import torch, torch.utils
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      "cxx11abi", torch.compiled_with_cxx11_abi())
print("cmake_prefix_path", torch.utils.cmake_prefix_path)
PY
  for t in g++ cmake ninja nvcc; do printf '%s: ' $t; command -v $t >/dev/null && $t --version | head -1 || echo missing; done
  echo "cores: $(nproc)"
} > "$env_log" 2>&1
cat "$env_log"
torch_prefix=$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
torch_cmake=""
[ -n "$torch_prefix" ] && [ -f "$torch_prefix/Torch/TorchConfig.cmake" ] && torch_cmake=$torch_prefix
cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

# ---- the libraries this machine lacks ----------------------------------------------------------
build_log=$out/build.log
unpack() {
  rm -rf "$root" && mkdir -p "$root"
  local n=0
  for d in "$src"/.gpu/debs/*.deb; do
    [ -e "$d" ] || continue
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$d" "$root"
    else  # a .deb is an ar archive holding data.tar.{xz,zst,gz}; tar cannot guess the compression from a pipe
      local member z
      member=$(ar t "$d" | grep '^data\.tar')
      case "$member" in *.xz) z=-J ;; *.zst) z=--zstd ;; *.gz) z=-z ;; *) z="" ;; esac
      (cd "$root" && ar p "$d" "$member" | tar -x $z -f -)
    fi
    n=$((n + 1))
  done
  echo "unpacked $n packages into $root"
  # Relative symlinks in the packages (libfoo.so -> libfoo.so.1) stay valid; absolute ones point into / : fix them.
  find "$root" -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in /*) [ -e "$root$t" ] && ln -sfn "$root$t" "$l" ;; esac
  done
}
step "unpack .gpu/debs" 60 "$build_log" unpack
lib=$root/usr/lib/x86_64-linux-gnu
fmnist=/usr/share/datasets/fashion-mnist
if [ ! -d "$fmnist" ] && [ -d "$root$fmnist" ]; then
  mkdir -p "$(dirname "$fmnist")" && ln -s "$root$fmnist" "$fmnist"  # the tests and TS0 read Debian's path
fi

# ---- configure and build -------------------------------------------------------------------------
prefix="$root/usr;$lib/cmake"
[ -n "$torch_cmake" ] && prefix="$torch_cmake;$prefix"
cuda_args=()
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null | head -1)
if [ -n "$nvcc" ]; then
  cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
  cuda_args=(-DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90
             -DTORCH_CUDA_ARCH_LIST=9.0 -DUSE_SYSTEM_NVTX=ON)
  export PATH=$cuda_root/bin:$PATH
fi
nccl=$("$py" -c 'import nvidia.nccl as n, os; print(os.path.dirname(n.__file__) if n.__file__ else list(n.__path__)[0])' 2>/dev/null)
[ -n "$nccl" ] && export NCCL_ROOT=$nccl
configure() {
  local extra=("$@")
  # DT_RPATH (not RUNPATH) so that the unpacked libraries' own dependencies are found there too, at run time,
  # without LD_LIBRARY_PATH (which would reach python3 and the system's programs as well).
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_RPATH="$lib" -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath-link,$lib" \
    -DCMAKE_CXX_FLAGS="-isystem $root/usr/include" "${cuda_args[@]}" "${extra[@]}"
}
targets=(expctl expctl_training_tests expctl_stages_tests expctl_metrics_tests expctl_models_tests
         expctl_integration_tests expctl_plugins_tests expctl_data_tests)
built=0
if step "configure" 120 "$build_log" configure && step "build" 300 "$build_log" cmake --build "$build" -j "$jobs" --target "${targets[@]}"; then
  built=1
elif grep -qE "(process_group|environment)\.cpp:[0-9]+:[0-9]+: error" "$build_log"; then
  # The NCCL backend and the CUDA allocator statistics are the parts no CPU build compiles: try once more
  # without them, so the rest still runs (the log above says what failed).
  step "configure without NCCL, CUDA stats" 120 "$build_log" configure -DEXPCTL_NCCL=OFF -DEXPCTL_CUDA_STATS=OFF &&
    step "build without NCCL, CUDA stats" 300 "$build_log" cmake --build "$build" -j "$jobs" --target "${targets[@]}" &&
    built=1
fi
grep -E "expctl:|Caffe2: CUDA|Found Torch|error:" "$build_log" | head -20

# ---- tests, benchmark, demo ------------------------------------------------------------------------
tests_log=$out/tests.log
bench_log=$out/bench.log
ts0_log=$out/ts0.log
if [ $built = 1 ]; then
  # The tests whose code paths differ on CUDA: device tests and trainer (training), metrics (latency), pruners (calibration
  # passes), interop, data, and the TS0/TS1 scenarios end to end (runtime.device auto = CUDA there).
  step "tests" 240 "$tests_log" ctest --test-dir "$build" --output-on-failure -j 4 \
    -L 'training|stages|metrics|models|integration|plugins|data'
  grep -E "tests passed|tests failed|Skipped|SKIPPED|\*\*\*Failed|Total Test time" "$tests_log" | head -20

  mk_cifar() { PYTHON=$py bench/synthetic_cifar.sh /tmp/cifar-10-binary.tar.gz; }  # random images
  dev=cpu
  [ "$cuda" = 1 ] && dev=cuda
  step "synthetic CIFAR-10" 60 "$bench_log" mk_cifar &&
    EXPCTL=$build/expctl PYTHON=$py step "throughput (TS1 finetune, $dev)" 180 "$bench_log" \
      bench/train_throughput.sh --device $dev --cifar /tmp/cifar-10-binary.tar.gz --epochs 2 --workers 8 \
      "${BENCH_IMAGES:-50000}" "$jobs"
  sed -n '/^ResNet-18/,$p' "$bench_log"

  ts0() {
    local t=/tmp/expctl-ts0
    rm -rf $t
    "$build/expctl" run configs/test_scenarios/TS0/finetune.yaml configs/test_scenarios/TS0/nc.yaml \
      configs/test_scenarios/TS0/wanda.yaml --set paths.checkpoints=$t/checkpoints --set paths.datasets=$t/data \
      --set paths.models=$t/models --set runtime.device=$dev
    for s in TS0_FineTuning_ResNet18_FashionMNIST TS0_NeuronCoverage_ResNet18_FashionMNIST TS0_Wanda_ResNet18_FashionMNIST; do
      echo "---- $s"; cat $t/checkpoints/$s/report.md 2>/dev/null | head -30
    done
  }
  [ "${SKIP_TS0:-0}" = 1 ] || step "TS0 demo (Fashion-MNIST, $dev)" 240 "$ts0_log" ts0
  grep -A12 "^---- " "$ts0_log" | grep -E "^---- |^\|" | head -30
fi

# ---- the table -------------------------------------------------------------------------------------
{
  echo "# bench/gpu.sh on $(hostname), $(date -u +%FT%TZ)"
  echo
  grep -E "^(torch|g\+\+|cmake|nvcc)|NVIDIA|H100|H200|A100" "$env_log" | sed 's/^/    /'
  echo
  echo "| step | result | seconds |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Tests: $(grep -E 'tests passed' "$tests_log" 2>/dev/null | tail -1)"
  echo
  sed -n '/^ResNet-18/,$p' "$bench_log" 2>/dev/null | sed 's/^/    /'
} > "$summary"
echo
cat "$summary"
# The exit status says whether expctl built and its tests passed; the benchmark and demo only print.
[ $built = 1 ] && grep -q "100% tests passed" "$tests_log" 2>/dev/null
