// A toy training job shared by the trainer tests and the device tests: 4 classes of 8x8 gray images whose class is
// the bright quadrant (learnable in a few steps), a ResNet with 8 channels per layer, and a TrainJob writing into
// a temporary folder.
#pragma once
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "runner/models/zoo.h"
#include "runner/training/trainer.h"
#include "runner/training/training_params.h"
#include "tests/core/test_util.h"

namespace expctl::test {

inline data::Split toy_split(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto labels = torch::randint(0, 4, {n}, torch::kLong);
  auto images = torch::randint(0, 60, {n, 1, 8, 8}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    int64_t q = labels[i].item<int64_t>();
    images[i].slice(1, (q / 2) * 4, (q / 2) * 4 + 4).slice(2, (q % 2) * 4, (q % 2) * 4 + 4) += 180;
  }
  data::Split s;
  s.images = images.to(torch::kUInt8);
  s.labels = labels;
  s.num_classes = 4;
  s.source = "toy";
  return s;
}

inline models::GraphNet tiny_model() {
  torch::manual_seed(3);
  models::ResNetSpec spec;
  spec.num_classes = 4;
  spec.in_channels = 1;
  spec.stem = models::Stem::Cifar;
  spec.stage_widths = {8, 8, 8, 8};
  spec.block_widths = {8, 8, 8, 8, 8, 8, 8, 8};
  return models::make_resnet(spec);
}

inline Params training_params(int64_t epochs) {
  std::vector<Diagnostic> diags;
  Params p = validate_block(nullptr, Mark{}, "finetune", training_binder(epochs).table(), diags);
  Value v;
  v.v = int64_t(16);
  p.set("batch_size", v);
  v.v = int64_t(1);
  p.set("save_every", v);
  return p;
}

struct Job {
  test::TempDir tmp;
  data::Split train = toy_split(64, 1), test = toy_split(32, 2);
  Params params;
  TrainJob job;
  explicit Job(int64_t epochs) : params(training_params(epochs)) {
    job.model = tiny_model();
    job.train = &train;
    job.test = &test;
    job.params = &params;
    job.seed = 5;
    job.augment = {1, true};
    job.checkpoint_path = [this](int64_t e) { return tmp / ("M_FT_" + std::to_string(e) + ".pt"); };
    job.interrupt_path = tmp / "interrupted.pt";
    job.fingerprint = "fp";
    job.log = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  }
  /// Moves both splits to `device` and trains there.
  void on(const torch::Device& device) {
    train = train.to(device);
    test = test.to(device);
    job.device = device;
  }
};

}  // namespace expctl::test
