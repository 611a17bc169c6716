// The report stage on metrics files written here (tiny models, no training): what its accuracy statements and
// captions say the accuracy was measured on, the file and key it names when a metric is null, and a report
// folder whose name is shell and gnuplot syntax.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "plugins/coverage/deepgauge.h"
#include "plugins/neuron_coverage/neuron_coverage.h"
#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/data/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/deployment.h"
#include "runner/pipeline/pipeline.h"
#include "tests/data/idx_files.h"
#include "tests/training/toy_training.h"

namespace fs = std::filesystem;
using namespace expctl;
using json = nlohmann::json;

namespace {

std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s)
    out += c == '\n' ? std::string("\\n") : c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}

json history(const json& second_test_loss = 1.5) {
  return {{{"epoch", 1}, {"train_loss", 2.0}, {"test_loss", 1.8}, {"train_accuracy", 30.0}, {"test_accuracy", 35.0}},
          {{"epoch", 2},
           {"train_loss", 1.2},
           {"test_loss", second_test_loss},
           {"train_accuracy", 55.0},
           {"test_accuracy", 50.0}}};
}

// Fashion-MNIST's test split in its IDX format (uncompressed), `n` images, labels within the 4 classes of
// test::tiny_model().
void write_fashion_mnist_test_split(const fs::path& dir, int n) {
  auto text = [](const test::Bytes& b) { return std::string(b.begin(), b.end()); };
  fs::create_directories(dir);
  test::write_file(dir / "t10k-images-idx3-ubyte", text(test::idx_images(n)));
  test::write_file(dir / "t10k-labels-idx1-ubyte", text(test::idx_labels(n, 2049, -1, 4)));
}

class Report : public ::testing::Test {
 protected:
  // A scenario whose stages before the report "ran": their metrics files and checkpoints are written here.
  fs::path scenario(const std::string& stages, const std::string& extra, const fs::path& checkpoints,
                    const fs::path& datasets = {}) {
    test::write_file(
        tmp_ / "s.yaml",
        "schema: 1\nscenario: {test_scenario: TS0, method: M}\nmodel: {name: ResNet18, pretrained: "
        "false}\nstages: [" +
            stages + "]\npaths: {checkpoints: " + yaml_quoted(checkpoints.string()) +
            (datasets.empty() ? "" : ", datasets: " + yaml_quoted(datasets.string())) +
            "}\nreport: {latency: {warmup: 0, repeats: 1, large_batch: 2, large_batch_repeats: 1, bf16: off}}\n" +
            extra);
    return tmp_ / "s.yaml";
  }
  fs::path dir(const std::vector<std::string>& sets = {}) {
    return Naming(load_scenario(tmp_ / "s.yaml", sets)).report_dir();
  }
  void checkpoint(const fs::path& f) { models::save_checkpoint(f, test::tiny_model()); }
  void finetune_metrics(int64_t images, const json& hist = history()) {
    checkpoint(dir() / "ft.pt");
    test::write_file(dir() / "finetune_metrics.json",
                     json{{"before", {{"accuracy", 10.0}, {"loss", 2.3}, {"images", images}}},
                          {"after", {{"accuracy", 50.0}, {"loss", 1.5}, {"epoch", 2}}},
                          {"checkpoint", (dir() / "ft.pt").string()},
                          {"initial", (dir() / "ft.pt").string()},
                          {"test_images", images},
                          {"history", hist}}
                         .dump());
  }
  void run_report(const std::vector<std::string>& sets = {}) {
    RunOptions o;
    o.only = "report";
    o.console_log = false;
    Pipeline(load_scenario(tmp_ / "s.yaml", sets), o).run();
  }
  std::string md() { return test::read_file(dir() / "report.md"); }
  static bool have_gnuplot() { return test::run_shell("command -v gnuplot").exit_code == 0; }

  test::TempDir tmp_;
};

}  // namespace

TEST_F(Report, ATestSubsetIsNamedInEveryAccuracyStatementAndCaption) {
  scenario("finetune, report", "dataset: {name: FashionMNIST, test_subset: 160}\nruntime: {seed: 7}\n", tmp_ / "ck");
  finetune_metrics(160);
  run_report();
  const std::string text = md();
  EXPECT_EQ(text.find("full test split"), std::string::npos) << text;
  EXPECT_NE(text.find("- Accuracy: top-1 on 160 test images, a class-balanced subset of the test split "
                      "(dataset.test_subset: 160, seed 7) (before fine-tuning first;"),
            std::string::npos)
      << text;
  auto rep = json::parse(test::read_file(dir() / "report.json"));
  EXPECT_EQ(rep["evaluation"]["images"], 160);
  EXPECT_EQ(rep["evaluation"]["test_subset"], 160);
  EXPECT_EQ(rep["rows"][1]["accuracy"], 50.0);
  EXPECT_EQ(rep["rows"][1]["latency_large_batch"]["batch"], 2);
  const std::string csv = test::read_file(dir() / "report.csv");
  EXPECT_EQ(
      csv.substr(0, csv.find('\n')),
      "model,accuracy,accuracy_held_out,params,nonzero_params,size_mb,compact_size_mb,macs,flops,nonzero_macs,"
      "latency_b1_median_ms,latency_b1_mean_ms,latency_b1_p95_ms,large_batch,latency_large_median_ms_per_image,"
      "latency_form,not_optimized,latency_eager_b1_median_ms,latency_eager_b1_p95_ms,latency_eager_large_median_"
      "ms_per_image,"
      "speedup_theoretical,compression_ratio,speedup_measured_b1,speedup_measured_large,"
      "speedup_measured_eager_b1,speedup_measured_eager_large,coverage_nc,coverage_kmnc,coverage_nbc,coverage_snac,"
      "coverage_tknc,accuracy_bf16,bf16_form,bf16_max_logit_difference,"
      "latency_bf16_b1_median_ms,latency_bf16_b1_p95_ms,latency_bf16_large_median_ms_per_image,"
      "speedup_measured_bf16_b1,speedup_measured_bf16_large,bf16_over_fp32_b1,bf16_over_fp32_large");
  EXPECT_EQ(csv.find("\n\"fine-tuned\",50.0,,"), csv.find('\n', csv.find('\n') + 1)) << csv;
  if (!have_gnuplot()) return;
  EXPECT_NE(text.find("*Loss and top-1 accuracy per epoch. Test curves: 160 test images, a class-balanced subset of "
                      "the test split (dataset.test_subset: 160, seed 7). Train curves:"),
            std::string::npos)
      << text;
  EXPECT_NE(test::read_file(dir() / "training_curves.gp")
                .find("set title 'top-1 accuracy (%); test: 160 test images "
                      "(dataset.test_subset)'"),
            std::string::npos);
}

TEST_F(Report, TheWholeSplitIsNamedWithItsSize) {
  scenario("finetune, report", "dataset: {name: FashionMNIST}\n", tmp_ / "ck");
  finetune_metrics(10000);
  run_report();
  EXPECT_NE(md().find("- Accuracy: top-1 on the test split (10,000 images) (before fine-tuning first;"),
            std::string::npos)
      << md();
}

TEST_F(Report, CalibrationOnEveryTestImageIsSaidAndNoHeldOutColumnAppears) {
  scenario("prune, report",
           "dataset: {name: FashionMNIST, test_subset: 160}\n"
           "prune: {pruner: neuron_coverage, calibration: {split: test, samples: 160}}\n",
           tmp_ / "ck");
  checkpoint(dir() / "ft.pt");
  checkpoint(dir() / "pruned.pt");
  test::write_file(
      dir() / "prune_metrics.json",
      json{{"source_checkpoint", (dir() / "ft.pt").string()},
           {"calibration", {{"split", "test"}, {"samples", 160}, {"source", "Fashion-MNIST test split, 160 samples"}}},
           {"before", {{"accuracy", 50.0}, {"loss", 1.0}, {"images", 160}}},
           {"after", {{"accuracy", 40.0}, {"loss", 1.4}, {"images", 160}}},
           {"stats", {{"groups", {{"layer1.0.conv1", {{"size", 8}, {"kept", 4}, {"mean_coverage", 0.5}}}}}}}}
          .dump());
  run_report();
  const std::string text = md();
  EXPECT_NE(text.find("Calibration used all 160 test images, so none was held out: the accuracies after pruning are "
                      "measured on the images the pruner was calibrated on."),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("Held-out"), std::string::npos) << text;
  EXPECT_NE(text.find("| layer1.0.conv1 | 8 | 4 | 0.500 | - |"), std::string::npos) << text;
  EXPECT_NE(text.find("Coverage measured on the 160 calibration images (Fashion-MNIST test split, 160 samples)."),
            std::string::npos)
      << text;
  if (have_gnuplot())
    EXPECT_NE(text.find("*Channels of each group before pruning and kept; the line: mean coverage on the 160 "
                        "calibration images"),
              std::string::npos)
        << text;
}

// A coverage pruner's group table and chart show its own criterion; a group it could not measure says so and
// leaves a gap in the chart's line instead of a 0.
TEST_F(Report, AGroupTableIsHeadedByItsCriterionAndShowsUnmeasuredGroupsAsSuch) {
  scenario("prune, report",
           "dataset: {name: FashionMNIST, test_subset: 160}\nprune: {pruner: kmnc, calibration: {split: train, "
           "samples: 64}}\n",
           tmp_ / "ck");
  checkpoint(dir() / "ft.pt");
  checkpoint(Naming(load_scenario(tmp_ / "s.yaml")).pruned_checkpoint());
  test::write_file(
      dir() / "prune_metrics.json",
      json{{"source_checkpoint", (dir() / "ft.pt").string()},
           {"calibration", {{"split", "train"}, {"samples", 64}, {"source", "Fashion-MNIST train split, 64 samples"}}},
           {"before", {{"accuracy", 50.0}, {"loss", 1.0}, {"images", 160}}},
           {"after", {{"accuracy", 40.0}, {"loss", 1.4}, {"images", 160}}},
           {"stats",
            {{"pruner", "kmnc"},
             {"criterion", "KMNC (k = 100)"},
             {"unmeasured", {"fc.in"}},
             {"groups",
              {{"layer1.0.conv1",
                {{"size", 8}, {"kept", 4}, {"min_score", 0.25}, {"mean_score", 0.5}, {"max_score", 0.75}}},
               {"fc.in", {{"size", 8}, {"kept", 8}}}}}}}}
          .dump());
  run_report();
  const std::string text = md();
  EXPECT_NE(text.find("| group | channels | kept | min KMNC (k = 100) | mean KMNC (k = 100) | max KMNC (k = 100) |"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("| layer1.0.conv1 | 8 | 4 | 0.2500 | 0.5000 | 0.7500 |"), std::string::npos) << text;
  EXPECT_NE(text.find("| fc.in | 8 | 8 | unmeasured | unmeasured | unmeasured |"), std::string::npos) << text;
  EXPECT_NE(text.find("Unmeasured: 1 group no activation of the criterion carries (kept whole)"), std::string::npos)
      << text;
  if (have_gnuplot()) {
    EXPECT_NE(text.find("the line: mean KMNC (k = 100) on the 64 calibration images (Fashion-MNIST train split, 64 "
                        "samples) (gaps: unmeasured groups)."),
              std::string::npos)
        << text;
    EXPECT_TRUE(fs::exists(dir() / Naming(load_scenario(tmp_ / "s.yaml")).pruning_chart().filename()));
  }
}

TEST_F(Report, ANullMetricNamesTheFileAndTheKey) {
  scenario("finetune, report", "dataset: {name: FashionMNIST}\n", tmp_ / "ck");
  finetune_metrics(10000, history(nullptr));  // a NaN test loss, as nlohmann writes it
  try {
    run_report();
    FAIL() << "reported a null test loss";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir() / "finetune_metrics.json").string() +
                                         ": history[1].test_loss: null where a number is expected (NaN and infinite "
                                         "values are written as null)"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(Report, AHostileReportFolderRunsNoCommandAndTheCurvesAreDrawn) {
  test::Cwd cwd(tmp_.path());  // where a shell would have run the injected commands
  scenario("finetune, report", "dataset: {name: FashionMNIST}\n", tmp_ / "ck'; touch X; echo '$(touch Y)`touch Z`");
  finetune_metrics(10000);
  run_report();
  for (auto it = fs::recursive_directory_iterator(tmp_.path()); it != fs::recursive_directory_iterator(); ++it)
    for (const char* name : {"X", "Y", "Z"}) EXPECT_NE(it->path().filename(), name) << it->path();
  EXPECT_TRUE(fs::exists(dir() / "report.md"));
  if (have_gnuplot()) EXPECT_TRUE(fs::exists(dir() / "training_curves.png"));
}

// The speed-up columns are the ratios of the report's own figures against its first row; the deployed form is
// timed by default, the eager one beside it with latency.form: both, alone with eager.
TEST_F(Report, SpeedUpsAreTheRatiosOfItsOwnMacsParametersAndTimesInTheFormAsked) {
  scenario("finetune, report", "dataset: {name: FashionMNIST, test_subset: 160}\n", tmp_ / "ck");
  finetune_metrics(160);
  for (const std::string form : {"deployed", "both", "eager"}) {
    run_report({"report.latency.form=" + form});
    const auto rep = json::parse(test::read_file(dir() / "report.json"));
    const json& base = rep["rows"][0];
    ASSERT_EQ(rep["rows"].size(), 2u);
    for (const json& r : rep["rows"]) {
      const json& s = r["speedup"];
      EXPECT_EQ(r["latency_form"], form == "eager" ? "eager" : "deployed") << form;
      EXPECT_DOUBLE_EQ(s["theoretical"].get<double>(), base["macs"].get<double>() / r["nonzero_macs"].get<double>())
          << form;
      EXPECT_DOUBLE_EQ(s["compression"].get<double>(), base["params"].get<double>() / r["nonzero_params"].get<double>())
          << form;
      EXPECT_DOUBLE_EQ(s["measured_b1"].get<double>(),
                       base["latency_b1_ms"]["median"].get<double>() / r["latency_b1_ms"]["median"].get<double>())
          << form;
      EXPECT_DOUBLE_EQ(s["measured_large"].get<double>(), base["latency_large_batch"]["median_ms"].get<double>() /
                                                              r["latency_large_batch"]["median_ms"].get<double>())
          << form;
      EXPECT_EQ(r.contains("latency_eager_b1_ms"), form == "both") << form;
      EXPECT_EQ(s.contains("measured_eager_b1"), form == "both") << form;
      if (form == "both")
        EXPECT_DOUBLE_EQ(s["measured_eager_large"].get<double>(),
                         base["latency_eager_large_batch"]["median_ms"].get<double>() /
                             r["latency_eager_large_batch"]["median_ms"].get<double>());
    }
    EXPECT_EQ(rep["rows"][0]["speedup"]["measured_b1"], 1.0) << form;
    const std::string text = md();
    EXPECT_NE(text.find(form == "eager" ? "- Latency: eager form" : "- Latency: deployed form (frozen TorchScript"),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find("| Eager b1 (ms) |") != std::string::npos, form == "both") << text;
    EXPECT_NE(text.find("| Speed-up (MACs) | Compression | Speed-up b1 | Speed-up b2 |"), std::string::npos) << text;
  }
  // The final model is written in both forms.
  EXPECT_TRUE(fs::exists(dir() / "model.torchscript.pt"));
  EXPECT_TRUE(fs::exists(dir() / "model.deployed.pt"));
}

// latency.bf16: every model gets a bf16 row: its deployed form in bf16, timed with the others, and its accuracy in
// bf16 on the test images, which equals a hand evaluation of that form on the split the stages load.
TEST_F(Report, ABf16RowGivesTheAccuracyOfTheBf16FormOnTheTestImagesAndItsSpeedUps) {
  const fs::path data = tmp_ / "data";
  scenario("finetune, report", "dataset: {name: FashionMNIST}\n", tmp_ / "ck", data);
  write_fashion_mnist_test_split(data / "FashionMNIST", 37);
  finetune_metrics(37);
  run_report({"report.latency.bf16=on"});
  const auto rep = json::parse(test::read_file(dir() / "report.json"));
  ASSERT_EQ(rep["rows"].size(), 2u);
  const ScenarioConfig cfg = load_scenario(tmp_ / "s.yaml");
  const data::Split test = data::load_dataset(cfg, false);
  for (const json& r : rep["rows"]) {
    models::Network net = models::load_checkpoint(r["checkpoint"].get<std::string>());
    models::Deployable d = models::make_deployable(*net, 28, 28, torch::kCPU, models::DeployPrecision::Bf16);
    const metrics::EvalResult hand = metrics::evaluate_forward(
        [&d](const torch::Tensor& x) { return d.optimized.forward({x}).toTensor(); }, test, 2, torch::kCPU);
    EXPECT_EQ(r["bf16"]["accuracy"].get<double>(), hand.accuracy);
    EXPECT_EQ(r["bf16"]["images"], 37);
    EXPECT_EQ(r["bf16"]["max_logit_difference"].get<double>(), d.max_difference);
    const json& s = r["speedup"];
    const json& base = rep["rows"][0];
    auto median = [](const json& row, const char* key) { return row[key]["median"].get<double>(); };
    auto per_batch = [](const json& row, const char* key) { return row[key]["median_ms"].get<double>(); };
    EXPECT_DOUBLE_EQ(s["measured_bf16_b1"].get<double>(),
                     median(base, "latency_bf16_b1_ms") / median(r, "latency_bf16_b1_ms"));
    EXPECT_DOUBLE_EQ(s["measured_bf16_large"].get<double>(),
                     per_batch(base, "latency_bf16_large_batch") / per_batch(r, "latency_bf16_large_batch"));
    EXPECT_DOUBLE_EQ(s["bf16_over_fp32_b1"].get<double>(),
                     median(r, "latency_b1_ms") / median(r, "latency_bf16_b1_ms"));
    EXPECT_DOUBLE_EQ(s["bf16_over_fp32_large"].get<double>(),
                     per_batch(r, "latency_large_batch") / per_batch(r, "latency_bf16_large_batch"));
  }
  EXPECT_EQ(rep["precision"]["bf16"], "deployed form in bf16 (weights rounded after folding in fp32)");
  const std::string text = md();
  EXPECT_NE(text.find("## In bf16\n\n| Model | Accuracy bf16 (%) (vs fp32) | Latency b1 (ms) | Latency b2 (ms/img) |"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("; those of the bf16 table below from bf16 ones."), std::string::npos) << text;
  const std::string csv = test::read_file(dir() / "report.csv");
  EXPECT_NE(csv.find(",accuracy_bf16,bf16_form,bf16_max_logit_difference,latency_bf16_b1_median_ms,"),
            std::string::npos)
      << csv.substr(0, csv.find('\n'));

  // off: no bf16 row, no data read.
  fs::remove_all(data);
  run_report({"report.latency.bf16=off"});
  const auto off = json::parse(test::read_file(dir() / "report.json"));
  EXPECT_FALSE(off["rows"][0].contains("bf16"));
  EXPECT_FALSE(off["rows"][0]["speedup"].contains("measured_bf16_b1"));
  EXPECT_EQ(md().find("## In bf16"), std::string::npos);
}

// report.coverage: every row's test coverage equals a hand measurement: the loaded model's ranges on the training
// images the report draws, restricted for the pruned model to the channels the prune stage recorded as kept, and
// every criterion counted on the test images.
TEST_F(Report, TestCoverageOfEveryRowEqualsAHandMeasurementAgainstTheLoadedModelsRanges) {
  const fs::path data = tmp_ / "data";
  scenario("prune, report", "dataset: {name: FashionMNIST}\nprune: {pruner: neuron_coverage}\n", tmp_ / "ck", data);
  write_fashion_mnist_test_split(data / "FashionMNIST", 30);
  auto text = [](const test::Bytes& b) { return std::string(b.begin(), b.end()); };
  test::write_file(data / "FashionMNIST" / "train-images-idx3-ubyte", text(test::idx_images(40)));
  test::write_file(data / "FashionMNIST" / "train-labels-idx1-ubyte", text(test::idx_labels(40, 2049, -1, 4)));
  models::GraphNet loaded = test::tiny_model();
  models::save_checkpoint(dir() / "ft.pt", loaded);
  // Two groups shrink: the stream after the stem and one block's inner width.
  const std::vector<models::ChannelGroup> groups = models::channel_groups(loaded);
  std::map<std::string, torch::Tensor> keep;
  json kept_channels = json::object();
  for (const auto& g : groups)
    if (keep.size() < 2 && g.size == 8 && !g.activation_points.empty()) {
      keep[g.name] = torch::tensor({0, 2, 3, 5, 6}, torch::kLong);
      kept_channels[g.name] = {0, 2, 3, 5, 6};
    }
  ASSERT_EQ(keep.size(), 2u);
  models::GraphNet pruned = test::tiny_model();
  models::prune_groups(pruned, keep);
  const fs::path pruned_file = Naming(load_scenario(tmp_ / "s.yaml")).pruned_checkpoint();
  models::save_checkpoint(pruned_file, pruned);
  test::write_file(dir() / "prune_metrics.json",
                   json{{"source_checkpoint", (dir() / "ft.pt").string()},
                        {"calibration", {{"split", "train"}, {"samples", 8}, {"source", "train"}}},
                        {"before", {{"accuracy", 50.0}, {"loss", 1.0}, {"images", 30}}},
                        {"after", {{"accuracy", 40.0}, {"loss", 1.4}, {"images", 30}}},
                        {"stats", json::object()},
                        {"kept_channels", kept_channels}}
                       .dump());
  run_report({"report.coverage=[nc, kmnc, nbc, snac, tknc]", "report.coverage_profile=16", "report.coverage_k=20",
              "report.coverage_top_k=3", "report.coverage_threshold=0.2"});
  const auto rep = json::parse(test::read_file(dir() / "report.json"));
  ASSERT_EQ(rep["rows"].size(), 2u);
  EXPECT_EQ(rep["coverage"]["profile_images"], 16);
  EXPECT_EQ(rep["coverage"]["test_images"], 30);

  // By hand: the report's draw of 16 training images (seed 0) and every test image, in its batches of 2.
  const ScenarioConfig cfg = load_scenario(tmp_ / "s.yaml");
  const data::Split train = data::load_dataset(cfg, true), test_split = data::load_dataset(cfg, false);
  const data::Split prof = data::split_off(train, 16, 0).first;
  const torch::Tensor x_prof = data::normalize(prof.pixels(0, prof.size()), prof.norm);
  const torch::Tensor x_test = data::normalize(test_split.pixels(0, test_split.size()), test_split.norm);
  const std::vector<std::string> points = loaded->activation_points();
  const auto profile = coverage::measure_stats(loaded, x_prof, 2, points);
  std::map<std::string, coverage::ChannelStats> pruned_profile = profile;
  int64_t restricted_points = 0;
  for (auto& [p, st] : pruned_profile) {
    std::vector<int64_t> kept_here;  // the groups of these points all sit at offset 0
    for (int64_t c = 0; c < st.channels; ++c) {
      bool lost = false;
      for (const auto& g : groups)
        if (keep.count(g.name) && std::count(g.activation_points.begin(), g.activation_points.end(), p))
          lost = lost || !(keep.at(g.name) == c).any().item<bool>();
      if (!lost) kept_here.push_back(c);
    }
    if (int64_t(kept_here.size()) == st.channels) continue;
    ++restricted_points;
    const torch::Tensor idx = torch::tensor(kept_here, torch::kLong);
    st.low = st.low.index_select(0, idx);
    st.high = st.high.index_select(0, idx);
    st.channels = idx.size(0);
  }
  EXPECT_GE(restricted_points, 2);
  coverage::HitsOptions o;
  o.sections = 20;
  o.top_k = 3;
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    models::Network m = i == 0 ? models::Network(loaded) : models::Network(pruned);
    const auto hits = coverage::measure_hits(m, x_test, 2, i == 0 ? &profile : &pruned_profile, o, points, "hand");
    const json& got = rep["rows"][i]["coverage"];
    EXPECT_DOUBLE_EQ(got["kmnc"].get<double>(), coverage::model_coverage(hits, coverage::Criterion::KMNC));
    EXPECT_DOUBLE_EQ(got["nbc"].get<double>(), coverage::model_coverage(hits, coverage::Criterion::NBC));
    EXPECT_DOUBLE_EQ(got["snac"].get<double>(), coverage::model_coverage(hits, coverage::Criterion::SNAC));
    EXPECT_DOUBLE_EQ(got["tknc"].get<double>(), coverage::model_coverage(hits, coverage::Criterion::TKNC));
    double covered = 0, total = 0;
    for (const auto& [p, c] : neuron_coverage::measure_coverage(m, x_test, 2, 0.2, points)) {
      covered += (c.covered > 0).sum().item<double>();
      total += double(c.covered.size(0));
    }
    EXPECT_DOUBLE_EQ(got["nc"].get<double>(), covered / total);
    EXPECT_GT(got["kmnc"].get<double>(), 0.0);
  }
  const std::string md_text = md();
  EXPECT_NE(md_text.find("| NC (%) | KMNC (%) | NBC (%) | SNAC (%) | TKNC (%) |"), std::string::npos) << md_text;
  EXPECT_NE(md_text.find("- Test coverage (report.coverage): "), std::string::npos) << md_text;
  const std::string csv = test::read_file(dir() / "report.csv");
  EXPECT_NE(csv.find(",coverage_nc,coverage_kmnc,coverage_nbc,coverage_snac,coverage_tknc,"), std::string::npos) << csv;
  // Not asked: no coverage anywhere.
  run_report();
  EXPECT_FALSE(json::parse(test::read_file(dir() / "report.json"))["rows"][0].contains("coverage"));
  EXPECT_EQ(md().find("NC (%)"), std::string::npos);
}
