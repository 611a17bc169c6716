#!/usr/bin/env bash
# Installs the Debian 12 packages expctl needs to build, run and test; does nothing when all are present.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build ccache pkg-config
  # libraries (LibTorch + Gloo headers for several processes, config, logging, JSON, CLI, downloads, archives, hashes)
  libtorch-dev libgloo-dev libyaml-cpp-dev libspdlog-dev nlohmann-json3-dev libcli11-dev
  libcurl4-openssl-dev libarchive-dev libssl-dev zlib1g-dev
  # image folders: PNG and JPEG decoding (libjpeg-turbo)
  libpng-dev libjpeg62-turbo-dev
  # fast BLAS for LibTorch's CPU kernels (the reference BLAS is ~8x slower at batch 1)
  libopenblas0-pthread
  # tests: GoogleTest, Python's torch/torchvision for the interop tests, real Fashion-MNIST files
  libgtest-dev libgmock-dev python3 python3-torch python3-torchvision python3-pil python3-numpy dataset-fashion-mnist
  # reports: training-curve plots
  gnuplot-nox
  # tests: a single-node Slurm for the job-array test (scripts/slurm-local.sh)
  munge slurmctld slurmd slurm-client
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root: apt-get install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
