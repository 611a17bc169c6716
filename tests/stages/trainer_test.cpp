// The shared training loop: determinism, resume equals an uninterrupted run, masks stay zero, NaN guard.
#include "runner/stages/trainer.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/models/checkpoint.h"
#include "runner/stages/training_params.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

// 4 classes of 8x8 gray images whose class is the bright quadrant: learnable in a few steps.
data::Split toy_split(int64_t n, uint64_t seed) {
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

models::ResNet tiny_model() {
  torch::manual_seed(3);
  models::ResNetSpec spec;
  spec.num_classes = 4;
  spec.in_channels = 1;
  spec.stem = models::Stem::Cifar;
  spec.stage_widths = {8, 8, 8, 8};
  spec.block_widths = {8, 8, 8, 8, 8, 8, 8, 8};
  return models::make_resnet(spec);
}

Params training_params(int64_t epochs) {
  ParamTable t;
  add_training_params(t, epochs);
  std::vector<Diagnostic> diags;
  Params p = validate_block(nullptr, Mark{}, "finetune", t, diags);
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
};

bool same_weights(models::ResNet& a, models::ResNet& b) {
  auto sa = models::state_dict(*a), sb = models::state_dict(*b);
  for (const auto& kv : sa)
    if (!torch::equal(kv.value(), sb[kv.key()])) return false;
  return true;
}

}  // namespace

TEST(Trainer, SameSeedSameResultAndItLearns) {
  Job a(3), b(3);
  TrainResult ra = train(a.job), rb = train(b.job);
  EXPECT_TRUE(same_weights(a.job.model, b.job.model));
  ASSERT_EQ(ra.history.size(), 3u);
  EXPECT_EQ(ra.history.back().test_accuracy, rb.history.back().test_accuracy);
  EXPECT_GT(ra.history.back().train_accuracy, ra.history.front().train_accuracy - 1e-9);
  EXPECT_EQ(ra.checkpoints.size(), 3u);
  auto ck = models::read_checkpoint(a.job.checkpoint_path(3));
  EXPECT_EQ(ck.meta["epoch"], 3);
  EXPECT_EQ(ck.meta["fingerprint"], "fp");
  EXPECT_DOUBLE_EQ(ck.meta["accuracy"].get<double>(), ra.history.back().test_accuracy);
}

TEST(Trainer, ResumingFromACheckpointEqualsAnUninterruptedRun) {
  Job full(3);
  train(full.job);
  Job part(3);
  train(part.job);
  fs::remove(part.job.checkpoint_path(3));  // as if killed after epoch 2's checkpoint
  fs::remove(models::training_state_path(part.job.checkpoint_path(3)));
  part.job.model = tiny_model();
  TrainResult r = train(part.job);
  EXPECT_EQ(r.resumed_from, 2);
  ASSERT_EQ(r.history.size(), 3u);
  EXPECT_TRUE(same_weights(full.job.model, part.job.model));
  // A checkpoint written for another configuration is not resumed from.
  part.job.fingerprint = "other";
  part.job.model = tiny_model();
  EXPECT_EQ(train(part.job).resumed_from, 0);
}

TEST(Trainer, MaskedWeightsStayExactlyZero) {
  Job j(2);
  auto w = j.job.model->named_parameters()["layer2.0.conv1.weight"];
  torch::manual_seed(9);
  j.job.masks["layer2.0.conv1.weight"] = torch::rand(w.sizes()) > 0.5;
  train(j.job);
  auto trained = j.job.model->named_parameters()["layer2.0.conv1.weight"];
  auto pruned = j.job.masks["layer2.0.conv1.weight"].logical_not();
  EXPECT_EQ(trained.masked_select(pruned).abs().max().item<float>(), 0.0f);
  EXPECT_GT(trained.masked_select(pruned.logical_not()).abs().min().item<float>(), 0.0f);
  models::Checkpoint ck;
  models::load_checkpoint(j.job.checkpoint_path(2), &ck);
  EXPECT_TRUE(torch::equal(ck.masks["layer2.0.conv1.weight"], j.job.masks["layer2.0.conv1.weight"]));
}

TEST(Trainer, NonFiniteLossStopsWithAClearMessage) {
  Job j(1);
  {
    torch::NoGradGuard g;
    j.job.model->named_parameters()["fc.bias"].fill_(std::numeric_limits<float>::quiet_NaN());
  }
  try {
    train(j.job);
    FAIL() << "trained through a NaN loss";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("training diverged: the loss is NaN at epoch 1, step 1"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(j.job.checkpoint_path(1)));
}

TEST(Trainer, TooFewImagesForOneBatchIsAnError) {
  Job j(1);
  j.train = toy_split(8, 1);
  EXPECT_THROW(train(j.job), Error);
}
