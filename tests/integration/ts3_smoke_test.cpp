// The TS3 demo (your own images) in smoke size: Fashion-MNIST written as a PNG image folder by
// scripts/fashion_mnist_png.py (20 images per class and split), streamed at 64x64 with torchvision's transforms
// through fine-tuning, Neuron Coverage and Wanda with recovery, and the reports.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

TEST(Ts3Smoke, AnImageFolderRunsFineTuningAndBothPrunersStreamed) {
  test::TempDir tmp;
  const fs::path folder = tmp.path() / "png";
  auto made = test::run_shell("/usr/bin/python3 " + std::string(EXPCTL_SOURCE_DIR) +
                              "/scripts/fashion_mnist_png.py " + folder.string() + " --per-class 20");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ASSERT_FALSE(fs::exists(folder.string() + ".partial"));
  const std::string sets =
      " --set paths.checkpoints=" + (tmp.path() / "ckpt").string() + " --set paths.datasets=" +
      (tmp.path() / "data").string() + " --set dataset.path=" + folder.string() +
      " --set dataset.train_subset=0 --set dataset.test_subset=0 --set runtime.threads=2"
      " --set finetune.epochs=1 --set finetune.batch_size=40 --set finetune.optimizer.lr=0.01"
      " --set recover.batch_size=40 --set report.latency.warmup=1 --set report.latency.repeats=2"
      " --set report.latency.large_batch=8 --set report.latency.large_batch_repeats=1";
  auto run = [&](const std::string& file, const std::string& extra = "") {
    return test::run_expctl("run configs/test_scenarios/TS3/" + file + sets + extra);
  };
  auto report = [&](const std::string& scenario) {
    return nlohmann::json::parse(test::read_file(tmp.path() / "ckpt" / scenario / "report.json"));
  };

  auto r = run("finetune.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("images decoded at"), std::string::npos) << "the streamed loader reports its throughput";
  const auto history = nlohmann::json::parse(test::read_file(
      tmp.path() / "ckpt/TS3_FineTuning_ResNet18_ImageFolder/finetune_metrics.json"))["history"];
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0]["decoded_images"].get<int64_t>(), 200) << "5 batches of 40: every training image once";
  auto rep = report("TS3_FineTuning_ResNet18_ImageFolder");
  EXPECT_EQ(rep["input"], nlohmann::json({1, 64, 64}));
  ASSERT_EQ(rep["rows"].size(), 2u);

  r = run("nc.yaml", " --set prune.calibration.samples=40");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  rep = report("TS3_NeuronCoverage_ResNet18_ImageFolder");
  ASSERT_EQ(rep["rows"].size(), 3u);
  EXPECT_LT(rep["rows"][1]["macs"].get<double>(), 0.8 * rep["rows"][0]["macs"].get<double>());

  r = run("wanda.yaml", " --set prune.calibration.samples=40");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  rep = report("TS3_Wanda_ResNet18_ImageFolder");
  EXPECT_LT(rep["rows"][2]["nonzero_macs"].get<double>(), 0.7 * rep["rows"][2]["macs"].get<double>());
}
