// The shared training loop: determinism, resume equals an uninterrupted run, masks stay zero, NaN guard.
#include "runner/training/trainer.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <torch/torch.h>

#include <sstream>

#include "runner/core/error.h"
#include "runner/metrics/environment.h"
#include "runner/models/checkpoint.h"
#include "tests/training/toy_training.h"

namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using namespace expctl;
using namespace expctl::test;

namespace {

bool same_weights(models::Network a, models::Network b) {
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

TEST(Trainer, AnExplodedFiniteLossStopsToo) {
  Job j(1);
  {
    torch::NoGradGuard g;
    j.job.model->named_parameters()["fc.bias"][0].fill_(1e6);  // logits a million apart: loss ~7.5e5
  }
  try {
    train(j.job);
    FAIL() << "trained through an exploded loss";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("training diverged: the loss is "), std::string::npos) << m;
    EXPECT_NE(m.find(" (above 1e+04) at epoch 1, step 1"), std::string::npos) << m;
  }
}

TEST(Trainer, ANonFiniteTestLossStopsBeforeTheEpochIsSaved) {
  // NaN running statistics: training (batch statistics) is fine, evaluation (running statistics) is not.
  Job j(2);
  {
    torch::NoGradGuard g;
    j.job.model->named_buffers()["bn1.running_mean"].fill_(std::numeric_limits<float>::quiet_NaN());
  }
  try {
    train(j.job);
    FAIL() << "saved an epoch whose test loss is NaN";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("training diverged: the test loss is NaN after epoch 1 (training loss "),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(j.job.checkpoint_path(1)));
}

TEST(Trainer, ATrainingStateSavedWithAnotherCheckpointIsNotResumed) {
  // A kill between writing epoch 2's checkpoint and its training state leaves an earlier run's state beside it.
  Job run(2), other(2);
  other.job.fingerprint = "another configuration";
  train(run.job);
  train(other.job);
  const fs::path state2 = models::training_state_path(run.job.checkpoint_path(2));
  fs::copy_file(models::training_state_path(other.job.checkpoint_path(2)), state2,
                fs::copy_options::overwrite_existing);
  run.job.model = tiny_model();
  TrainResult r = train(run.job);
  EXPECT_EQ(r.resumed_from, 1);  // epoch 1's checkpoint and state belong together
  ASSERT_EQ(r.history.size(), 2u);
  // The same with a state of this configuration but another run: the ids differ.
  Job again(2);
  train(again.job);
  fs::copy_file(models::training_state_path(again.job.checkpoint_path(2)), state2,
                fs::copy_options::overwrite_existing);
  run.job.model = tiny_model();
  EXPECT_EQ(train(run.job).resumed_from, 1);
}

TEST(Trainer, AFreshJobTrainsFromScratchAndRemovesThePreviousRun) {
  Job first(2), reference(2);
  train(first.job);
  train(reference.job);
  fs::copy_file(first.job.checkpoint_path(2), first.job.interrupt_path);  // a stale interrupt file too
  first.job.fresh = true;                                                 // --force
  first.job.model = tiny_model();
  TrainResult r = train(first.job);
  EXPECT_EQ(r.resumed_from, 0);
  ASSERT_EQ(r.history.size(), 2u);  // it trained both epochs again
  EXPECT_TRUE(same_weights(first.job.model, reference.job.model));
  EXPECT_FALSE(fs::exists(first.job.interrupt_path));
}

TEST(Trainer, TooFewImagesForOneBatchIsAnError) {
  Job j(1);
  j.train = toy_split(8, 1);
  EXPECT_THROW(train(j.job), Error);
}

TEST(Trainer, PrecisionAutoFollowsTheDeviceAndTheCpusBf16) {
  const metrics::Bf16Support native{true, "AVX512_BF16"}, emulated{false, "no AVX512_BF16 or AMX-BF16 (x86-64)"};
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA);
  TrainPrecision p = choose_precision("auto", true, cpu, native);
  EXPECT_TRUE(p.bf16);
  EXPECT_EQ(p.name(), "bf16 autocast + channels_last");
  EXPECT_NE(p.why.find("AVX512_BF16"), std::string::npos) << p.why;
  p = choose_precision("auto", true, cpu, emulated);
  EXPECT_FALSE(p.bf16);
  EXPECT_EQ(p.name(), "fp32 + channels_last");
  EXPECT_NE(p.why.find("no AVX512_BF16"), std::string::npos) << p.why;
  EXPECT_TRUE(choose_precision("auto", true, cuda, emulated).bf16);
  EXPECT_FALSE(choose_precision("fp32", true, cuda, native).bf16);
  p = choose_precision("bf16", false, cpu, emulated);  // forced: taken, with the reason it is slow
  EXPECT_TRUE(p.bf16);
  EXPECT_EQ(p.name(), "bf16 autocast");
  EXPECT_NE(p.why.find("emulates"), std::string::npos) << p.why;
  const nlohmann::json j = p.to_json();
  EXPECT_EQ(j["requested"], "bf16");
  EXPECT_EQ(j["forward"], "bf16 autocast");
  EXPECT_EQ(j["weights"], "fp32");
}

TEST(Trainer, Bf16AutocastOnTheCpuKeepsWeightsStateAndMasksFp32) {
  // Forced bf16 on whatever CPU this is (emulated where it has no native bf16: slow, but correct).
  for (const char* precision : {"bf16", "fp32"}) {
    SCOPED_TRACE(precision);
    Job j(1);
    Value v;
    v.v = std::string(precision);
    j.params.set("precision", v);
    auto w = j.job.model->named_parameters()["layer2.0.conv1.weight"];
    torch::manual_seed(9);
    j.job.masks["layer2.0.conv1.weight"] = torch::rand(w.sizes()) > 0.5;
    const TrainResult r = train(j.job);
    EXPECT_EQ(r.precision.bf16, std::string(precision) == "bf16");
    EXPECT_TRUE(r.precision.channels_last);
    for (const auto& kv : j.job.model->named_parameters()) {
      EXPECT_EQ(kv.value().scalar_type(), torch::kFloat) << kv.key();
      if (kv.value().dim() == 4) EXPECT_TRUE(kv.value().is_contiguous(at::MemoryFormat::ChannelsLast)) << kv.key();
    }
    for (const auto& b : j.job.model->buffers())
      if (b.is_floating_point()) EXPECT_EQ(b.scalar_type(), torch::kFloat);
    auto trained = j.job.model->named_parameters()["layer2.0.conv1.weight"];
    EXPECT_EQ(trained.masked_select(j.job.masks["layer2.0.conv1.weight"].logical_not()).abs().max().item<float>(),
              0.0f);
    EXPECT_TRUE(std::isfinite(r.history.back().train_loss));
    // The checkpoint holds fp32 weights in the standard layout, and they load into a model that evaluates.
    const auto ck = models::read_checkpoint(j.job.checkpoint_path(1));
    for (const auto& kv : ck.state_dict) {
      if (kv.value().is_floating_point()) EXPECT_EQ(kv.value().scalar_type(), torch::kFloat) << kv.key();
      EXPECT_TRUE(kv.value().is_contiguous()) << kv.key();
    }
    const nlohmann::ordered_json summary = training_summary(r, "S", torch::kCPU, nlohmann::json::object(), "x.pt");
    EXPECT_EQ(summary["precision"]["forward"], std::string(precision) == "bf16" ? "bf16 autocast" : "fp32");
  }
}

TEST(Trainer, ChannelsLastAndContiguousTrainingGiveTheSameResultWithinRounding) {
  Job a(2), b(2);
  Value off;
  off.v = false;
  b.params.set("channels_last", off);
  const TrainResult ra = train(a.job), rb = train(b.job);
  EXPECT_TRUE(ra.precision.channels_last);
  EXPECT_FALSE(rb.precision.channels_last);
  // The first epoch's mean loss (bf16 on CPUs that have it): later epochs drift apart as rounding differences grow
  // through BN on batches of 16, by 0.07 at epoch 2 once another test of the process has set one BLAS thread.
  EXPECT_NEAR(ra.history.front().train_loss, rb.history.front().train_loss, 0.05);
  // One forward and backward in each layout: the same gradients up to summation order. (After a few SGD steps on
  // this tiny model the weights differ by a few percent: BN on batches of 16 amplifies rounding differences.)
  models::GraphNet contiguous = tiny_model(), nhwc = models::copy_model(contiguous);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : nhwc->parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
  const data::Split batch = toy_split(16, 3);
  const torch::Tensor x = batch.images.to(torch::kFloat) / 255.0;
  F::cross_entropy(contiguous->forward(x), batch.labels).backward();
  F::cross_entropy(nhwc->forward(x.contiguous(at::MemoryFormat::ChannelsLast)), batch.labels).backward();
  auto ga = contiguous->named_parameters(), gb = nhwc->named_parameters();
  for (const auto& kv : ga)
    EXPECT_TRUE(torch::allclose(kv.value().grad(), gb[kv.key()].grad(), 1e-4, 1e-5)) << kv.key();
}

TEST(Trainer, EveryEpochRecordsItsHealth) {
  Job a(2);
  auto lines = std::make_shared<std::ostringstream>();
  a.job.log = std::make_shared<spdlog::logger>("health", std::make_shared<spdlog::sinks::ostream_sink_mt>(*lines));
  const TrainResult r = train(a.job);
  ASSERT_EQ(r.history.size(), 2u);
  for (const EpochRecord& h : r.history) {
    EXPECT_EQ(h.steps, 64 / 16);
    EXPECT_GE(h.data_wait_seconds, 0.0);
    EXPECT_GT(h.forward_seconds, 0.0);
    EXPECT_GT(h.backward_seconds, 0.0);
    EXPECT_GT(h.optimizer_seconds, 0.0);
    EXPECT_LE(h.data_wait_seconds + h.forward_seconds + h.backward_seconds + h.optimizer_seconds, h.seconds)
        << "the phases are parts of the epoch's training time";
    EXPECT_GT(h.cpu_seconds, 0.0);
    EXPECT_GE(h.system_time_share, 0.0);
    EXPECT_LE(h.system_time_share, 1.0);
    EXPECT_GE(h.page_faults, 0);
    // Kept in the checkpoint's training state and the metrics file as they are.
    const EpochRecord back = EpochRecord::from_json(h.to_json());
    EXPECT_EQ(back.steps, h.steps);
    EXPECT_EQ(back.page_faults, h.page_faults);
    EXPECT_DOUBLE_EQ(back.system_time_share, h.system_time_share);
    EXPECT_DOUBLE_EQ(back.backward_seconds, h.backward_seconds);
  }
  const std::string log = lines->str();
  EXPECT_NE(log.find("epoch 2: 4 steps: data "), std::string::npos) << log;
  EXPECT_NE(log.find("% in the kernel; "), std::string::npos) << log;
  EXPECT_NE(log.find(" page faults ("), std::string::npos) << log;
  // A record of an earlier version (no health figures) still reads.
  nlohmann::json old = r.history[0].to_json();
  for (const char* key : {"steps", "data_wait_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds",
                          "cpu_seconds", "system_time_share", "page_faults"})
    old.erase(key);
  EXPECT_EQ(EpochRecord::from_json(old).page_faults, 0);
}

TEST(Trainer, ASlowEpochSaysWhy) {
  EpochRecord h;
  h.seconds = 10;
  h.steps = 100;
  h.system_time_share = 0.05;
  h.data_wait_seconds = 0.5;
  EXPECT_EQ(h.health_warning(), "");
  h.system_time_share = 0.29;
  h.page_faults = 4774442;
  EXPECT_EQ(h.health_warning(),
            "the kernel took 29% of the CPU time (4774442 page faults): memory is mapped and unmapped at every step; "
            "is EXPCTL_MALLOC=default set, or is the machine short of memory?");
  h.system_time_share = 0.05;
  h.data_wait_seconds = 2.5;
  EXPECT_EQ(h.health_warning(), "the steps waited 2.5 s of 10.0 s for data");
  h.decoded_images = 1000;
  EXPECT_EQ(h.health_warning(), "the steps waited 2.5 s of 10.0 s for data: raise dataset.workers or dataset.prefetch");
}
