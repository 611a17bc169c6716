// Never a number from the wrong model (issue #26, items 1 and 2), through the expctl binary on TS0 at smoke size:
// a pruning scenario reruns when the fine-tuned model it starts from changed (and --dry-run says why); a run that
// would overwrite another scenario's fine-tuning checkpoints refuses before any work; a checkpoint made otherwise
// than scenario.starts_from says is refused; a report never measures a model other than the one its row names.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/core/hash.h"
#include "runner/core/lock.h"
#include "runner/models/checkpoint.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

class Lineage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tmp_ = new test::TempDir(); }
  static void TearDownTestSuite() { delete tmp_; }

  static std::string sets() {
    const fs::path t = tmp_->path();
    return " --set paths.checkpoints=" + (t / "ckpt").string() + " --set paths.datasets=" + (t / "data").string() +
           " --set paths.models=" + (t / "models").string() +
           " --set dataset.train_subset=160 --set dataset.test_subset=96 --set runtime.threads=2"
           " --set finetune.save_every=1 --set finetune.batch_size=32 --set finetune.optimizer.lr=0.01"
           " --set report.plot=false --set report.export_torchscript=false"
           " --set report.latency.warmup=0 --set report.latency.repeats=1 --set report.latency.large_batch=4"
           " --set report.latency.large_batch_repeats=1";
  }
  // `file` of TS0 (or a path), with TS0's smoke settings and `extra`.
  static test::CommandResult run(const std::string& file, const std::string& extra) {
    const std::string path = file.find('/') == std::string::npos ? "configs/test_scenarios/TS0/" + file : file;
    const std::string pruning = file == "nc.yaml" ? " --set recover.epochs=1 --set recover.batch_size=32"
                                                    " --set prune.calibration.samples=32"
                                                  : "";
    return test::run_expctl("run " + path + sets() + pruning + extra);
  }
  static fs::path ft(int epoch) { return tmp_->path() / ("ckpt/TS0/ResNet18_FashionMNIST_FT_" + std::to_string(epoch) + ".pt"); }
  static fs::path nc_dir() { return tmp_->path() / "ckpt/TS0_NeuronCoverage_ResNet18_FashionMNIST"; }
  static nlohmann::json json_of(const fs::path& f) { return nlohmann::json::parse(test::read_file(f)); }

  static test::TempDir* tmp_;
};
test::TempDir* Lineage::tmp_ = nullptr;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_F(Lineage, APruningScenarioRerunsWhenTheModelItStartsFromChanged) {
  // Fine-tune 1 epoch, prune that model.
  auto r = run("finetune.yaml", " --set finetune.epochs=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run("nc.yaml", " --set finetune.epochs=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_of(nc_dir() / "prune_metrics.json")["source_checkpoint"], ft(1).string());
  // The pruned model records where it came from.
  const nlohmann::json meta = models::read_checkpoint(nc_dir() / "pruned.pt").meta;
  EXPECT_EQ(meta["scenario"], "TS0_NeuronCoverage_ResNet18_FashionMNIST");
  EXPECT_EQ(meta["source"]["path"], ft(1).string());
  EXPECT_EQ(meta["source"]["sha256"], content_id(ft(1)));
  EXPECT_EQ(meta["fingerprint"].get<std::string>().size(), 64u);
  const nlohmann::json ft_meta = models::read_checkpoint(ft(1)).meta;
  EXPECT_EQ(ft_meta["scenario"], "TS0_FineTuning_ResNet18_FashionMNIST");
  EXPECT_EQ(ft_meta["scenario_file"], fs::weakly_canonical(fs::path(EXPCTL_SOURCE_DIR) /
                                                           "configs/test_scenarios/TS0/finetune.yaml")
                                          .string());
  EXPECT_EQ(ft_meta["source"]["init"], "random, seed 0");

  // Fine-tune again to 3 epochs (the same scenario may replace its own checkpoints), then the same pruning
  // scenario with finetune.epochs=3: it reads FT_3 now, and --dry-run says so.
  r = run("finetune.yaml", " --set finetune.epochs=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run("nc.yaml", " --set finetune.epochs=3 --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "prune: runs, it now reads " + ft(3).string() + " (it read " + ft(1).string() + ")"))
      << r.output;
  EXPECT_TRUE(has(r.output, "recover: runs, a stage before it changed")) << r.output;
  r = run("nc.yaml", " --set finetune.epochs=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "stage prune: running it again: it now reads")) << r.output;
  EXPECT_TRUE(has(r.output, "stage recover: running it again: its input")) << r.output;
  EXPECT_TRUE(has(r.output, "stage report: running it again: its input")) << r.output;
  nlohmann::json prune = json_of(nc_dir() / "prune_metrics.json");
  EXPECT_EQ(prune["source_checkpoint"], ft(3).string());
  EXPECT_EQ(prune["source_sha256"], content_id(ft(3)));
  nlohmann::json report = json_of(nc_dir() / "report.json");
  EXPECT_EQ(report["rows"][0]["checkpoint"], ft(3).string());
  EXPECT_EQ(report["rows"][0]["sha256"], content_id(ft(3)));

  // Fine-tune again with --force at the same epochs: a new FT_3, so the pruning scenario runs again.
  const std::string old_ft3 = content_id(ft(3));
  r = run("finetune.yaml", " --set finetune.epochs=3 --force");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_NE(content_id(ft(3)), old_ft3);
  r = run("nc.yaml", " --set finetune.epochs=3 --dry-run");
  EXPECT_TRUE(has(r.output, "prune: runs, its input " + ft(3).string() + " changed since it last ran (SHA-256 " +
                                old_ft3.substr(0, 12)))
      << r.output;
  r = run("nc.yaml", " --set finetune.epochs=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_of(nc_dir() / "prune_metrics.json")["source_sha256"], content_id(ft(3)));
  // And then everything is up to date.
  r = run("nc.yaml", " --set finetune.epochs=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* stage : {"prune", "recover", "report"})
    EXPECT_TRUE(has(r.output, std::string("stage ") + stage + ": up to date")) << stage << r.output;

  // A pruning scenario whose starts_from now resolves to other fine-tuning settings refuses FT_3, before any work.
  const std::string ft3 = content_id(ft(3));
  r = run("nc.yaml", " --set finetune.epochs=3 --set finetune.optimizer.lr=0.02");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, ft(3).string() + " was made by scenario TS0_FineTuning_ResNet18_FashionMNIST")) << r.output;
  EXPECT_TRUE(has(r.output, "with other settings than configs/test_scenarios/TS0/finetune.yaml as scenario.starts_from"))
      << r.output;
  EXPECT_FALSE(has(r.output, "stage prune: start")) << r.output;

  // A model replaced behind the pipeline's back: the stage that wrote it runs again, and a report asked to
  // measure it alone refuses to mix two models.
  fs::copy_file(ft(3), nc_dir() / "pruned.pt", fs::copy_options::overwrite_existing);
  r = run("nc.yaml", " --set finetune.epochs=3 --only report --force");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, (nc_dir() / "pruned.pt").string() +
                                ": the model of row 'pruned' changed since its accuracy was measured"))
      << r.output;
  r = run("nc.yaml", " --set finetune.epochs=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "stage prune: running it again: its output " + (nc_dir() / "pruned.pt").string() +
                                " was changed or replaced"))
      << r.output;
  EXPECT_EQ(content_id(ft(3)), ft3);
}

TEST_F(Lineage, TwoFineTuningScenariosNeverShareCheckpointsSilently) {
  // A second fine-tuning file of TS0: another method name and learning rate, the same checkpoint names.
  const fs::path other = tmp_->path() / "finetune_b.yaml";
  test::write_file(other, "schema: 1\ninclude: " + std::string(EXPCTL_SOURCE_DIR) +
                              "/configs/test_scenarios/TS0/include/defaults.yaml\nscenario:\n  method: FineTuningB\n"
                              "stages: [download, finetune, report]\nfinetune:\n  optimizer: {lr: 0.02}\n");
  const std::string b_sets = " --set finetune.epochs=2 --set paths.checkpoints=" + (tmp_->path() / "ckpt2").string();
  auto r = run("finetune.yaml", b_sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path ft2 = tmp_->path() / "ckpt2/TS0/ResNet18_FashionMNIST_FT_2.pt";
  const std::string before = content_id(ft2);

  // One after the other: the second refuses before any work, naming both scenarios and the ways out.
  r = run(other.string(), b_sets);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "was written by scenario TS0_FineTuning_ResNet18_FashionMNIST (")) << r.output;
  EXPECT_TRUE(has(r.output, "scenario TS0_FineTuningB_ResNet18_FashionMNIST (" + other.string() +
                                ") would overwrite it. Give this scenario names of its own (another "
                                "scenario.test_scenario, or paths.checkpoints), or pass --force"))
      << r.output;
  EXPECT_FALSE(has(r.output, "stage download: start")) << r.output;
  EXPECT_EQ(content_id(ft2), before);
  EXPECT_FALSE(fs::exists(tmp_->path() / "ckpt2/TS0_FineTuningB_ResNet18_FashionMNIST/run.log"));

  // At once: the writer lock of the names is held (here by this test, as a running fine-tuning would hold it).
  {
    ScenarioLock held(tmp_->path() / "ckpt2/TS0/.ResNet18_FashionMNIST_FT.lock", "TS0_FineTuning_ResNet18_FashionMNIST",
                      "x");
    r = run(other.string(), b_sets + " --force");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "/ckpt2/TS0/ResNet18_FashionMNIST_FT_*.pt are being written by scenario "
                              "TS0_FineTuning_ResNet18_FashionMNIST (pid "))
        << r.output;
  }
  EXPECT_EQ(content_id(ft2), before);

  // --force replaces them; the pruning scenario that starts from finetune.yaml then refuses the other's model.
  r = run(other.string(), b_sets + " --force");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(content_id(ft2), before);
  EXPECT_EQ(models::read_checkpoint(ft2).meta["scenario"], "TS0_FineTuningB_ResNet18_FashionMNIST");
  r = run("nc.yaml", b_sets);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, ft2.string() + " was made by scenario TS0_FineTuningB_ResNet18_FashionMNIST (" +
                                other.string() + "), not by configs/test_scenarios/TS0/finetune.yaml"))
      << r.output;
  // And its dry run says it would refuse.
  r = run("nc.yaml", b_sets + " --dry-run");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "refuses to run: " + ft2.string() + " was made by scenario TS0_FineTuningB")) << r.output;
}
