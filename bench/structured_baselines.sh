#!/usr/bin/env bash
# The structured-baseline study of docs/structured-baselines.md: for each seed, one dense model trained under the
# budget of bench/structured_baselines/include/budget.yaml, then every structured method prunes 50% of every group
# of THAT model and recovers for one epoch. Prints (and writes to $OUT/study.md) the recovered accuracy per method
# and seed, and mean ± sample std over the seeds; asserts nothing.
#   bench/structured_baselines.sh                      # seeds 0 1 2, all methods
#   SEEDS="0 1 2 3" METHODS="group_l2 nc" bench/structured_baselines.sh
# Runs already finished are skipped (expctl's own up-to-date checks), so an interrupted study continues.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EXPCTL:-build/expctl}
py=${PYTHON:-/usr/bin/python3}
seeds=${SEEDS:-"0 1 2"}
methods=${METHODS:-"group_l2 group_l1 bn_scale taylor random nc wanda_sp wanda_sp_magnitude apoz mean_activation kmnc nbc snac tknc"}
out=${OUT:-bench-output/structured_baselines}
dir=bench/structured_baselines
threads=${THREADS:-$(nproc)}
mkdir -p "$out"
for seed in $seeds; do
  sets="--set paths.checkpoints=$out/seed$seed --set paths.reports=$out/seed$seed/reports --set runtime.seed=$seed"
  sets="$sets --set runtime.threads=$threads"
  log="$out/seed$seed.log"
  echo "seed $seed: dense model" >&2
  "$bin" run $dir/finetune.yaml $sets >> "$log" 2>&1 || { tail -30 "$log"; exit 1; }
  for m in $methods; do
    echo "seed $seed: $m" >&2
    extra=""
    [ "$m" = random ] && extra="--set prune.seed=$seed"
    "$bin" run $dir/$m.yaml $sets $extra >> "$log" 2>&1 || { tail -30 "$log"; exit 1; }
  done
done
"$py" - "$out" "$seeds" "$methods" <<'PY' | tee "$out/study.md"
import json, statistics, sys
out, seeds, methods = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
names = {"group_l2": "GroupL2", "group_l1": "GroupL1", "bn_scale": "BNScale", "taylor": "Taylor", "random": "Random",
         "nc": "NeuronCoverage", "wanda_sp": "WandaSP", "wanda_sp_magnitude": "WandaSPMagnitude", "apoz": "APoZ",
         "mean_activation": "MeanActivation", "kmnc": "KMNC", "nbc": "NBC", "snac": "SNAC", "tknc": "TKNC"}
def report(seed, method):
    return json.load(open(f"{out}/seed{seed}/BL_{method}_ResNet18_FashionMNIST/report.json"))
def stats(v):
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan"))
rows = []
dense = [report(s, "Dense")["rows"][1]["accuracy"] for s in seeds]
first = report(seeds[0], names[methods[0]])
print(f"Fashion-MNIST 28x28 (10,000 test images), ResNet-18 ImageNet stem; seeds {', '.join(seeds)}; "
      f"{first['rows'][0]['params'] / 1e6:.2f} M -> {first['rows'][1]['params'] / 1e6:.2f} M parameters, "
      f"{first['rows'][0]['macs'] / 1e6:.1f} M -> {first['rows'][1]['macs'] / 1e6:.1f} M MACs\n")
print("| method | " + " | ".join(f"seed {s}" for s in seeds) +
      " | mean ± std | pruned (mean) | MACs (M) | vs group L2, paired (t) |")
print("|---|" + "---:|" * (len(seeds) + 4))
l2 = [report(s, "GroupL2")["rows"][2]["accuracy"] for s in seeds] if "group_l2" in methods else None
def paired(rec):  # mean of the per-seed differences against group L2, and its t statistic
    if l2 is None or rec == l2: return "-"
    d = [a - b for a, b in zip(rec, l2)]
    md, sdd = stats(d)
    t = md / (sdd / len(d) ** 0.5) if len(d) > 1 and sdd > 0 else float("nan")
    return f"{md:+.2f} (t = {t:.1f})"
m, sd = stats(dense)
print("| dense (2 epochs) | " + " | ".join(f"{a:.2f}" for a in dense) + f" | {m:.2f} ± {sd:.2f} | - | "
      f"{first['rows'][0]['macs'] / 1e6:.1f} | - |")
for meth in methods:
    reps = [report(s, names[meth]) for s in seeds]
    rec = [r["rows"][2]["accuracy"] for r in reps]
    pru = [r["rows"][1]["accuracy"] for r in reps]
    m, sd = stats(rec)
    print(f"| {reps[0]['method']['label']} ({meth}) | " + " | ".join(f"{a:.2f}" for a in rec) +
          f" | {m:.2f} ± {sd:.2f} | {statistics.mean(pru):.2f} | {reps[0]['rows'][2]['macs'] / 1e6:.1f} |"
          f" {paired(rec)} |")
PY
