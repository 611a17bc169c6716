#!/usr/bin/env python3
"""Plain PyTorch on the same CPU: a VGG-11-BN (small-input variant, 32x32, batch 128) at full widths against the
same network at half widths (what Neuron Coverage at sparsity 0.5 leaves, first conv kept), in NCHW and
channels_last. It separates what the CPU kernels give for a MAC reduction from what expctl adds: compare its
ratio with `build/expctl_bench_prune_latency 0.5 2 128 20 VGG11_BN`.

usage: bench/width_latency.py   (2 threads)
"""
import torch, time, torch.nn as nn
torch.set_num_threads(2)
def vgg(widths):
    layers=[]; c=3
    cfg=[widths[0],'M',widths[1],'M',widths[2],widths[3],'M',widths[4],widths[5],'M',widths[6],widths[7]]
    for v in cfg:
        if v=='M': layers.append(nn.MaxPool2d(2,2))
        else: layers += [nn.Conv2d(c,v,3,padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]; c=v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c,10)).eval()
def bench(m, b=128, reps=7):
    x = torch.randn(b, 3, 32, 32)
    with torch.inference_mode():
        for _ in range(2): m(x)
        ts=[]
        for _ in range(reps):
            t=time.perf_counter(); m(x); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]*1000/b
def macs(m):
    tot=[0]
    def h(mod,i,o):
        tot[0]+= o.numel()*mod.weight[0].numel()
    hs=[x.register_forward_hook(h) for x in m.modules() if isinstance(x,(nn.Conv2d,nn.Linear))]
    with torch.no_grad(): m(torch.zeros(1,3,32,32))
    for x in hs: x.remove()
    return tot[0]
d = vgg([64,128,256,256,512,512,512,512]); p = vgg([64,64,128,128,256,256,256,256])
md, mp = macs(d), macs(p)
for name, f in [("nchw", lambda m: m), ("channels_last", lambda m: m.to(memory_format=torch.channels_last))]:
    td, tp = bench(f(d)), bench(f(p))
    print(name, "MACs %.1f M -> %.1f M;" % (md / 1e6, mp / 1e6), "dense %.3f pruned %.3f speedup %.2f mac factor %.2f ratio %.2f" % (td, tp, td/tp, md/mp, td/tp/(md/mp)))
