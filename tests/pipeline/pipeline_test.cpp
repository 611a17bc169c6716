// Pipeline mechanics with a stage defined here: manifests, skipping, --force, the lock, failures.
#include "runner/pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/lock.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

int g_runs = 0;

class TouchStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    ++g_runs;
    if (ctx.params.get_bool("fail")) throw Error("test_touch: asked to fail");
    fs::path out = ctx.naming.report_dir() / ctx.params.get_string("file");
    write_file_atomic(out, "run " + std::to_string(g_runs));
    ctx.outputs.push_back(out);
  }
};

StageEntry touch_entry() {
  StageEntry e;
  e.info.name = "test_touch";
  e.info.summary = "test stage: writes one file";
  e.info.params.add_string("file", "out.txt", "file written into the report folder");
  e.info.params.add_bool("fail", false, "throw instead");
  e.plan = [](const ScenarioConfig&, const Naming& n, const Params& p) {
    return std::vector<PlannedFile>{{PlannedFile::Access::Write, n.report_dir() / p.get_string("file"), "test output"}};
  };
  e.create = [] { return std::make_unique<TouchStage>(); };
  return e;
}
EXPCTL_REGISTER(StageRegistry, touch_entry());

// Reads a file another scenario made (an upstream input: its content is part of the fingerprint) and writes one.
StageEntry read_entry() {
  StageEntry e;
  e.info.name = "test_read";
  e.info.summary = "test stage: reads an upstream file, writes one";
  e.info.params.add_string("input", "", "the upstream file");
  e.plan = [](const ScenarioConfig&, const Naming& n, const Params& p) {
    std::vector<PlannedFile> out{{PlannedFile::Access::Read, p.get_string("input"), "upstream model"},
                                 {PlannedFile::Access::Write, n.report_dir() / "read.txt", "test output"}};
    out[0].upstream = true;
    return out;
  };
  e.create = [] {
    struct Read : Stage {
      void run(StageContext& ctx) override {
        ++g_runs;
        fs::path out = ctx.naming.report_dir() / "read.txt";
        write_file_atomic(out, "read " + std::to_string(g_runs));
        ctx.outputs.push_back(out);
      }
    };
    return std::make_unique<Read>();
  };
  return e;
}
EXPCTL_REGISTER(StageRegistry, read_entry());

struct Fixture : ::testing::Test {
  test::TempDir tmp;
  fs::path file = tmp / "s.yaml";
  void SetUp() override {
    g_runs = 0;
    test::write_file(file,
                     "schema: 1\nscenario: {test_scenario: TS0, method: Touch}\nmodel: {name: ResNet18}\n"
                     "dataset: {name: CIFAR10}\nstages: [test_touch]\npaths: {checkpoints: " +
                         (tmp / "ckpt").string() + "}\n");
  }
  void run(const std::vector<std::string>& sets = {}, RunOptions o = {}) {
    o.console_log = false;
    Pipeline(load_scenario(file, sets), o).run();
  }
  fs::path report() const { return tmp / "ckpt/TS0_Touch_ResNet18_CIFAR10"; }
};

}  // namespace

TEST_F(Fixture, FirstRunWritesOutputsManifestResolvedConfigAndLog) {
  run();
  EXPECT_EQ(g_runs, 1);
  EXPECT_EQ(test::read_file(report() / "out.txt"), "run 1");
  auto m = nlohmann::json::parse(test::read_file(report() / "manifests/test_touch.json"));
  EXPECT_EQ(m["stage"], "test_touch");
  EXPECT_EQ(m["fingerprint"].get<std::string>().size(), 64u);
  EXPECT_EQ(m["outputs"][0]["path"], (report() / "out.txt").string());
  EXPECT_EQ(m["outputs"][0]["sha256"], sha256_hex("run 1"));
  EXPECT_TRUE(m.contains("seconds"));
  std::string resolved = test::read_file(report() / "resolved.yaml");
  EXPECT_NE(resolved.find("test_touch:\n  file: out.txt"), std::string::npos) << resolved;
  std::string log = test::read_file(report() / "run.log");
  EXPECT_NE(log.find("stage test_touch: done"), std::string::npos) << log;
}

TEST_F(Fixture, RerunSkipsUntilConfigOrOutputsChangeOrForce) {
  run();
  run();
  EXPECT_EQ(g_runs, 1) << "an up-to-date stage ran again";
  run({"runtime.threads=3"});
  EXPECT_EQ(g_runs, 1) << "threads do not change results, so they do not invalidate a stage";
  run({"test_touch.file=other.txt"});
  EXPECT_EQ(g_runs, 2) << "a changed parameter must rerun the stage";
  run({"test_touch.file=other.txt"});
  EXPECT_EQ(g_runs, 2);
  fs::remove(report() / "other.txt");
  run({"test_touch.file=other.txt"});
  EXPECT_EQ(g_runs, 3) << "a missing output must rerun the stage";
  RunOptions force;
  force.force = true;
  run({"test_touch.file=other.txt"}, force);
  EXPECT_EQ(g_runs, 4);
}

TEST_F(Fixture, ASecondRunOfTheSameScenarioIsRefused) {
  ScenarioLock held(report() / ".lock", "TS0_Touch_ResNet18_CIFAR10");
  try {
    run();
    FAIL() << "ran while locked";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scenario TS0_Touch_ResNet18_CIFAR10 is already running"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(g_runs, 0);
}

TEST_F(Fixture, AFailedStageWritesNoManifest) {
  EXPECT_THROW(run({"test_touch.fail=true"}), Error);
  EXPECT_FALSE(fs::exists(report() / "manifests/test_touch.json"));
  EXPECT_NE(test::read_file(report() / "run.log").find("stage test_touch failed: test_touch: asked to fail"),
            std::string::npos);
  run();  // and the lock was released
  EXPECT_EQ(g_runs, 2);
}

TEST_F(Fixture, AChangedUpstreamFileOrAReplacedOutputRerunsTheStageAndTheDryRunSaysWhy) {
  const fs::path input = tmp / "upstream.pt";
  test::write_file(input, "model a");
  const std::vector<std::string> sets{"stages=[test_read]", "test_read.input=" + input.string()};
  auto plan = [&] { return Pipeline(load_scenario(file, sets), RunOptions{}).plan_text(); };
  EXPECT_NE(plan().find("1. test_read: runs, it has not run yet"), std::string::npos) << plan();
  run(sets);
  run(sets);
  EXPECT_EQ(g_runs, 1);
  EXPECT_NE(plan().find("1. test_read: up to date"), std::string::npos) << plan();
  auto m = nlohmann::json::parse(test::read_file(report() / "manifests/test_read.json"));
  EXPECT_EQ(m["inputs"][0]["path"], input.string());
  EXPECT_EQ(m["inputs"][0]["sha256"], sha256_hex("model a"));

  // Same name, other content: the stage runs again and says which input changed.
  test::write_file(input, "model b");
  EXPECT_NE(plan().find("1. test_read: runs, its input " + input.string() + " changed since it last ran (SHA-256 " +
                        sha256_hex("model a").substr(0, 12) + "... then, " + sha256_hex("model b").substr(0, 12) +
                        "... now)"),
            std::string::npos)
      << plan();
  run(sets);
  EXPECT_EQ(g_runs, 2);
  EXPECT_NE(test::read_file(report() / "run.log").find("stage test_read: running it again: its input"),
            std::string::npos);
  // Another upstream file named in the stage's block: its settings changed (the integration test sees a pruning
  // scenario read another fine-tuning epoch, with the same settings: "it now reads").
  auto other_sets = sets;
  other_sets[1] = "test_read.input=" + (tmp / "other.pt").string();
  EXPECT_NE(Pipeline(load_scenario(file, other_sets), RunOptions{}).plan_text().find("runs, its settings changed"),
            std::string::npos);

  // An output replaced behind the pipeline's back is not up to date, though its name is.
  test::write_file(report() / "read.txt", "someone else's");
  EXPECT_NE(plan().find("its output " + (report() / "read.txt").string() + " was changed or replaced"),
            std::string::npos)
      << plan();
  run(sets);
  EXPECT_EQ(g_runs, 3);
  // A missing input is a changed input too.
  fs::remove(input);
  EXPECT_NE(plan().find("its input " + input.string() + " is missing"), std::string::npos) << plan();
}
