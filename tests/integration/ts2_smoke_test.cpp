// The TS2 demo (MobileNetV2 and VGG-16-BN, YAML only) in smoke size: Fashion-MNIST from Debian's package through
// fine-tuning, Neuron Coverage and Wanda with recovery, the reports and the TorchScript exports.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

TEST(Ts2Smoke, MobileNetV2AndVgg16BnRunFineTuningAndBothPruners) {
  test::TempDir tmp;
  const std::string sets =
      " --set paths.checkpoints=" + (tmp.path() / "ckpt").string() + " --set paths.datasets=" +
      (tmp.path() / "data").string() + " --set paths.models=" + (tmp.path() / "models").string() +
      " --set dataset.train_subset=160 --set dataset.test_subset=80 --set runtime.threads=2"
      " --set finetune.epochs=1 --set finetune.batch_size=32 --set recover.epochs=1 --set recover.batch_size=32"
      " --set report.latency.warmup=1 --set report.latency.repeats=2 --set report.latency.large_batch=8"
      " --set report.latency.large_batch_repeats=1";
  auto report = [&](const std::string& scenario) {
    return nlohmann::json::parse(test::read_file(tmp.path() / "ckpt" / scenario / "report.json"));
  };
  for (const std::string model : {"MobileNetV2", "VGG16_BN"}) {
    SCOPED_TRACE(model);
    auto run = [&](const std::string& file, const std::string& extra = "") {
      return test::run_expctl("run configs/test_scenarios/TS2/" + model + "/" + file + sets + extra);
    };
    auto r = run("finetune.yaml");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto rep = report("TS2_FineTuning_" + model + "_FashionMNIST");
    EXPECT_EQ(rep["input"], nlohmann::json({1, 28, 28}));
    ASSERT_EQ(rep["rows"].size(), 2u);

    r = run("nc.yaml", " --set prune.calibration.samples=32");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string nc = "TS2_NeuronCoverage_" + model + "_FashionMNIST";
    rep = report(nc);
    ASSERT_EQ(rep["rows"].size(), 3u);
    EXPECT_LT(rep["rows"][1]["macs"].get<double>(), 0.8 * rep["rows"][0]["macs"].get<double>());
    EXPECT_LT(rep["rows"][1]["params"].get<double>(), rep["rows"][0]["params"].get<double>());
    // The pruned, recovered model leaves expctl as TorchScript; C++'s torch::jit runs it.
    torch::jit::Module exported = torch::jit::load((tmp.path() / "ckpt" / nc / "model.torchscript.pt").string());
    const auto logits = exported.forward({torch::zeros({2, 1, 28, 28})}).toTensor();
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 10}));

    r = run("wanda.yaml", " --set prune.calibration.samples=32");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    rep = report("TS2_Wanda_" + model + "_FashionMNIST");
    EXPECT_LT(rep["rows"][2]["nonzero_macs"].get<double>(), 0.7 * rep["rows"][2]["macs"].get<double>());
  }
}
