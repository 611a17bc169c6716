#!/usr/bin/env python3
"""Survey of the Neuron Coverage threshold (not run by ctest): how coverage values spread at several thresholds.

Trains a small BasicBlock ResNet-18 (cifar stem, widths given as the first argument, default 32,64,128,256) on
Debian's Fashion-MNIST for a few SGD steps (second argument, default 150) and prints, before and after training,
the distribution of the per-input min-max scaled spatial channel means and of coverage at t in {0, ..., 0.5}
(the definition of plugins/neuron_coverage). It gave the numbers quoted beside the `threshold` parameter:

    /usr/bin/python3 tests/plugins/neuron_coverage/threshold_survey.py 32,64,128,256 200     # ~7 min on 2 cores
"""
import gzip, numpy as np, torch, torch.nn as nn, torch.nn.functional as F, time, sys
torch.manual_seed(0); torch.set_num_threads(2)
D='/usr/share/datasets/fashion-mnist/'
def imgs(f): 
    b=gzip.open(D+f).read(); return np.frombuffer(b,np.uint8,offset=16).reshape(-1,1,28,28)
def labs(f): return np.frombuffer(gzip.open(D+f).read(),np.uint8,offset=8)
Xtr=torch.tensor(imgs('train-images-idx3-ubyte.gz')).float().div(255).sub(0.2860).div(0.3530)
Ytr=torch.tensor(labs('train-labels-idx1-ubyte.gz')).long()
Xte=torch.tensor(imgs('t10k-images-idx3-ubyte.gz')).float().div(255).sub(0.2860).div(0.3530)
Yte=torch.tensor(labs('t10k-labels-idx1-ubyte.gz')).long()
class Block(nn.Module):
    def __init__(s,i,o,st):
        super().__init__(); s.c1=nn.Conv2d(i,o,3,st,1,bias=False); s.b1=nn.BatchNorm2d(o); s.c2=nn.Conv2d(o,o,3,1,1,bias=False); s.b2=nn.BatchNorm2d(o)
        s.ds=nn.Sequential(nn.Conv2d(i,o,1,st,bias=False),nn.BatchNorm2d(o)) if st!=1 or i!=o else None
    def forward(s,x,acts,name):
        y=F.relu(s.b1(s.c1(x))); acts[name+'.relu1']=y
        y=F.relu(s.b2(s.c2(y))+(s.ds(x) if s.ds is not None else x)); acts[name]=y; return y
class Net(nn.Module):
    def __init__(s,w):
        super().__init__(); s.c=nn.Conv2d(1,w[0],3,1,1,bias=False); s.b=nn.BatchNorm2d(w[0])
        s.blocks=nn.ModuleList(); i=w[0]; s.names=[]
        for st,o in enumerate(w):
            for b in range(2):
                s.blocks.append(Block(i,o,2 if (b==0 and st>0) else 1)); s.names.append(f'layer{st+1}.{b}'); i=o
        s.fc=nn.Linear(i,10)
    def forward(s,x,acts=None):
        acts={} if acts is None else acts
        x=F.relu(s.b(s.c(x))); acts['relu']=x
        for bl,n in zip(s.blocks,s.names): x=bl(x,acts,n)
        return s.fc(x.mean((2,3)))
def coverage(net,x,ts):
    net.eval(); acts={}
    with torch.no_grad(): net(x,acts)
    out={}
    for p,y in acts.items():
        y=y.double(); lo=y.amin((1,2,3),keepdim=True); r=y.amax((1,2,3),keepdim=True)-lo
        m=((y-lo)/r.clamp_min(1e-300)).mean((2,3))   # [N,C]
        out[p]=(m,{t:(m>t).double().mean(0) for t in ts})
    return out
def report(tag,net):
    ts=[0.0,0.05,0.1,0.15,0.2,0.25,0.5]
    cov=coverage(net,Xte[:256],ts)
    print(f'== {tag}')
    allm=torch.cat([m.flatten() for m,_ in cov.values()])
    print('  scaled spatial means: quantiles 50/90/99/99.9/max', [round(float(allm.quantile(q)),4) for q in (0.5,0.9,0.99,0.999)], round(float(allm.max()),4))
    for t in ts:
        c=torch.cat([d[t] for _,d in cov.values()])
        print(f'  t={t}: channels(point) coverage==0 {float((c==0).double().mean()):.3f}, ==1 {float((c==1).double().mean()):.3f}, mean {float(c.mean()):.3f}')
    for p,(m,d) in cov.items():
        if p in ('relu','layer1.0','layer2.0.relu1','layer2.1','layer3.1','layer4.0.relu1','layer4.1'):
            print(f'    {p}: max scaled mean {float(m.max()):.3f}; t=0.25 mean cov {float(d[0.25].mean()):.3f} zero {float((d[0.25]==0).double().mean()):.2f}; t=0.1 mean cov {float(d[0.1].mean()):.3f} zero {float((d[0.1]==0).double().mean()):.2f}; t=0.5 mean {float(d[0.5].mean()):.4f}')
def acc(net):
    net.eval()
    with torch.no_grad(): return float((net(Xte[2000:3000]).argmax(1)==Yte[2000:3000]).float().mean())
w=[int(a) for a in sys.argv[1].split(',')] if len(sys.argv)>1 else [32,64,128,256]
steps=int(sys.argv[2]) if len(sys.argv)>2 else 150
net=Net(w)
net.train()
with torch.no_grad(): net(Xtr[:512])   # BN statistics of real images
report(f'random init widths {w}, BN stats from 512 images (acc {acc(net):.3f})',net)
net=Net(w); opt=torch.optim.SGD(net.parameters(),lr=0.05,momentum=0.9,weight_decay=5e-4)
t0=time.time(); net.train()
for s in range(steps):
    idx=torch.randint(0,60000,(64,)); loss=F.cross_entropy(net(Xtr[idx]),Ytr[idx]); opt.zero_grad(); loss.backward(); opt.step()
print(f'trained {steps} steps in {time.time()-t0:.0f}s, last loss {loss.item():.3f}')
report(f'trained widths {w} (acc {acc(net):.3f})',net)
