// The sweep/compare summary: its table (Markdown, CSV, JSON), what its accuracies were measured on, its charts
// drawn without a shell whatever the folder and labels hold, and report.json files it cannot use.
#include "runner/sweep/summary.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/core/error.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

sweep::RunSummary run(const std::string& label, double sparsity, double acc, bool masked) {
  sweep::RunSummary r;
  r.run = "sparsity=" + std::to_string(sparsity).substr(0, 3);
  r.scenario = "TS0_X";
  r.label = label;
  r.sparsity = sparsity;
  r.acc_loaded = 90;
  r.acc_pruned = acc;
  r.acc_recovered = std::nan("");
  r.params = 1e6;
  r.size_mb = 4;
  r.compact_size_mb = masked ? 2.5 : 4;
  r.masked = masked;
  r.macs = r.nonzero_macs = 3e7;
  r.base_macs = 6e7;
  r.base_latency_b1_ms = 2;
  r.base_latency_large_ms = 0.5;
  r.latency_b1_ms = 1.5;
  r.latency_large_ms = 0.25;
  r.large_batch = 8;
  r.measured_on = "160 test images, a class-balanced subset of the test split (dataset.test_subset: 160, seed 1)";
  r.measured_on_short = "160 test images (dataset.test_subset)";
  r.report = "/r/report.json";
  return r;
}

std::vector<std::string> files_named_x(const fs::path& dir) {
  std::vector<std::string> found;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    if (it->path().filename() == "X" || it->path().filename() == "Y" || it->path().filename() == "Z")
      found.push_back(it->path().string());
  return found;
}

}  // namespace

TEST(Summary, TableSaysWhatTheAccuracyWasMeasuredOn) {
  test::TempDir tmp;
  sweep::write_summary(tmp / "s", "TS0: NC", {run("NC", 0.5, 80.125, false), run("Wanda", 0.3, 85, true)}, false);
  const std::string md = test::read_file(tmp / "s/summary.md");
  EXPECT_NE(md.find("Unpruned fine-tuned model: 90.00% top-1 on 160 test images, a class-balanced subset of the "
                    "test split (dataset.test_subset: 160, seed 1), 60.0 M MACs"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| NC | 0.50 | sparsity=0.5 | 80.12 | - | 1.00 | 4.00 | - | 30.0 | 30.0 | 1.50 | 0.250 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| Wanda | 0.30 | sparsity=0.3 | 85.00 | - | 1.00 | 4.00 | 2.50 |"), std::string::npos) << md;
  EXPECT_NE(md.find("- Accuracy: top-1 on 160 test images, a class-balanced subset"), std::string::npos) << md;
  EXPECT_EQ(md.find("full test split"), std::string::npos) << md;
  EXPECT_EQ(md.find("Accuracy measured on |"), std::string::npos) << "one evaluation for all: no column";

  const std::string csv = test::read_file(tmp / "s/summary.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "method,sparsity,run,scenario,accuracy_loaded,accuracy_pruned,accuracy_recovered,nonzero_params,size_mb,"
            "compact_size_mb,macs,nonzero_macs,latency_b1_median_ms,large_batch,latency_large_median_ms_per_image,"
            "report,accuracy_measured_on");
  EXPECT_NE(csv.find("\n\"NC\",0.5,\"sparsity=0.5\",\"TS0_X\",90.0,80.125,,1000000.0,4.0,4.0,"), std::string::npos)
      << csv;

  auto j = nlohmann::json::parse(test::read_file(tmp / "s/summary.json"));
  EXPECT_TRUE(j["runs"][0]["accuracy_recovered"].is_null());
  EXPECT_FALSE(j["runs"][0].contains("masked"));
  EXPECT_EQ(j["runs"][1]["compact_size_mb"], 2.5);
  EXPECT_EQ(j["baseline"]["accuracy_measured_on"], run("NC", 0.5, 80, false).measured_on);
}

TEST(Summary, RunsMeasuredOnDifferentImagesSayItPerRow) {
  test::TempDir tmp;
  auto other = run("Wanda", 0.3, 85, false);
  other.measured_on = "the test split (10,000 images)";
  sweep::write_summary(tmp / "s", "TS0: NC vs Wanda", {run("NC", 0.5, 80, false), other}, false);
  const std::string md = test::read_file(tmp / "s/summary.md");
  EXPECT_NE(md.find("| Accuracy measured on |"), std::string::npos) << md;
  EXPECT_NE(md.find("| the test split (10,000 images) |"), std::string::npos) << md;
  EXPECT_NE(md.find("- Accuracy: top-1 on the test images named in each run's row"), std::string::npos) << md;
}

TEST(Summary, HostileFolderTitleAndLabelsRunNoCommandAndTheChartsAreDrawn) {
  test::TempDir tmp;
  test::Cwd cwd(tmp.path());  // where a shell would have run the injected commands
  const fs::path dir = tmp / "sum'; touch X; echo '$(touch Y)`touch Z`";
  const std::string evil = "x'; `touch Z` $(touch Y)\nsystem('touch X')\\";
  sweep::write_summary(dir, "TS0: " + evil, {run(evil, 0.5, 80, false), run("W\"'`touch Z`", 0.3, 85, false)}, true);
  EXPECT_EQ(files_named_x(tmp.path()), std::vector<std::string>{});
  EXPECT_TRUE(fs::exists(dir / "summary.md"));
  if (test::run_shell("command -v gnuplot").exit_code != 0) GTEST_SKIP() << "gnuplot is not installed";
  EXPECT_TRUE(fs::exists(dir / "accuracy_vs_macs.png"));
  EXPECT_TRUE(fs::exists(dir / "accuracy_vs_latency.png"));
  const std::string md = test::read_file(dir / "summary.md");
  EXPECT_NE(md.find("*Top-1 accuracy on 160 test images, a class-balanced subset"), std::string::npos) << md;
  EXPECT_NE(md.find("| x'; `touch Z` $(touch Y) system('touch X')\\ |"), std::string::npos) << md;
}

TEST(Summary, ANullAccuracyInAReportNamesTheFileAndKey) {
  test::TempDir tmp;
  test::write_file(tmp / "report.json", R"j({"scenario": "S", "method": {"label": "NC"}, "rows": [
      {"model": "fine-tuned (loaded)", "accuracy": 90}, {"model": "pruned", "accuracy": null}]})j");
  try {
    sweep::read_run(tmp / "report.json", "plain");
    FAIL() << "read a null accuracy";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), (tmp / "report.json").string() +
                                         ": rows[1].accuracy: null where a number is expected (NaN and infinite "
                                         "values are written as null)");
  }
}

TEST(Summary, EqualMacsPlacesMethodsAtTheSameCostWithoutExtrapolating) {
  auto at = [](const std::string& label, double macs, double acc) {
    sweep::RunSummary r = run(label, 0.5, acc, false);
    r.macs = r.nonzero_macs = macs;
    return r;
  };
  // Two L2 runs at (almost) 30 M MACs, two seeds: one cost level, their mean accuracy.
  const std::vector<sweep::RunSummary> runs{at("NC", 10e6, 80), at("NC", 20e6, 85),   at("NC", 30e6, 88),
                                            at("L2", 15e6, 84), at("L2", 30e6, 89), at("L2", 30.09e6, 87)};
  const auto rows = sweep::equal_macs(runs);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_DOUBLE_EQ(rows[0].macs, 10e6);
  EXPECT_EQ(rows[0].methods.count("L2"), 0u) << "below L2's cheapest run: not extrapolated";
  EXPECT_DOUBLE_EQ(rows[0].methods.at("NC").accuracy, 80);
  EXPECT_FALSE(rows[0].methods.at("NC").interpolated);
  EXPECT_DOUBLE_EQ(rows[1].methods.at("NC").accuracy, 82.5);  // halfway between 10 M and 20 M
  EXPECT_TRUE(rows[1].methods.at("NC").interpolated);
  EXPECT_DOUBLE_EQ(rows[1].methods.at("L2").accuracy, 84);
  const double l2_top = (30e6 + 30.09e6) / 2;
  EXPECT_NEAR(rows[2].methods.at("L2").accuracy, 84 + (20e6 - 15e6) / (l2_top - 15e6) * (88 - 84), 1e-9);
  EXPECT_NEAR(rows[3].macs, (30e6 + 30e6 + 30.09e6) / 3, 1);
  EXPECT_DOUBLE_EQ(rows[3].methods.at("L2").accuracy, 88);
  EXPECT_FALSE(rows[3].methods.at("L2").interpolated);
  EXPECT_DOUBLE_EQ(rows[3].methods.at("NC").accuracy, 88);

  test::TempDir tmp;
  sweep::write_summary(tmp / "s", "TS0: NC vs L2", runs, false);
  const std::string md = test::read_file(tmp / "s/summary.md");
  EXPECT_NE(md.find("## At equal MACs"), std::string::npos) << md;
  EXPECT_NE(md.find("| 15.00 | 84.00 | ~82.50 |"), std::string::npos) << md;  // columns: L2, NC (sorted)
  EXPECT_NE(md.find("| 10.00 | - | 80.00 |"), std::string::npos) << md;
  const auto j = nlohmann::json::parse(test::read_file(tmp / "s/summary.json"));
  EXPECT_EQ(j["equal_macs"].size(), 4u);
  EXPECT_TRUE(j["equal_macs"][1]["methods"]["NC"]["interpolated"].get<bool>());
  const std::string csv = test::read_file(tmp / "s/equal_macs.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "macs,method,accuracy,interpolated");

  // One method: nothing to place side by side.
  sweep::write_summary(tmp / "one", "TS0: NC", {at("NC", 10e6, 80), at("NC", 20e6, 85)}, false);
  EXPECT_EQ(test::read_file(tmp / "one/summary.md").find("At equal MACs"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "one/equal_macs.csv"));
}
