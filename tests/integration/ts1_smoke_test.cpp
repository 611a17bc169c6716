// The three TS1 scenarios exactly as shipped, shrunk by --set and fed with stand-ins for the two downloads
// (a CIFAR-10 tarball in the real binary layout and a torchvision-format ResNet-18 file, both made here and
// served as file:// URLs): checks the exact checkpoint and report names the request asks for.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/io/checksum.h"
#include "tests/core/test_util.h"
#include "tests/integration/fakes.h"
#include "tests/io/io_test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

TEST(Ts1Smoke, ExactNamesForFineTuningNeuronCoverageAndWanda) {
  test::TempDir tmp;
  fs::path www = tmp / "www";
  fs::create_directories(www);
  fs::path tarball = www / "cifar-10-binary.tar.gz";
  io::test::make_archive(tarball, io::test::cifar_like_entries(32), io::test::ArchiveFormat::kTarGz);
  fs::path weights = test::write_fake_torchvision_weights(www);
  const fs::path t = tmp.path();
  const std::string sets =
      " --set model.weights_url=file://" + weights.string() + " --set dataset.url=file://" + tarball.string() +
      " --set dataset.md5=" + expctl::md5_file(tarball) + " --set paths.checkpoints=" + (t / "checkpoints").string() +
      " --set paths.models=" + (t / "downloaded_models").string() +
      " --set paths.datasets=" + (t / "downloaded_datasets").string() +
      " --set runtime.threads=2 --set finetune.epochs=2 --set finetune.save_every=1 --set finetune.batch_size=32"
      " --set recover.epochs=1 --set recover.batch_size=32 --set report.latency.warmup=1 --set report.latency.repeats=1"
      " --set report.latency.large_batch=4 --set report.latency.large_batch_repeats=1 --set report.plot=false";
  const std::string ts1 = "configs/test_scenarios/TS1/";

  auto r = test::run_expctl("run " + ts1 + "finetune.yaml" + sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_expctl("run " + ts1 + "nc.yaml" + sets + " --set prune.calibration.samples=16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_expctl("run " + ts1 + "wanda.yaml" + sets + " --set prune.calibration.samples=8");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  for (const char* f : {"TS1/ResNet18_CIFAR10_FT_1.pt", "TS1/ResNet18_CIFAR10_FT_2.pt",
                        "TS1/ResNet18_CIFAR10_FTAP_NC_1.pt", "TS1/ResNet18_CIFAR10_FTAP_W_1.pt"})
    EXPECT_TRUE(fs::exists(t / "checkpoints" / f)) << f;
  for (const char* d :
       {"TS1_FineTuning_ResNet18_CIFAR10", "TS1_NeuronCoverage_ResNet18_CIFAR10", "TS1_Wanda_ResNet18_CIFAR10"})
    for (const char* f : {"report.md", "report.csv", "report.json", "resolved.yaml", "run.log"})
      EXPECT_TRUE(fs::exists(t / "checkpoints" / d / f)) << d << "/" << f;
  EXPECT_TRUE(fs::exists(t / "downloaded_models" / weights.filename()));
  EXPECT_TRUE(fs::exists(t / "downloaded_datasets/CIFAR10/cifar-10-batches-bin/test_batch.bin"));

  // The fine-tuning report compares the adapted pretrained model with the fine-tuned one; cifar stem at 32x32
  // with 10 classes is 555,422,720 MACs.
  auto rep = nlohmann::json::parse(test::read_file(t / "checkpoints/TS1_FineTuning_ResNet18_CIFAR10/report.json"));
  ASSERT_EQ(rep["rows"].size(), 2u);
  EXPECT_EQ(rep["rows"][0]["macs"], 555422720);
  // The pruning reports start from the last fine-tuning checkpoint.
  auto nc =
      nlohmann::json::parse(test::read_file(t / "checkpoints/TS1_NeuronCoverage_ResNet18_CIFAR10/prune_metrics.json"));
  EXPECT_EQ(nc["source_checkpoint"], (t / "checkpoints/TS1/ResNet18_CIFAR10_FT_2.pt").string());
  EXPECT_NE(test::read_file(t / "checkpoints/TS1_Wanda_ResNet18_CIFAR10/report.md").find("## Sparsity per layer"),
            std::string::npos);
  EXPECT_NE(
      test::read_file(t / "checkpoints/TS1_NeuronCoverage_ResNet18_CIFAR10/report.md").find("## Channels per group"),
      std::string::npos);
}
