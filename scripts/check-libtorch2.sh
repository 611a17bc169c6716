#!/usr/bin/env bash
# Builds expctl against a LibTorch 2.x and runs the whole test suite there: Debian 13's LibTorch 2.6 (CPU) in a
# Debian 13 chroot made with debootstrap, next to the Debian 12 (LibTorch 1.13.1) build of `make test`.
# Needs root and Debian's mirror; about 1.5 GB in ROOT_DIR; the first run takes about 30 minutes on 2 cores.
#   scripts/check-libtorch2.sh [ROOT_DIR]     (default /var/tmp/expctl-trixie; reused by later runs)
# The build goes to build-trixie/ in this checkout (git-ignored). The single-node Slurm test (label slurm) is left
# out: Debian 13's slurmd needs cgroups, which the chroot does not mount, and Slurm does not touch LibTorch.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/var/tmp/expctl-trixie}
[ "$(id -u)" -eq 0 ] || { echo "check-libtorch2: run as root (debootstrap, chroot, mount)" >&2; exit 1; }
if [ ! -x "$root/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian
fi
mounts=()
bind() {  # bind SOURCE TARGET_IN_ROOT: mounted for this run only
  mkdir -p "$root$2"
  mountpoint -q "$root$2" || { mount --bind "$1" "$root$2" && mounts=("$root$2" "${mounts[@]}"); }
}
cleanup() { for m in "${mounts[@]}"; do umount "$m" || true; done; }
trap cleanup EXIT
mountpoint -q "$root/proc" || { mount -t proc proc "$root/proc" && mounts=("$root/proc" "${mounts[@]}"); }
bind /dev /dev
bind /dev/pts /dev/pts
bind "$src" /src
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash -c '
  set -e
  cd /src
  scripts/install-deps.sh
  python3 -c "import torch; print(\"check-libtorch2: LibTorch\", torch.__version__)"
  make build BUILD=build-trixie
  cd build-trixie && ctest --output-on-failure -j "$(nproc)" -LE slurm'
