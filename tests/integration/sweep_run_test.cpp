// A real sweep through the expctl binary on tiny Fashion-MNIST data: the TS0 Neuron Coverage sweep (3 cells from one
// fine-tuned model), its summary, a rerun that skips the finished cells, and `expctl compare` against a plain Wanda
// run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

TEST(SweepRun, RunsEveryCellOnceSummarisesAndCompares) {
  test::TempDir tmp;
  const fs::path t = tmp.path();
  const std::string sets =
      " --set paths.checkpoints=" + (t / "ckpt").string() + " --set paths.datasets=" + (t / "data").string() +
      " --set paths.models=" + (t / "models").string() + " --set paths.reports=" + (t / "reports").string() +
      " --set dataset.train_subset=256 --set dataset.test_subset=128 --set runtime.threads=2"
      " --set finetune.epochs=1 --set finetune.batch_size=32 --set recover.epochs=1 --set recover.batch_size=32"
      " --set report.latency.warmup=1 --set report.latency.repeats=2 --set report.latency.large_batch=8"
      " --set report.latency.large_batch_repeats=1 --set report.plot=false";
  const std::string ts0 = "configs/test_scenarios/TS0/";
  auto r = test::run_expctl("run " + ts0 + "finetune.yaml" + sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_expctl("sweep " + ts0 + "nc.yaml" + sets + " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Each cell in its own folder, from the one fine-tuned model; the plain run's folders untouched.
  const fs::path nc = t / "ckpt/TS0_NeuronCoverage_ResNet18_FashionMNIST";
  for (const char* cell : {"sparsity=0.3", "sparsity=0.5", "sparsity=0.7"}) {
    EXPECT_TRUE(fs::exists(nc / "sweep" / cell / "report.json")) << cell;
    EXPECT_TRUE(fs::exists(nc / "sweep" / cell / "ResNet18_FashionMNIST_FTAP_NC_1.pt")) << cell;
    auto rep = nlohmann::json::parse(test::read_file(nc / "sweep" / cell / "report.json"));
    EXPECT_EQ(rep["rows"][0]["checkpoint"], (t / "ckpt/TS0/ResNet18_FashionMNIST_FT_1.pt").string());
    EXPECT_EQ(rep["sweep_cell"]["id"], cell);
  }
  EXPECT_FALSE(fs::exists(nc / "report.json"));
  EXPECT_FALSE(fs::exists(t / "ckpt/TS0/ResNet18_FashionMNIST_FTAP_NC_1.pt"));

  const fs::path sum = t / "reports/TS0/TS0_NeuronCoverage_ResNet18_FashionMNIST_sweep";
  auto s = nlohmann::json::parse(test::read_file(sum / "summary.json"));
  ASSERT_EQ(s["runs"].size(), 3u);
  double last_macs = 1e18;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(s["runs"][i]["method"], "Neuron Coverage");
    EXPECT_DOUBLE_EQ(s["runs"][i]["sparsity"].get<double>(), (std::vector<double>{0.3, 0.5, 0.7}[i]));
    // More channels removed: fewer MACs, and structured pruning removes them for real.
    double macs = s["runs"][i]["macs"];
    EXPECT_LT(macs, last_macs);
    EXPECT_LT(macs, s["baseline"]["macs"].get<double>());
    EXPECT_EQ(s["runs"][i]["nonzero_macs"], s["runs"][i]["macs"]);
    last_macs = macs;
  }
  EXPECT_NE(test::read_file(sum / "summary.md").find("| Neuron Coverage | 0.50 | sparsity=0.5 |"), std::string::npos);
  const std::string csv = test::read_file(sum / "summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);  // header + 3 cells

  // A rerun skips the finished cells.
  r = test::run_expctl("sweep " + ts0 + "nc.yaml" + sets + " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cell 3/3 sparsity=0.7 (prune.sparsity=0.7): finished earlier"), std::string::npos);
  EXPECT_EQ(r.output.find("stage recover: start"), std::string::npos) << r.output;
  r = test::run_expctl("sweep " + ts0 + "nc.yaml" + sets + " --set prune.calibration.samples=32 --list");
  EXPECT_NE(r.output.find("  1  sparsity=0.5  finished  "), std::string::npos) << r.output;

  // Compare: the NC sweep's cells against the plain Wanda run.
  r = test::run_expctl("compare " + ts0 + "nc.yaml " + ts0 + "wanda.yaml" + sets +
                       " --set prune.calibration.samples=32 --no-plot");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("wanda.yaml: no finished run; make one with `expctl run configs/test_scenarios/TS0/wanda.yaml`"),
            std::string::npos)
      << r.output;
  r = test::run_expctl("run " + ts0 + "wanda.yaml" + sets + " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_expctl("compare " + ts0 + "nc.yaml " + ts0 + "wanda.yaml" + sets +
                       " --set prune.calibration.samples=32 --no-plot");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto c = nlohmann::json::parse(
      test::read_file(t / "reports/TS0/compare_NeuronCoverage_vs_Wanda/summary.json"));
  ASSERT_EQ(c["runs"].size(), 4u);
  EXPECT_EQ(c["runs"][3]["method"], "Wanda");
  EXPECT_EQ(c["runs"][3]["run"], "plain");
  EXPECT_LT(c["runs"][3]["nonzero_macs"].get<double>(), c["runs"][3]["macs"].get<double>());
  EXPECT_TRUE(c.contains("equal_macs")) << "two methods are placed at equal cost";

  // NC against the group-L2 baseline: the same budget rules remove the same channel counts, so at every sparsity
  // both methods have a run at exactly the same MACs and the equal-cost table compares measured values only.
  r = test::run_expctl("sweep " + ts0 + "group_l2.yaml" + sets + " --set prune.calibration.samples=32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_expctl("compare " + ts0 + "nc.yaml " + ts0 + "group_l2.yaml" + sets +
                       " --set prune.calibration.samples=32 --no-plot");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path cmp = t / "reports/TS0/compare_NeuronCoverage_vs_GroupL2";
  c = nlohmann::json::parse(test::read_file(cmp / "summary.json"));
  ASSERT_EQ(c["runs"].size(), 6u);
  ASSERT_EQ(c["equal_macs"].size(), 3u) << c["equal_macs"];
  for (const auto& level : c["equal_macs"]) {
    ASSERT_EQ(level["methods"].size(), 2u) << level;
    for (const char* m : {"Group L2", "Neuron Coverage"}) EXPECT_FALSE(level["methods"][m]["interpolated"].get<bool>());
  }
  EXPECT_NE(test::read_file(cmp / "summary.md").find("## At equal MACs"), std::string::npos);
  EXPECT_NE(r.output.find("| MACs (M) | Group L2 | Neuron Coverage |"), std::string::npos) << r.output;
}

}  // namespace
