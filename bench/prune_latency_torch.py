#!/usr/bin/env python3
"""Times the dense and pruned TorchScript models that `expctl_bench_prune_latency ... EXPORT_DIR` wrote, in PyTorch,
as metrics::measure_latency times them in expctl: random N(0, 1) input of 3x32x32, inference mode, warm-up runs,
then the median of timed runs, at batch 1 and a large batch. The same models, the same machine, the same threads:
what expctl's executor adds or loses against PyTorch, and PyTorch's own speed-up / MAC-reduction ratio. Each model
is timed as loaded (eager TorchScript) and as PyTorch deploys it: torch.jit.optimize_for_inference(torch.jit.freeze(m)),
to set against expctl's deployed form of the same model (the last line of expctl_bench_prune_latency).

usage: prune_latency_torch.py EXPORT_DIR MODEL MAC_FACTOR [threads=2] [large_batch=128] [repeats=20]
"""
import statistics
import sys
import time

import torch


def median_ms(model, batch, warmup, repeats):
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    d, name, mac_factor = sys.argv[1], sys.argv[2], float(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    large = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 20
    torch.set_num_threads(threads)
    for form in ("TorchScript as loaded", "optimize_for_inference(freeze(m))"):
        lat = {}
        for kind in ("dense", "pruned"):
            m = torch.jit.load(f"{d}/{name}_{kind}.pt").eval()
            if form != "TorchScript as loaded":
                m = torch.jit.optimize_for_inference(torch.jit.freeze(m))
            lat[kind] = (median_ms(m, 1, 5, repeats), median_ms(m, large, 2, max(5, repeats // 4)) / large)
        s1 = lat["dense"][0] / lat["pruned"][0]
        sn = lat["dense"][1] / lat["pruned"][1]
        print(f"PyTorch {torch.__version__} ({form}, {threads} threads): b1 {lat['dense'][0]:.3f} -> "
              f"{lat['pruned'][0]:.3f} ms (x{s1:.2f}); b{large} {lat['dense'][1]:.4f} -> {lat['pruned'][1]:.4f} "
              f"ms/img (x{sn:.2f} = {sn / mac_factor:.2f} of the MAC reduction)")


if __name__ == "__main__":
    main()
