// Your own model against the built-in one, in one run: torchvision's ResNet-18 traced by Python (FILE, 10 classes,
// 3x32x32; bench/torchscript_import.sh makes it) is converted by expctl, and its training throughput compared with
// the built-in ResNet18 (same architecture, `stem: imagenet`, 10 classes) on the same random batches. Prints
// figures; asserts nothing.
//
//   build/expctl_bench_torchscript_import FILE [threads=0] [batch=64] [steps=10] [rounds=3]
//
// Conversion: torch::jit::load alone, then import_torchscript() (load + graph translation + the float64 logit
// check), each timed `rounds` times. Training: SGD steps (momentum 0.9, cross-entropy) of each model in turn,
// `steps` per block, `rounds` blocks each, alternating so that drift of the host affects both alike.
#include "runner/models/torchscript_import.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "runner/core/params.h"
#include "runner/metrics/metrics.h"
#include "runner/models/models.h"

using namespace expctl;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Seconds for `steps` SGD steps of `net` on the batch.
double train(models::Network& net, torch::optim::SGD& sgd, const torch::Tensor& x, const torch::Tensor& y, int steps) {
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) {
    sgd.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    sgd.step();
  }
  return seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [threads] [batch] [steps] [rounds]\n", argv[0]);
    return 2;
  }
  const std::string file = argv[1];
  const int threads = metrics::configure_threads(argc > 2 ? std::atoll(argv[2]) : 0);
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 64;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 10;
  const int rounds = argc > 5 ? std::atoi(argv[5]) : 3;

  std::vector<double> load_s, import_s;
  models::ImportedModel imported;
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    torch::jit::load(file);
    load_s.push_back(seconds_since(t));
    imported = models::import_torchscript(file, {3, 32, 32});
    import_s.push_back(imported.seconds);
  }
  std::printf("file %s, %d threads, LibTorch %s\n", file.c_str(), threads, TORCH_VERSION);
  std::printf(
      "conversion (median of %d): torch::jit::load %.3f s; import_torchscript %.3f s (%zu graph nodes, "
      "logits within %.1e of the module's)\n",
      rounds, median(load_s), median(import_s), imported.network->graph().nodes().size(), imported.max_difference);

  std::vector<Diagnostic> diags;
  const models::ModelEntry* entry = models::ModelRegistry::find("ResNet18");
  Params p = validate_block(nullptr, Mark{}, "model", entry->info.params, diags);
  Value no;
  no.v = false;
  p.set("pretrained", no);
  torch::manual_seed(0);
  models::Network builtin = entry->create(p, 10, 3);
  models::Network converted = imported.network;
  const auto macs_b = metrics::count_macs(builtin, 32, 32).macs, macs_c = metrics::count_macs(converted, 32, 32).macs;
  std::printf("MACs at 32x32: built-in %lld, converted %lld\n", static_cast<long long>(macs_b),
              static_cast<long long>(macs_c));

  const auto x = torch::randn({batch, 3, 32, 32});
  const auto y = torch::randint(0, 10, {batch}, torch::kLong);
  builtin->train();
  converted->train();
  torch::optim::SGD sgd_b(builtin->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  torch::optim::SGD sgd_c(converted->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  train(builtin, sgd_b, x, y, 2);  // warm-up: allocator, kernels
  train(converted, sgd_c, x, y, 2);
  std::vector<double> rate_b, rate_c;
  for (int r = 0; r < rounds; ++r) {
    rate_b.push_back(double(batch * steps) / train(builtin, sgd_b, x, y, steps));
    rate_c.push_back(double(batch * steps) / train(converted, sgd_c, x, y, steps));
  }
  std::printf("training, batch %lld, %d steps x %d rounds (median img/s, all rounds):\n", static_cast<long long>(batch),
              steps, rounds);
  auto list = [](const std::vector<double>& v) {
    std::string s;
    for (double d : v) s += (s.empty() ? "" : ", ") + std::to_string(int(d + 0.5));
    return s;
  };
  std::printf("  built-in ResNet18   %8.1f  [%s]\n", median(rate_b), list(rate_b).c_str());
  std::printf("  converted ResNet-18 %8.1f  [%s]\n", median(rate_c), list(rate_c).c_str());
  std::printf("  converted / built-in %.3f\n", median(rate_c) / median(rate_b));
  return 0;
}
