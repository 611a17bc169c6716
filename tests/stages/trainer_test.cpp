// The shared training loop: determinism, resume equals an uninterrupted run, masks stay zero, NaN guard.
#include "runner/stages/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "runner/core/error.h"
#include "runner/models/checkpoint.h"
#include "tests/stages/toy_training.h"

namespace fs = std::filesystem;
using namespace expctl;
using namespace expctl::test;

namespace {

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
  first.job.fresh = true;  // --force
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
