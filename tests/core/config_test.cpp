// Scenario parsing with inline YAML: defaults, includes, --set, resolved output, naming.
#include "runner/core/config.h"

#include <gtest/gtest.h>

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/core/yaml_tree.h"
#include "tests/core/config_test_util.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const char* kMinimal = R"(schema: 1
scenario: {test_scenario: TS7, method: FineTuning}
model: {name: ResNet18}
dataset: {name: CIFAR10}
stages: [download, finetune]
)";

std::string error_of(const fs::path& file, const std::vector<std::string>& sets = {}) {
  return test::config_error_of(file, sets, "");
}

}  // namespace

TEST(Config, DefaultsAreFilledIn) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  ScenarioConfig c = load_scenario(tmp / "s.yaml");
  EXPECT_EQ(c.test_scenario(), "TS7");
  EXPECT_EQ(c.stages, (std::vector<std::string>{"download", "finetune"}));
  EXPECT_EQ(c.stage("finetune").get_int("epochs"), 30);
  EXPECT_DOUBLE_EQ(c.stage("finetune").get_float("optimizer.lr"), 0.05);
  EXPECT_TRUE(c.stage("finetune").at("epochs").is_default);
  EXPECT_EQ(c.model.get_string("stem"), "imagenet");
  EXPECT_EQ(c.dataset.get_string("md5"), "c32a1d4ab5d03f1284b67883e8d87530");
  EXPECT_EQ(c.runtime.get_int("seed"), 0);
  EXPECT_FALSE(c.has_stage("report"));
}

TEST(Config, ThePruneStageOwnsTheCalibrationKeysAndThePrunerGivesTheirDefaults) {
  test::TempDir tmp;
  std::string base = test::kMinimalScenario;
  base.replace(base.find("stages: [download]"), 18, "stages: [download, prune]");
  base += "prune: {pruner: ";
  test::write_file(tmp / "nc.yaml", base + "neuron_coverage}\n");
  test::write_file(tmp / "w.yaml", base + "wanda}\n");
  test::write_file(tmp / "set.yaml", base + "neuron_coverage, calibration: {samples: 64}}\n");
  const ScenarioConfig nc = load_scenario(tmp / "nc.yaml");
  EXPECT_EQ(nc.stage("prune").get_int("calibration.samples"), 512);
  EXPECT_EQ(nc.stage("prune").get_int("calibration.batch_size"), 128);
  EXPECT_TRUE(nc.stage("prune").at("calibration.samples").is_default);
  EXPECT_EQ(nc.stage("prune").get_string("calibration.split"), "test");
  EXPECT_EQ(load_scenario(tmp / "w.yaml").stage("prune").get_int("calibration.samples"), 128);
  EXPECT_EQ(load_scenario(tmp / "set.yaml").stage("prune").get_int("calibration.samples"), 64);
}

TEST(Config, IncludeIsOverriddenByTheIncludingFile) {
  test::TempDir tmp;
  test::write_file(tmp / "inc/base.yaml",
                   "schema: 1\nfinetune: {epochs: 7, optimizer: {lr: 0.2}}\nmodel: {name: ResNet34}\n");
  test::write_file(tmp / "s.yaml",
                   std::string("include: inc/base.yaml\n") + kMinimal + "finetune:\n  optimizer:\n    momentum: 0.8\n");
  ScenarioConfig c = load_scenario(tmp / "s.yaml");
  EXPECT_EQ(c.model_name(), "ResNet18");                                       // scalar replaced
  EXPECT_EQ(c.stage("finetune").get_int("epochs"), 7);                         // kept from the include
  EXPECT_DOUBLE_EQ(c.stage("finetune").get_float("optimizer.lr"), 0.2);        // nested map merged
  EXPECT_DOUBLE_EQ(c.stage("finetune").get_float("optimizer.momentum"), 0.8);  // ... key by key
  // The value's mark names the file it came from.
  EXPECT_EQ(*c.stage("finetune").at("epochs").mark.file, (tmp / "inc/base.yaml").lexically_normal().string());
}

TEST(Config, ErrorsInAnIncludedFileNameThatFile) {
  test::TempDir tmp;
  test::write_file(tmp / "base.yaml", "finetune:\n  epochs: many\n");
  test::write_file(tmp / "s.yaml", std::string("include: base.yaml\n") + kMinimal);
  EXPECT_EQ(error_of(tmp / "s.yaml"),
            (tmp / "base.yaml").string() + ":2:11: finetune.epochs: expected an integer, got 'many'");
}

TEST(Config, SetOverridesAnyValue) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  ScenarioConfig c = load_scenario(tmp / "s.yaml", {"finetune.epochs=3", "finetune.optimizer.lr=0.5",
                                                    "stages=[download]", "runtime.seed=42", "model.stem=cifar"});
  EXPECT_EQ(c.stages, std::vector<std::string>{"download"});
  EXPECT_EQ(c.runtime.get_int("seed"), 42);
  EXPECT_EQ(c.model.get_string("stem"), "cifar");
  // finetune is no longer listed, but its block is still validated.
  EXPECT_FALSE(c.has_stage("finetune"));
  c = load_scenario(tmp / "s.yaml", {"finetune.epochs=3", "finetune.optimizer.lr=0.5"});
  EXPECT_EQ(c.stage("finetune").get_int("epochs"), 3);
  EXPECT_DOUBLE_EQ(c.stage("finetune").get_float("optimizer.lr"), 0.5);
}

TEST(Config, BadSetIsAConfigErrorNamingTheOption) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  EXPECT_EQ(error_of(tmp / "s.yaml", {"finetune.epochs"}),
            "--set finetune.epochs: expected KEY=VALUE with a dotted key, e.g. --set finetune.epochs=5");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"=3"}),
            "--set =3: expected KEY=VALUE with a dotted key, e.g. --set finetune.epochs=5");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"finetune..epochs=3"}),
            "--set finetune..epochs=3: 'finetune..epochs' is not a valid dotted key");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"finetune.epochs=abc"}),
            "--set finetune.epochs=abc: finetune.epochs: expected an integer, got 'abc'");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"finetune.epoch=3"}),
            "--set finetune.epoch=3: finetune.epoch: unknown key (did you mean 'epochs'?); valid keys: epochs, "
            "batch_size, eval_batch_size, optimizer, label_smoothing, schedule, warmup_epochs, save_every, precision, "
            "channels_last, freeze_bn");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"model.name.x=3"}),
            "--set model.name.x=3: model.name is 'ResNet18', not a mapping");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"stages=[download"}), "--set stages=[download: the value is not valid YAML");
}

TEST(Config, MissingOrUnreadableFile) {
  test::TempDir tmp;
  EXPECT_EQ(error_of(tmp / "nope.yaml"), (tmp / "nope.yaml").string() + ": file not found");
  EXPECT_EQ(error_of(tmp.path()), tmp.path().string() + ": is a directory, not a YAML file");
  test::write_file(tmp / "locked.yaml", kMinimal);
  fs::permissions(tmp / "locked.yaml", fs::perms::none);
  if (::geteuid() != 0)  // root reads anything
    EXPECT_EQ(error_of(tmp / "locked.yaml"), (tmp / "locked.yaml").string() + ": cannot read the file");
}

TEST(Config, QuotedNumbersAreNotNumbers) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + "finetune: {epochs: \"3\"}\n");
  EXPECT_EQ(error_of(tmp / "s.yaml"),
            (tmp / "s.yaml").string() + ":6:20: finetune.epochs: expected an integer, got '3'");
}

TEST(Config, ResolvedConfigLoadsBackToTheSameValues) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + "finetune: {epochs: 3, optimizer: {lr: 0.125}}\n");
  ScenarioConfig c = load_scenario(tmp / "s.yaml");
  test::write_file(tmp / "resolved.yaml", c.resolved_yaml());
  ScenarioConfig again = load_scenario(tmp / "resolved.yaml");
  EXPECT_EQ(again.resolved().dump(), c.resolved().dump());
  EXPECT_NE(c.resolved_yaml().find("lr: 0.125"), std::string::npos) << c.resolved_yaml();
}

TEST(Config, AnchorsAndAliasesWork) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + "finetune: &ft {epochs: 4}\nrecover: *ft\n");
  ScenarioConfig c = load_scenario(tmp / "s.yaml", {"stages=[finetune, recover]"});
  EXPECT_EQ(c.stage("recover").get_int("epochs"), 4);
}

TEST(Naming, ScenarioCheckpointAndReportNames) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  ScenarioConfig c = load_scenario(tmp / "s.yaml", {"scenario.test_scenario=TS1", "scenario.method=Wanda"});
  Naming n(c);
  EXPECT_EQ(n.scenario_name(), "TS1_Wanda_ResNet18_CIFAR10");
  EXPECT_EQ(n.finetune_checkpoint(5), fs::path("checkpoints/TS1/ResNet18_CIFAR10_FT_5.pt"));
  EXPECT_EQ(n.recover_checkpoint("NC", 5), fs::path("checkpoints/TS1/ResNet18_CIFAR10_FTAP_NC_5.pt"));
  EXPECT_EQ(n.recover_checkpoint("W", 10), fs::path("checkpoints/TS1/ResNet18_CIFAR10_FTAP_W_10.pt"));
  EXPECT_EQ(n.report_dir(), fs::path("checkpoints/TS1_Wanda_ResNet18_CIFAR10"));
  EXPECT_EQ(n.reports_dir(), fs::path("reports/TS1"));
  c = load_scenario(tmp / "s.yaml", {"paths.checkpoints=/data/ckpt"});
  EXPECT_EQ(Naming(c).finetune_checkpoint(30), fs::path("/data/ckpt/TS7/ResNet18_CIFAR10_FT_30.pt"));
}

TEST(Naming, CheckpointEpochs) {
  EXPECT_EQ(checkpoint_epochs(30, 5), (std::vector<int64_t>{5, 10, 15, 20, 25, 30}));
  EXPECT_EQ(checkpoint_epochs(12, 5), (std::vector<int64_t>{5, 10, 12}));
  EXPECT_EQ(checkpoint_epochs(3, 5), (std::vector<int64_t>{3}));
  EXPECT_EQ(checkpoint_epochs(4, 0), (std::vector<int64_t>{4}));
}

TEST(Naming, PathPartsMustBeSafe) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  for (const char* bad : {"..", "a/b", "../x", ".hidden", "", "a b"}) {
    SCOPED_TRACE(bad);
    std::string err = error_of(tmp / "s.yaml", {std::string("scenario.method=\"") + bad + "\""});
    EXPECT_NE(err.find("scenario.method: must be a safe file name"), std::string::npos) << err;
  }
  EXPECT_EQ(error_of(tmp / "s.yaml", {"scenario.method=Fine-Tuning_v2.1"}), "");
}

TEST(YamlTree, DuplicateKeysAtAnyDepthAreErrors) {
  std::vector<std::string> errors;
  parse_yaml("a:\n  b: 1\n  c: {d: 1, d: 2}\n", "x.yaml", errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "x.yaml:3:13: a.c.d: duplicate key (first defined at line 3)");
}
