#!/usr/bin/env python3
"""Times, in one PyTorch process and interleaved, the dense and pruned models that
`expctl_bench_prune_latency ... EXPORT_DIR` wrote, in the forms a PyTorch user would deploy them:

  - "TorchScript as loaded": expctl's eager export (<model>_<kind>.pt), torch.jit.load as is;
  - "PyTorch optimize_for_inference(freeze(m))": PyTorch's own deployment of that same export;
  - the same with a channels_last input (does the memory format help the deployed form?);
  - "expctl deployed file": expctl's deployed model (<model>_<kind>.deployed.pt: frozen, batch norms folded, written
    and checked by models::write_deployable) through torch.jit.optimize_for_inference, as its doc says a reader does.

Every form of both models is timed in the same rounds (each round runs every form in turn), so that a slow minute of
this noisy host falls on all of them alike and their ratios are fair: the same models, machine, threads and input
(random N(0, 1) 3x32x32, inference mode), the median of all timed runs, at batch 1 and a large batch.

usage: prune_latency_torch.py EXPORT_DIR MODEL MAC_FACTOR [threads=2] [large_batch=128] [repeats=20] [rounds=5]
"""
import statistics
import sys
import time

import torch


def time_interleaved(forms, batch, warmup, repeats, rounds):
    """{name: median ms per forward} of every form, timed interleaved in `rounds` rounds."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    xcl = x.contiguous(memory_format=torch.channels_last)
    times = {name: [] for name in forms}
    per_round = max(1, repeats // rounds)
    with torch.inference_mode():
        for name, (model, channels_last) in forms.items():
            for _ in range(warmup):
                model(xcl if channels_last else x)
        for _ in range(rounds):
            for name, (model, channels_last) in forms.items():
                inp = xcl if channels_last else x
                for _ in range(per_round):
                    t = time.perf_counter()
                    model(inp)
                    times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    d, name, mac_factor = sys.argv[1], sys.argv[2], float(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    large = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 20
    rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 5
    torch.set_num_threads(threads)
    labels = ("TorchScript as loaded", "PyTorch optimize_for_inference(freeze(m))",
              "PyTorch optimize_for_inference(freeze(m)), channels_last input", "expctl deployed file")
    forms = {}
    for kind in ("dense", "pruned"):
        loaded = torch.jit.load(f"{d}/{name}_{kind}.pt").eval()
        pytorch = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(f"{d}/{name}_{kind}.pt").eval()))
        expctl = torch.jit.optimize_for_inference(torch.jit.load(f"{d}/{name}_{kind}.deployed.pt"))
        for label, model, cl in zip(labels, (loaded, pytorch, pytorch, expctl), (False, False, True, False)):
            forms[(label, kind)] = (model, cl)
    b1 = time_interleaved(forms, 1, 5, repeats, rounds)
    bn = time_interleaved(forms, large, 2, max(rounds, repeats // 4), rounds)
    print(f"PyTorch {torch.__version__}, {threads} threads, one process, {rounds} interleaved rounds:")
    for label in labels:
        dense1, pruned1 = b1[(label, "dense")], b1[(label, "pruned")]
        densen, prunedn = bn[(label, "dense")] / large, bn[(label, "pruned")] / large
        print(f"  {label}: b1 {dense1:.3f} -> {pruned1:.3f} ms (x{dense1 / pruned1:.2f}); b{large} {densen:.4f} -> "
              f"{prunedn:.4f} ms/img (x{densen / prunedn:.2f} = {densen / prunedn / mac_factor:.2f} of the MAC "
              f"reduction)")
    for kind in ("dense", "pruned"):
        p, e = labels[1], labels[3]
        print(f"  expctl deployed file against PyTorch's optimize_for_inference(freeze(m)), {kind}: "
              f"x{b1[(p, kind)] / b1[(e, kind)]:.2f} at b1, x{bn[(p, kind)] / bn[(e, kind)]:.2f} at b{large} "
              f"(> 1: expctl's is faster)")


if __name__ == "__main__":
    main()
