#!/usr/bin/env bash
# Writes a CIFAR-10 binary tarball (cifar-10-binary.tar.gz layout) of random images to TARBALL: throughput does
# not depend on the pixels, and the real one cannot be downloaded here.   bench/synthetic_cifar.sh TARBALL
set -euo pipefail
out=$1
py=${PYTHON:-/usr/bin/python3}  # Debian's, with numpy
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" - "$dir" <<'PY'
import numpy as np, os, sys
d = os.path.join(sys.argv[1], "cifar-10-batches-bin"); os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(0)
for name, n in [(f"data_batch_{i}.bin", 10000) for i in range(1, 6)] + [("test_batch.bin", 10000)]:
    rec = np.empty((n, 3073), np.uint8); rec[:, 0] = rng.integers(0, 10, n); rec[:, 1:] = rng.integers(0, 256, (n, 3072))
    rec.tofile(os.path.join(d, name))
names = "airplane automobile bird cat deer dog frog horse ship truck".split()
open(os.path.join(d, "batches.meta.txt"), "w").write("\n".join(names) + "\n\n")  # as the real tarball has it
PY
tar -C "$dir" -cf - cifar-10-batches-bin | gzip -1 > "$out"
