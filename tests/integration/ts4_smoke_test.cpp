// The TS4 demo (your own TorchScript CNN, YAML only) in smoke size: a CNN traced in Python for 1x28x28 images is
// fine-tuned from its file on Fashion-MNIST, pruned with Neuron Coverage (structured) and Wanda and recovered; the
// report and the TorchScript export follow. Bad model blocks are refused with the file, line and key.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

std::string trace_hand_cnn(const fs::path& out, int seed = 0) {
  const auto r =
      test::run_shell("/usr/bin/python3 " + std::string(EXPCTL_SOURCE_DIR) +
                      "/tests/models/torchscript_models.py trace hand1 " + out.string() + " " + std::to_string(seed));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return out.string();
}

}  // namespace

TEST(Ts4Smoke, YourOwnTorchScriptCnnRunsFineTuningAndBothPruners) {
  test::TempDir tmp;
  const std::string model = trace_hand_cnn(tmp.path() / "hand_cnn.pt");
  const std::string sets =
      " --set model.file=" + model + " --set paths.checkpoints=" + (tmp.path() / "ckpt").string() +
      " --set paths.datasets=" + (tmp.path() / "data").string() +
      " --set paths.models=" + (tmp.path() / "models").string() +
      " --set dataset.train_subset=160 --set dataset.test_subset=80 --set runtime.threads=2"
      " --set finetune.epochs=1 --set finetune.batch_size=32 --set recover.epochs=1 --set recover.batch_size=32"
      " --set report.latency.warmup=1 --set report.latency.repeats=2 --set report.latency.large_batch=8"
      " --set report.latency.large_batch_repeats=1";
  auto run = [&](const std::string& file, const std::string& extra = "") {
    return test::run_expctl("run configs/test_scenarios/TS4/" + file + sets + extra);
  };
  auto report = [&](const std::string& scenario) {
    return nlohmann::json::parse(test::read_file(tmp.path() / "ckpt" / scenario / "report.json"));
  };
  auto r = run("finetune.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("logits match the TorchScript module's within"), std::string::npos) << r.output;
  // Scenarios and checkpoints are named after the file.
  auto rep = report("TS4_FineTuning_hand-cnn_FashionMNIST");
  ASSERT_EQ(rep["rows"].size(), 2u);
  EXPECT_TRUE(fs::exists(tmp.path() / "ckpt" / "TS4" / "hand-cnn_FashionMNIST_FT_1.pt"));

  r = run("nc.yaml", " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string nc = "TS4_NeuronCoverage_hand-cnn_FashionMNIST";
  rep = report(nc);
  ASSERT_EQ(rep["rows"].size(), 3u);
  EXPECT_LT(rep["rows"][1]["macs"].get<double>(), 0.8 * rep["rows"][0]["macs"].get<double>());
  torch::jit::Module exported = torch::jit::load((tmp.path() / "ckpt" / nc / "model.torchscript.pt").string());
  EXPECT_EQ(exported.forward({torch::zeros({2, 1, 28, 28})}).toTensor().sizes(), (std::vector<int64_t>{2, 10}));

  r = run("wanda.yaml", " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  rep = report("TS4_Wanda_hand-cnn_FashionMNIST");
  EXPECT_LT(rep["rows"][2]["nonzero_macs"].get<double>(), 0.7 * rep["rows"][2]["macs"].get<double>());

  // The same file traced again is the same model; a changed file is a changed model, so the fine-tuning runs again.
  trace_hand_cnn(tmp.path() / "hand_cnn.pt");
  r = run("finetune.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stage finetune: up to date"), std::string::npos) << r.output;
  trace_hand_cnn(tmp.path() / "hand_cnn.pt", 1);
  r = run("finetune.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stage finetune: running it again: its input " + (tmp.path() / "hand_cnn.pt").string() +
                          " changed since it last ran"),
            std::string::npos)
      << r.output;
}

TEST(Ts4Smoke, BadModelBlocksNameTheKeyAndTheFile) {
  test::TempDir tmp;
  const std::string model = trace_hand_cnn(tmp.path() / "hand_cnn.pt");
  auto validate = [&](const std::string& extra) {
    return test::run_expctl("validate configs/test_scenarios/TS4/finetune.yaml --set model.file=" + model + extra);
  };
  auto r = validate(" --set model.num_classes=7");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.num_classes: must be 10, the classes of Fashion-MNIST"), std::string::npos)
      << r.output;
  r = validate(" --set model.input=[3,28]");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.input: expected 3 positive integers [channels, height, width], got 2"),
            std::string::npos)
      << r.output;
  r = validate(" --set model.input=[1,32,32]");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.input: is 32x32, but Fashion-MNIST images are 28x28"), std::string::npos) << r.output;
  r = test::run_expctl("validate configs/test_scenarios/TS4/finetune.yaml --set model.file=/nonexistent/m.pt");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.file: file not found: /nonexistent/m.pt"), std::string::npos) << r.output;
  // In the file itself: the line of the key.
  const fs::path yaml = tmp.path() / "bad.yaml";
  test::write_file(yaml,
                   "schema: 1\nscenario: {test_scenario: TS4, method: FineTuning}\nmodel:\n  name: TorchScript\n"
                   "  file: " +
                       model +
                       "\n  input: [2, 28, 28]\ndataset: {name: FashionMNIST}\n"
                       "stages: [finetune]\n");
  r = test::run_expctl("validate " + yaml.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(yaml.string() + ":6:10: model.input: the model reads 2-channel images, Fashion-MNIST has 1"),
            std::string::npos)
      << r.output;
}
