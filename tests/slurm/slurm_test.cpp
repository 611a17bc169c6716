// `expctl sweep --emit slurm` on a real single-node Slurm (Debian's slurm-wlm daemons, started by
// scripts/slurm-local.sh): the job array runs every cell of the TS0 Neuron Coverage sweep on tiny data, and
// `expctl sweep --summary` collects them. Needs root and the Slurm packages (scripts/install-deps.sh installs them);
// skipped, saying why, elsewhere.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

using test::run_shell;

class Slurm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "a local Slurm needs root";
    if (run_shell("command -v sbatch && test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd && test -x "
              "/usr/sbin/munged")
            .exit_code != 0)
      GTEST_SKIP() << "Slurm is not installed (scripts/install-deps.sh installs munge, slurmctld, slurmd, "
                      "slurm-client)";
    cluster_ = tmp_.path() / "slurm";
    auto r = run_shell(std::string(EXPCTL_SOURCE_DIR) + "/scripts/slurm-local.sh start " + cluster_.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    started_ = true;
  }
  void TearDown() override {
    if (started_) run_shell(std::string(EXPCTL_SOURCE_DIR) + "/scripts/slurm-local.sh stop " + cluster_.string());
  }
  test::TempDir tmp_;
  fs::path cluster_;
  bool started_ = false;
};

TEST_F(Slurm, JobArrayRunsEverySweepCell) {
  const fs::path t = tmp_.path();
  const std::string sets =
      " --set paths.checkpoints=" + (t / "ckpt").string() + " --set paths.datasets=" + (t / "data").string() +
      " --set paths.models=" + (t / "models").string() + " --set paths.reports=" + (t / "reports").string() +
      " --set dataset.train_subset=256 --set dataset.test_subset=128 --set runtime.threads=1"
      " --set finetune.epochs=1 --set finetune.batch_size=32 --set recover.epochs=1 --set recover.batch_size=32"
      " --set report.latency.warmup=1 --set report.latency.repeats=2 --set report.latency.large_batch=8"
      " --set report.latency.large_batch_repeats=1 --set report.plot=false";
  const std::string cells = sets + " --set prune.calibration.samples=32";
  const std::string nc = "configs/test_scenarios/TS0/nc.yaml";
  auto r = test::run_expctl("run configs/test_scenarios/TS0/finetune.yaml" + sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path script = t / "sweep.sbatch";
  r = test::run_expctl("sweep " + nc + cells + " --emit slurm -o " + script.string() + " --sbatch=--time=00:10:00");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  r = run_shell("SLURM_CONF=" + (cluster_ / "slurm.conf").string() + " timeout 600 sbatch --wait " + script.string());
  const fs::path sweep_dir = t / "reports/TS0/TS0_NeuronCoverage_ResNet18_FashionMNIST_sweep";
  std::string logs;
  for (const auto& e : fs::directory_iterator(sweep_dir))
    if (e.path().filename().string().rfind("slurm-", 0) == 0) logs += test::read_file(e.path());
  ASSERT_EQ(r.exit_code, 0) << r.output << logs;
  EXPECT_EQ(std::count(logs.begin(), logs.end(), '\n') > 0, true);

  for (const char* cell : {"sparsity=0.3", "sparsity=0.5", "sparsity=0.7"})
    EXPECT_TRUE(fs::exists(t / "ckpt/TS0_NeuronCoverage_ResNet18_FashionMNIST/sweep" / cell / "report.json"))
        << cell << "\n"
        << logs;
  r = test::run_expctl("sweep " + nc + cells + " --summary");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = nlohmann::json::parse(test::read_file(sweep_dir / "summary.json"));
  EXPECT_EQ(s["runs"].size(), 3u);
}

}  // namespace
