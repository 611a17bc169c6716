// Image-folder loading speed: images decoded and augmented per second by the training loader (JPEG/PNG decode,
// RandomResizedCrop to SIZE, flip, normalisation) with the given decoding threads, against the same batches from
// the split held in memory (no decoding), in one run. Used by bench/image_loader.sh.
//   expctl_bench_image_loader FOLDER SIZE WORKERS [BATCH=64] [BATCHES=8]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "runner/core/config.h"
#include "runner/data/loader.h"
#include "runner/data/registry.h"

using namespace expctl;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s FOLDER SIZE WORKERS [BATCH=64] [BATCHES=8]\n", argv[0]);
    return 2;
  }
  const std::string folder = argv[1];
  const int64_t size = std::stoll(argv[2]), workers = std::stoll(argv[3]);
  const int64_t batch = argc > 4 ? std::stoll(argv[4]) : 64, batches = argc > 5 ? std::stoll(argv[5]) : 8;
  at::set_num_threads(int(workers));
  auto scenario = [&](const std::string& load) {
    const std::string yaml = "/tmp/expctl_bench_image_loader.yaml";
    std::ofstream(yaml) << "schema: 1\nscenario: {test_scenario: TSB, method: M}\nmodel: {name: ResNet18, "
                           "pretrained: false}\ndataset: {name: ImageFolder, path: "
                        << folder << ", image_size: " << size << ", load: " << load << ", workers: " << workers
                        << ", memory_limit_mb: 100000}\nstages: [finetune]\n";
    return load_scenario(yaml);
  };
  for (const std::string load : {"stream", "memory"}) {
    const ScenarioConfig cfg = scenario(load);
    const data::Split split = data::load_dataset(cfg, true);
    data::LoaderOptions o;
    o.batch_size = batch;
    o.augment = data::augmentation_of(cfg);
    for (int64_t prefetch : {int64_t(0), int64_t(2)}) {
      if (load == "memory" && prefetch) continue;
      o.prefetch = prefetch;
      data::Loader loader(split, o);
      const int64_t n = std::min(batches, loader.num_batches());
      const auto t0 = std::chrono::steady_clock::now();
      int64_t images = 0;
      for (int64_t j = 0; j < n; ++j) images += loader.batch(j).images.size(0);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("  %-40s %8.0f img/s  (%lld images, %.2f s)\n",
                  (load == "stream" ? "streamed, prefetch " + std::to_string(prefetch) : std::string("held in memory (crop from held image)")).c_str(),
                  double(images) / s, (long long)images, s);
    }
  }
  return 0;
}
