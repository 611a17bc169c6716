// Dense against Neuron-Coverage-pruned built-in model (small-input variant `stem: cifar`, 10 classes, 3x32x32) in
// one run: MACs, size and latency at batch 1 and a large batch on this machine's CPU, of the eager network and of
// its deployed form (runner/models/deployment.h: frozen, batch norms folded, optimize_for_inference) and of that
// form in bf16 (the report's bf16 row), the six timed interleaved (metrics::measure_interleaved) so that their
// ratios are fair. Prints a table; asserts nothing. MODEL is a `model.name` of `expctl list` (ResNet18, ResNet34,
// ResNet50, VGG11_BN, VGG16_BN, MobileNetV2, DenseNet121).
//
//   build/expctl_bench_prune_latency [sparsity=0.5] [threads=0] [large_batch=128] [repeats=20] [model=ResNet18]
//                                    [export_dir]
// With export_dir, the dense and pruned models are also written there as TorchScript (<model>_dense.pt,
// <model>_pruned.pt) and as expctl's deployed files (<model>_dense.deployed.pt, ...): bench/prune_latency.sh times
// them in PyTorch, the same models in the same run.
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "plugins/pruner.h"
#include "runner/core/params.h"
#include "runner/core/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/channel_groups.h"
#include "runner/models/deployment.h"
#include "runner/models/models.h"
#include "runner/models/torchscript_export.h"

using namespace expctl;

int main(int argc, char** argv) {
  const double sparsity = argc > 1 ? std::atof(argv[1]) : 0.5;
  const int threads = metrics::configure_threads(argc > 2 ? std::atoll(argv[2]) : 0);
  const int64_t large = argc > 3 ? std::atoll(argv[3]) : 128;
  const int repeats = argc > 4 ? std::atoi(argv[4]) : 20;
  const std::string model = argc > 5 ? argv[5] : "ResNet18";
  const std::string export_dir = argc > 6 ? argv[6] : "";

  torch::manual_seed(0);
  const models::ModelEntry* entry = models::ModelRegistry::find(model);
  if (!entry) {
    std::fprintf(stderr, "unknown model '%s' (see expctl list)\n", model.c_str());
    return 2;
  }
  std::vector<Diagnostic> diags;
  Params model_params = validate_block(nullptr, Mark{}, "model", entry->info.params, diags);
  Value cifar;
  cifar.v = std::string("cifar");
  model_params.set("stem", cifar);
  models::Network dense = entry->create(model_params, 10, 3);
  dense->eval();
  models::Network pruned = models::copy_model(dense);

  // The real pruner on random calibration images: latency depends only on the widths it leaves.
  const PrunerEntry* nc = PrunerRegistry::find("neuron_coverage");
  Params params = validate_block(nullptr, Mark{}, "prune", nc->info.params, diags);
  Value v;
  v.v = sparsity;
  params.set("sparsity", v);
  PruneRequest req;
  req.model = pruned;
  req.groups = models::channel_groups(pruned);
  req.calibration = torch::randn({64, 3, 32, 32});
  req.batch_size = 64;
  req.params = &params;
  PrunePlan plan = nc->create()->prune(req);
  models::prune_groups(pruned, plan.keep);
  if (!export_dir.empty()) {
    models::export_torchscript(*dense, dense->graph(), export_dir + "/" + model + "_dense.pt");
    models::export_torchscript(*pruned, pruned->graph(), export_dir + "/" + model + "_pruned.pt");
    models::write_deployable(*dense, 32, 32, export_dir + "/" + model + "_dense.deployed.pt");
    models::write_deployable(*pruned, 32, 32, export_dir + "/" + model + "_pruned.deployed.pt");
  }

  std::printf(
      "%s, cifar stem, 10 classes, 32x32; Neuron Coverage sparsity %.2f (default exclude: first, last); "
      "%d threads; %d timed runs at batch 1, %d at batch %lld, after warm-up, in 5 interleaved rounds\n\n",
      model.c_str(), sparsity, threads, repeats, std::max(5, repeats / 4), (long long)large);
  const models::Deployable dense_d = models::make_deployable(*dense, 32, 32);
  const models::Deployable pruned_d = models::make_deployable(*pruned, 32, 32);
  const auto bf16 = models::DeployPrecision::Bf16;
  const models::Deployable dense_b = models::make_deployable(*dense, 32, 32, torch::kCPU, bf16);
  const models::Deployable pruned_b = models::make_deployable(*pruned, 32, 32, torch::kCPU, bf16);
  torch::jit::Module dense_m = dense_d.optimized, pruned_m = pruned_d.optimized;
  torch::jit::Module dense_bm = dense_b.optimized, pruned_bm = pruned_b.optimized;
  const std::vector<metrics::Forward> forwards{
      [&](const torch::Tensor& x) { return dense->forward(x); },
      [&](const torch::Tensor& x) { return dense_m.forward({x}).toTensor(); },
      [&](const torch::Tensor& x) { return dense_bm.forward({x}).toTensor(); },
      [&](const torch::Tensor& x) { return pruned->forward(x); },
      [&](const torch::Tensor& x) { return pruned_m.forward({x}).toTensor(); },
      [&](const torch::Tensor& x) { return pruned_bm.forward({x}).toTensor(); }};
  metrics::LatencyOptions lo;
  lo.warmup = 5;
  lo.repeats = repeats;
  const auto b1 = metrics::measure_interleaved(forwards, 3, lo, torch::kCPU, 5);
  lo.batch = large;
  lo.warmup = 2;
  lo.repeats = std::max(5, repeats / 4);
  const auto bn = metrics::measure_interleaved(forwards, 3, lo, torch::kCPU, 5);

  std::printf("%-16s %10s %10s %9s %16s %24s\n", "model", "params(M)", "MACs(M)", "size(MB)", "b1 median (ms)",
              ("b" + std::to_string(large) + " median (ms/img)").c_str());
  const char* names[] = {"dense eager",  "dense deployed",  "dense bf16",
                         "pruned eager", "pruned deployed", "pruned bf16"};
  double macs[2];
  for (int k = 0; k < 6; ++k) {
    models::Network& m = k < 3 ? dense : pruned;
    const auto ops = metrics::count_macs(m, 32, 32);
    macs[k / 3] = double(ops.macs);
    std::printf("%-16s %10.2f %10.1f %9.2f %9.2f (p95 %5.2f) %12.3f (p95 %6.3f)\n", names[k],
                double(metrics::count_parameters(*m).total) / 1e6, macs[k / 3] / 1e6,
                metrics::model_size(*m).dense_mb(), b1[k].median_ms, b1[k].p95_ms, bn[k].per_image_median_ms(),
                bn[k].p95_ms / double(large));
  }
  const double mac_factor = macs[0] / macs[1];
  std::printf("\nMAC reduction x%.2f\n", mac_factor);
  const char* forms[] = {"eager", "deployed", "deployed bf16"};
  for (int form = 0; form < 3; ++form) {
    const double s1 = b1[form].median_ms / b1[3 + form].median_ms, sn = bn[form].median_ms / bn[3 + form].median_ms;
    std::printf("%s: speed-up x%.2f at batch 1, x%.2f at batch %lld = %.2f of the MAC reduction (target >= 0.90)\n",
                forms[form], s1, sn, (long long)large, sn / mac_factor);
  }
  std::printf("deployed against eager: x%.2f (dense) and x%.2f (pruned) at batch 1, x%.2f and x%.2f at batch %lld\n",
              b1[0].median_ms / b1[1].median_ms, b1[3].median_ms / b1[4].median_ms, bn[0].median_ms / bn[1].median_ms,
              bn[3].median_ms / bn[4].median_ms, (long long)large);
  std::printf(
      "bf16 against fp32 deployed: x%.2f (dense) and x%.2f (pruned) at batch 1, x%.2f and x%.2f at batch %lld;"
      " largest logit difference %.2g (dense, logits up to %.2g) and %.2g (pruned)\n",
      b1[1].median_ms / b1[2].median_ms, b1[4].median_ms / b1[5].median_ms, bn[1].median_ms / bn[2].median_ms,
      bn[4].median_ms / bn[5].median_ms, (long long)large, dense_b.max_difference, dense_b.logit_scale,
      pruned_b.max_difference);
  return 0;
}
