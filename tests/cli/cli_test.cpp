// The CLI end to end: subcommands, exit codes, and the dry-run plans of the three TS1 scenarios.
#include <gtest/gtest.h>

#include "tests/core/test_util.h"

using expctl::test::run_expctl;

namespace {
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(Cli, HelpAndUsageErrors) {
  auto r = run_expctl("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"run", "validate", "list", "describe", "show-config"})
    EXPECT_TRUE(contains(r.output, sub)) << sub;
  EXPECT_EQ(run_expctl("run --help").exit_code, 0);
  EXPECT_EQ(run_expctl("").exit_code, 2);
  EXPECT_EQ(run_expctl("frobnicate").exit_code, 2);
  EXPECT_EQ(run_expctl("run").exit_code, 2);  // FILE is required
  EXPECT_EQ(run_expctl("run --no-such-flag x.yaml").exit_code, 2);
}

TEST(Cli, ListShowsEveryKind) {
  auto r = run_expctl("list");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* name : {"ResNet18", "CIFAR10", "FashionMNIST", "neuron_coverage", "wanda", "download", "finetune",
                           "prune", "recover", "report"})
    EXPECT_TRUE(contains(r.output, name)) << name;
}

TEST(Cli, DescribeShowsTheDeclaredTable) {
  auto r = run_expctl("describe neuron_coverage");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "calibration.samples")) << r.output;
  EXPECT_TRUE(contains(r.output, "512")) << r.output;
  EXPECT_TRUE(contains(r.output, "local | global")) << r.output;
  r = run_expctl("describe wandaa");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.output, "nothing is registered as 'wandaa' (did you mean 'wanda'?)")) << r.output;
}

TEST(Cli, ReferenceDocIsGeneratedFromTheTables) {
  auto r = run_expctl("describe --all --markdown");
  ASSERT_EQ(r.exit_code, 0);
  std::string doc = expctl::test::read_file(std::string(EXPCTL_SOURCE_DIR) + "/docs/config-reference.md");
  auto marker = doc.find("<!-- generated -->\n");
  ASSERT_NE(marker, std::string::npos);
  EXPECT_EQ(doc.substr(marker + 19), r.output)
      << "docs/config-reference.md is stale: run `make docs` (expctl describe --all --markdown)";
}

TEST(Cli, ValidateAndShowConfigOfTs1) {
  auto r = run_expctl(
      "validate configs/test_scenarios/TS1/finetune.yaml configs/test_scenarios/TS1/nc.yaml "
      "configs/test_scenarios/TS1/wanda.yaml");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "finetune.yaml: ok (TS1_FineTuning_ResNet18_CIFAR10")) << r.output;
  EXPECT_TRUE(contains(r.output, "nc.yaml: ok (TS1_NeuronCoverage_ResNet18_CIFAR10")) << r.output;
  EXPECT_TRUE(contains(r.output, "wanda.yaml: ok (TS1_Wanda_ResNet18_CIFAR10")) << r.output;
  r = run_expctl("show-config configs/test_scenarios/TS1/wanda.yaml --set prune.sparsity=0.7");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "sparsity: 0.7")) << r.output;
  EXPECT_TRUE(contains(r.output, "mode: unstructured")) << r.output;
}

TEST(Cli, DryRunPlanOfFinetune) {
  auto r = run_expctl("run --dry-run configs/test_scenarios/TS1/finetune.yaml");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "scenario TS1_FineTuning_ResNet18_CIFAR10")) << r.output;
  EXPECT_TRUE(contains(r.output, "report folder: checkpoints/TS1_FineTuning_ResNet18_CIFAR10/")) << r.output;
  EXPECT_TRUE(contains(r.output, "writes downloaded_models/resnet18-f37072fd.pth")) << r.output;
  for (int e : {5, 10, 15, 20, 25, 30})
    EXPECT_TRUE(contains(r.output, "writes checkpoints/TS1/ResNet18_CIFAR10_FT_" + std::to_string(e) + ".pt")) << e;
  EXPECT_FALSE(contains(r.output, "FT_35")) << r.output;
  EXPECT_TRUE(contains(r.output, "writes checkpoints/TS1_FineTuning_ResNet18_CIFAR10/report.md")) << r.output;
  // Stages in order.
  EXPECT_LT(r.output.find("1. download"), r.output.find("2. finetune"));
  EXPECT_LT(r.output.find("2. finetune"), r.output.find("3. report"));
}

TEST(Cli, DryRunPlanOfPruningScenarios) {
  for (const auto& [file, code, name] :
       {std::tuple<std::string, std::string, std::string>{"nc", "NC", "NeuronCoverage"}, {"wanda", "W", "Wanda"}}) {
    auto r = run_expctl("run --dry-run configs/test_scenarios/TS1/" + file + ".yaml");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string dir = "checkpoints/TS1_" + name + "_ResNet18_CIFAR10/";
    EXPECT_TRUE(contains(r.output, "report folder: " + dir)) << r.output;
    EXPECT_TRUE(contains(r.output, "starts from: configs/test_scenarios/TS1/finetune.yaml")) << r.output;
    EXPECT_TRUE(contains(r.output, "reads  checkpoints/TS1/ResNet18_CIFAR10_FT_30.pt")) << r.output;
    for (int e : {5, 10, 15})
      EXPECT_TRUE(
          contains(r.output, "writes checkpoints/TS1/ResNet18_CIFAR10_FTAP_" + code + "_" + std::to_string(e) + ".pt"))
          << r.output;
    EXPECT_TRUE(contains(r.output, "writes " + dir + "pruned.pt")) << r.output;
  }
}

TEST(Cli, DryRunWritesNothingAndOnlySelectsOneStage) {
  expctl::test::TempDir tmp;
  std::filesystem::copy(std::string(EXPCTL_SOURCE_DIR) + "/configs", tmp / "configs",
                        std::filesystem::copy_options::recursive);
  size_t before = expctl::test::count_entries(tmp.path());
  auto r = run_expctl("run --dry-run --only finetune configs/test_scenarios/TS1/finetune.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "1. finetune")) << r.output;
  EXPECT_FALSE(contains(r.output, ". download")) << r.output;
  EXPECT_EQ(expctl::test::count_entries(tmp.path()), before);
  r = run_expctl("run --dry-run --only prune configs/test_scenarios/TS1/finetune.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(
      contains(r.output, "--only prune: the scenario has no stage 'prune'; its stages: download, finetune, report"))
      << r.output;
}

TEST(Cli, AnUnknownAllocatorSettingIsRefusedBeforeAnythingRuns) {
  auto r = expctl::test::run_shell("cd '" + std::string(EXPCTL_SOURCE_DIR) + "' && EXPCTL_MALLOC=jemalloc '" +
                                   std::string(EXPCTL_BINARY) + "' list");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.output, "EXPCTL_MALLOC=jemalloc: unknown value; use keep")) << r.output;
  r = expctl::test::run_shell("cd '" + std::string(EXPCTL_SOURCE_DIR) + "' && EXPCTL_MALLOC=default '" +
                              std::string(EXPCTL_BINARY) + "' list");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}
