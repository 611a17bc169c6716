// Wanda's sequential pruning pass (unstructured, sparsity 0.5) on the TS0 model shape (ResNet-18, ImageNet stem,
// 1x28x28, 10 classes) or TS1's (cifar stem, 3x32x32), in one run, two ways: the calibration activations kept
// between segments (what the pruner does) and restarted from the images for every layer (what it did before,
// and what it still does when the activations would not fit in memory). Both give the same masks; the bench
// checks that and prints the times. bench/wanda_pass.py is the same rule in plain PyTorch, for comparison
// (bench/wanda_pass.sh runs both).
//
//   build/expctl_bench_wanda_pass [ts0|ts1] [calibration images=512] [threads=0] [repeats=3]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "plugins/pruner.h"
#include "plugins/wanda/wanda.h"
#include "runner/core/params.h"
#include "runner/core/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"

using namespace expctl;

int main(int argc, char** argv) {
  const bool ts1 = argc > 1 && std::strcmp(argv[1], "ts1") == 0;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 512;
  const int threads = metrics::configure_threads(argc > 3 ? std::atoll(argv[3]) : 0);
  const int repeats = argc > 4 ? std::atoi(argv[4]) : 3;

  torch::manual_seed(0);
  models::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = ts1 ? models::Stem::Cifar : models::Stem::ImageNet;
  spec.in_channels = ts1 ? 3 : 1;
  const int64_t side = ts1 ? 32 : 28;
  models::GraphNet dense = models::make_resnet(spec);
  dense->eval();
  const torch::Tensor calibration = torch::randn({n, spec.in_channels, side, side});

  const PrunerEntry* wanda = PrunerRegistry::find("wanda");
  std::vector<Diagnostic> diags;
  const Params params = validate_block(nullptr, Mark{}, "prune", wanda->info.params, diags);  // the defaults
  // The calibration batch size Wanda asks of the prune stage.
  int64_t batch = prune_stage_options(params).calibration_batch_size;
  for (const auto& o : wanda->info.overrides)
    if (o.key == prune_stage_binder().key(&PruneStageOptions::calibration_batch_size))
      batch = std::get<int64_t>(o.value.v);

  struct Way {
    const char* name;
    int64_t cache_limit;
    std::vector<double> seconds;
    PrunePlan plan;
  };
  std::vector<Way> ways{{"activations kept between segments", int64_t(1) << 40, {}, {}},
                        {"restarted from the images per layer", 0, {}, {}}};
  for (int r = 0; r < repeats; ++r)
    for (Way& w : ways) {
      models::GraphNet model = models::copy_model(dense);
      PruneRequest req;
      req.model = model;
      req.groups = models::channel_groups(model);
      req.calibration = calibration;
      req.batch_size = batch;
      req.params = &params;
      const int64_t previous = wanda::set_calibration_cache_limit(w.cache_limit);
      const auto t0 = std::chrono::steady_clock::now();
      w.plan = wanda->create()->prune(req);
      w.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      wanda::set_calibration_cache_limit(previous);
    }
  bool same = ways[0].plan.masks.size() == ways[1].plan.masks.size();
  for (const auto& [name, mask] : ways[0].plan.masks)
    same = same && ways[1].plan.masks.count(name) && torch::equal(mask, ways[1].plan.masks.at(name));

  std::printf("Wanda unstructured 0.5, %s model (%s), %lld calibration images in batches of %lld, %d threads, "
              "median of %d\n\n",
              ts1 ? "TS1" : "TS0", ts1 ? "cifar stem, 3x32x32" : "ImageNet stem, 1x28x28", (long long)n,
              (long long)batch, threads, repeats);
  for (Way& w : ways) {
    std::sort(w.seconds.begin(), w.seconds.end());
    std::printf("  %-40s %8.3f s\n", w.name, w.seconds[w.seconds.size() / 2]);
  }
  std::printf("\nspeed-up x%.2f; masks identical: %s\n",
              ways[1].seconds[ways[1].seconds.size() / 2] / ways[0].seconds[ways[0].seconds.size() / 2],
              same ? "yes" : "NO");
  return same ? 0 : 1;
}
