#!/usr/bin/env bash
# Downloads (here, where Debian's mirror is reachable) the Debian 12 packages that bench/gpu.sh unpacks on a GPU
# machine that has PyTorch, a compiler and CMake but none of expctl's other libraries: the -dev packages and
# their shared libraries, minus the C library and compiler runtime every machine has, plus Debian's Fashion-MNIST
# for the TS0 demo. They go to .gpu/debs/ (git-ignored); carry ".gpu" to the device machine.
#   scripts/gpu-debs.sh            (about 60 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=(libyaml-cpp-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libcurl4-openssl-dev libarchive-dev libssl-dev
     zlib1g-dev libgtest-dev libgmock-dev)
# Every machine has these (glibc, the compiler runtime and headers); unpacking Debian's would shadow its own.
base='^(libc6|libc6-dev|libc-dev-bin|libcrypt1|libcrypt-dev|libnsl2|libnsl-dev|libtirpc.*|rpcsvc-proto|linux-libc-dev|gcc-.*-base|libgcc-s1|libstdc\+\+6|catch2)$'
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${dev[@]}" | grep -v '^[ <]' | sort -u | grep -Ev "$base")
pkgs+=(dataset-fashion-mnist)
rm -rf .gpu/debs
mkdir -p .gpu/debs
(cd .gpu/debs && apt-get download -qq "${pkgs[@]}")
echo "gpu-debs: ${#pkgs[@]} packages, $(du -sh .gpu/debs | cut -f1) in .gpu/debs"
