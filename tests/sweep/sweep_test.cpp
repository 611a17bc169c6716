// Sweep expansion, cell naming and folders, errors that point at the sweep block, and the Slurm job array
// (checked with bash -n and by running each array task against stand-ins for srun and expctl).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/sweep/slurm.h"
#include "runner/sweep/sweep.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const char* kBase = R"(schema: 1
scenario: {test_scenario: TS9, method: Wanda, starts_from: ft.yaml}
model: {name: ResNet18, pretrained: false}
dataset: {name: CIFAR10}
stages: [prune, recover, report]
prune: {pruner: wanda, sparsity: 0.5}
recover: {epochs: 3}
)";

const char* kFinetune = R"(schema: 1
scenario: {test_scenario: TS9, method: FineTuning}
model: {name: ResNet18, pretrained: false}
dataset: {name: CIFAR10}
stages: [finetune]
finetune: {epochs: 4}
)";

class Sweep : public ::testing::Test {
 protected:
  fs::path write(const std::string& sweep_block) {
    test::write_file(dir_.path() / "ft.yaml", kFinetune);
    test::write_file(dir_.path() / "s.yaml", std::string(kBase) + sweep_block);
    return dir_.path() / "s.yaml";
  }
  std::string error_of(const fs::path& f, const std::vector<std::string>& sets = {}) {
    try {
      sweep::expand(f, sets);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  }
  test::TempDir dir_;
};

TEST_F(Sweep, ExpandsTheCartesianProductFirstKeySlowest) {
  fs::path f = write("sweep:\n  prune.sparsity: [0.3, 0.7]\n  prune.score: [wanda, magnitude]\n");
  auto cells = sweep::expand(f, {"paths.checkpoints=" + (dir_.path() / "ck").string()});
  ASSERT_EQ(cells.size(), 4u);
  std::vector<std::string> ids;
  for (const auto& c : cells) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"sparsity=0.3_score=wanda", "sparsity=0.3_score=magnitude",
                                           "sparsity=0.7_score=wanda", "sparsity=0.7_score=magnitude"}));
  EXPECT_EQ(cells[3].index, 3u);
  EXPECT_DOUBLE_EQ(cells[2].config.stage("prune").get_float("sparsity"), 0.7);
  EXPECT_EQ(cells[1].config.stage("prune").get_string("score"), "magnitude");
  EXPECT_EQ(cells[1].settings_text(), "prune.sparsity=0.3 prune.score=magnitude");
  // Values not swept stay as the file says; --set reaches every cell.
  EXPECT_EQ(cells[0].config.stage("recover").get_int("epochs"), 3);
  EXPECT_EQ(cells[0].config.dirs.checkpoints, (dir_.path() / "ck").string());
}

TEST_F(Sweep, CellFoldersNeverCollideAndShareTheFineTunedModel) {
  fs::path f = write("sweep:\n  prune.sparsity: [0.3, 0.5]\n");
  ScenarioConfig plain = load_scenario(f);
  auto cells = sweep::expand(f, {});
  Naming p(plain), a(cells[0].config), b(cells[1].config);
  // The plain run keeps its exact names.
  EXPECT_EQ(p.report_dir(), fs::path("checkpoints/TS9_Wanda_ResNet18_CIFAR10"));
  EXPECT_EQ(p.recover_checkpoint("W", 3), fs::path("checkpoints/TS9/ResNet18_CIFAR10_FTAP_W_3.pt"));
  EXPECT_EQ(a.report_dir(), fs::path("checkpoints/TS9_Wanda_ResNet18_CIFAR10/sweep/sparsity=0.3"));
  EXPECT_EQ(a.recover_checkpoint("W", 3),
            fs::path("checkpoints/TS9_Wanda_ResNet18_CIFAR10/sweep/sparsity=0.3/ResNet18_CIFAR10_FTAP_W_3.pt"));
  std::set<fs::path> all{p.report_dir(), a.report_dir(), b.report_dir(), p.recover_checkpoint("W", 3),
                         a.recover_checkpoint("W", 3), b.recover_checkpoint("W", 3), p.pruned_checkpoint(),
                         a.pruned_checkpoint(), b.pruned_checkpoint()};
  EXPECT_EQ(all.size(), 9u);
  // Every cell reads the one fine-tuned model of the upstream scenario.
  EXPECT_EQ(a.finetune_checkpoint(4), p.finetune_checkpoint(4));
  EXPECT_EQ(a.finetune_checkpoint(4), fs::path("checkpoints/TS9/ResNet18_CIFAR10_FT_4.pt"));
  ASSERT_TRUE(cells[0].config.upstream);
  EXPECT_EQ(cells[0].config.upstream->stage("finetune").get_int("epochs"), 4);
  EXPECT_EQ(Naming(plain).sweep_summary_dir(), fs::path("reports/TS9/TS9_Wanda_ResNet18_CIFAR10_sweep"));
}

TEST_F(Sweep, AFineTuningSweepKeepsItsCheckpointsInTheCell) {
  test::write_file(dir_.path() / "ft.yaml", std::string(kFinetune) + "sweep:\n  finetune.optimizer.lr: [0.1, 0.01]\n");
  auto cells = sweep::expand(dir_.path() / "ft.yaml", {});
  ASSERT_EQ(cells.size(), 2u);
  EXPECT_EQ(cells[1].id, "lr=0.01");
  EXPECT_EQ(Naming(cells[1].config).finetune_checkpoint(4),
            fs::path("checkpoints/TS9_FineTuning_ResNet18_CIFAR10/sweep/lr=0.01/ResNet18_CIFAR10_FT_4.pt"));
}

TEST_F(Sweep, CellIdsAreSafeUniqueFolderNames) {
  EXPECT_EQ(sweep::cell_ids({"prune.mode"}, {{"n:m"}, {"n/m"}}), (std::vector<std::string>{"mode=n-m", "mode=n-m_cell1"}));
  EXPECT_EQ(sweep::cell_ids({"prune.calibration.samples", "recover.samples"}, {{"64", "2"}}),
            (std::vector<std::string>{"prune.calibration.samples=64_recover.samples=2"}));
  EXPECT_EQ(sweep::cell_ids({"prune.exclude"}, {{"[conv1, fc]"}}), (std::vector<std::string>{"exclude=-conv1--fc-"}));
}

TEST_F(Sweep, BadCellsAreReportedAtTheSweepBlock) {
  fs::path f = write("sweep:\n  prune.sparsity: [0.3, 1.5]\n  prune.sparsty: [0.1]\n");
  std::string e = error_of(f);
  // The value's own line and column, and the misspelt key's, in the scenario file.
  EXPECT_NE(e.find(f.string() + ":9:25: prune.sparsity:"), std::string::npos) << e;
  EXPECT_NE(e.find(f.string() + ":10:3: prune.sparsty: unknown key (did you mean 'sparsity'?)"), std::string::npos)
      << e;
  EXPECT_NE(e.find("sweep cell sparsity=0.3_sparsty=0.1"), std::string::npos) << e;
}

TEST_F(Sweep, ASweptKeyAlsoSetOnTheCommandLineIsAnError) {
  fs::path f = write("sweep:\n  prune.sparsity: [0.3, 0.5]\n");
  EXPECT_EQ(error_of(f, {"prune.sparsity=0.2"}),
            f.string() + ":9:3: sweep.prune.sparsity: also given with --set prune.sparsity=0.2; drop one of them");
  EXPECT_NE(error_of(write(""), {}).find("no sweep block"), std::string::npos);
}

TEST_F(Sweep, SelectsCellsByIndexOrId) {
  auto cells = sweep::expand(write("sweep:\n  prune.sparsity: [0.3, 0.5, 0.7]\n"), {});
  auto picked = sweep::select(cells, {"2", "sparsity=0.3"});
  ASSERT_EQ(picked.size(), 2u);
  EXPECT_EQ(picked[0].id, "sparsity=0.7");
  EXPECT_EQ(picked[1].index, 0u);
  try {
    sweep::select(cells, {"sparsity=0.4"});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--cell sparsity=0.4: no such cell; the cells are:\n  0 sparsity=0.3"),
              std::string::npos);
  }
}

// Runs the emitted script as array task `task` with srun and expctl replaced by scripts that print their argv.
test::CommandResult run_task(const fs::path& script, const fs::path& bin, int task) {
  std::string cmd = "PATH='" + bin.string() + "':$PATH EXPCTL='" + (bin / "fake-expctl").string() +
                    "' SLURM_ARRAY_TASK_ID=" + std::to_string(task) + " bash '" + script.string() + "'";
  return test::run_shell(cmd);
}

TEST_F(Sweep, SlurmArrayRunsExactlyTheSweepCells) {
  fs::path f = write("sweep:\n  prune.sparsity: [0.3, 0.5]\n  prune.score: [wanda, magnitude]\n");
  const std::vector<std::string> sets{"recover.epochs=1", "paths.checkpoints=/tmp/with space"};
  auto cells = sweep::expand(f, sets);
  sweep::SlurmOptions o;
  o.expctl = "/opt/expctl/bin/expctl";
  o.workdir = dir_.path();
  o.log_dir = dir_.path() / "logs";
  o.job_name = "TS9_sweep";
  o.sbatch = {"--gres=gpu:1", "--time=02:00:00"};
  const fs::path script = dir_.path() / "sweep.sbatch";
  test::write_file(script, sweep::slurm_script(f, sets, cells, o));
  const std::string text = test::read_file(script);
  EXPECT_NE(text.find("#SBATCH --array=0-3\n"), std::string::npos);
  EXPECT_NE(text.find("#SBATCH --gres=gpu:1\n#SBATCH --time=02:00:00\n"), std::string::npos);
  EXPECT_EQ(std::system(("bash -n '" + script.string() + "'").c_str()), 0) << text;

  const fs::path bin = dir_.path() / "bin";
  test::write_file(bin / "srun", "#!/bin/sh\nexec \"$@\"\n");
  test::write_file(bin / "fake-expctl", "#!/bin/sh\nprintf '%s\\n' \"$PWD\" \"$@\"\n");
  fs::permissions(bin / "srun", fs::perms::owner_all);
  fs::permissions(bin / "fake-expctl", fs::perms::owner_all);
  for (const auto& c : cells) {
    auto r = run_task(script, bin, int(c.index));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::string expected = dir_.path().string() + "\nsweep\n" + f.string() +
                           "\n--set\nrecover.epochs=1\n--set\npaths.checkpoints=/tmp/with space\n--cell\n" + c.id + "\n";
    EXPECT_EQ(r.output, expected);
  }
  auto r = run_task(script, bin, 4);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no sweep cell for array task 4 (0-3)"), std::string::npos);
}

}  // namespace
