// What `run` would refuse about a value, loading (and so `validate`) refuses first, naming the key: bytes that are
// not UTF-8, a device this machine does not have, more calibration images than the split holds. Files that are
// not scenarios are described, never quoted. Calibrating on the whole test split runs to the report.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "runner/core/compat.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/yaml_tree.h"
#include "runner/training/runtime.h"
#include "tests/core/config_test_util.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const char* const kMinimal = test::kMinimalScenario;

std::string error_of(const fs::path& file, const std::vector<std::string>& sets = {}) {
  return test::config_error_of(file, sets);
}

// The top-level keys a scenario may have, as messages list them.
const char* const kTopKeys =
    "schema, include, scenario, model, dataset, stages, runtime, paths, sweep, download, finetune, prune, recover, "
    "report";

std::string prune_scenario(const std::string& dataset, const std::string& prune) {
  return "schema: 1\nscenario: {test_scenario: TS7, method: P}\nmodel: {name: ResNet18}\ndataset: " + dataset +
         "\nstages: [prune]\nprune: " + prune + "\n";
}

}  // namespace

TEST(Utf8, WellFormedMeansUnicodesTable) {
  EXPECT_EQ(invalid_utf8_at("plain, caf\xC3\xA9, \xE2\x82\xAC, \xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(invalid_utf8_at("ab\xFF"), 2u);
  EXPECT_EQ(invalid_utf8_at("\xC0\x80"), 0u);          // overlong NUL
  EXPECT_EQ(invalid_utf8_at("x\xE0\x80\xAF"), 1u);     // overlong '/'
  EXPECT_EQ(invalid_utf8_at("\xED\xA0\x80"), 0u);      // a UTF-16 surrogate
  EXPECT_EQ(invalid_utf8_at("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(invalid_utf8_at("caf\xC3"), 3u);           // cut short
  EXPECT_EQ(printable("a\xFF\n\xC3\xA9"), "a\\xFF\\x0A\xC3\xA9");
  EXPECT_EQ(utf8_problem("caf\xE9"), "not valid UTF-8 (byte 0xE9 at offset 3)");
}

TEST(Utf8, KeysValuesSetsAndFileNamesAreCheckedAtLoad) {
  test::TempDir tmp;
  // A key (in a nested block), a value in a list, a value in a mapping (fixture 39 holds a description).
  test::write_file(tmp / "s.yaml", std::string(kMinimal) +
                                       "finetune: {optimizer: {\"l\xFFr\": 0.1}}\n"
                                       "report: {columns: [ok, \"b\xC3\"]}\n");
  EXPECT_EQ(error_of(tmp / "s.yaml"),
            (tmp / "s.yaml").string() +
                ":6:24: finetune.optimizer.l\\xFFr: the key is not valid UTF-8 (byte 0xFF "
                "at offset 1)\n" +
                (tmp / "s.yaml").string() +
                ":7:24: report.columns: the value is not valid UTF-8 (byte 0xC3 at offset 1)");
  test::write_file(tmp / "s.yaml", kMinimal);
  EXPECT_EQ(error_of(tmp / "s.yaml", {"scenario.description=caf\xE9"}),
            "--set scenario.description=caf\\xE9: scenario.description: the value is not valid UTF-8 (byte 0xE9 "
            "at offset 3)");
  EXPECT_EQ(error_of(tmp / "s.yaml", {"paths.check\xFFpoints=x"}),
            "--set paths.check\\xFFpoints=x: paths.check\\xFFpoints: the key is not valid UTF-8 (byte 0xFF at offset "
            "11)");
  const fs::path latin1 = tmp / "caf\xE9.yaml";
  test::write_file(latin1, kMinimal);
  EXPECT_EQ(error_of(latin1), (tmp / "caf").string() +
                                  "\\xE9.yaml: the file name is not valid UTF-8 (byte 0xE9 at "
                                  "offset " +
                                  std::to_string((tmp / "caf").string().size()) + ")");
}

TEST(Device, SyntaxAndPresenceAreCheckedAtLoadAndByResolveDevice) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kMinimal);
  const std::string set = "--set runtime.device=";
  for (const char* bad : {"bogus", "cuda:", "cuda:-1", "cuda:01", "cuda:x", "CPU", "cpu:0", "mps", "cuda:99999"}) {
    SCOPED_TRACE(bad);
    const std::string why = std::string("expected auto, cpu, cuda or cuda:N, got '") + bad + "'";
    // Quoted, so that YAML reads "cuda:" as a string rather than a mapping.
    const std::string quoted = std::string("\"") + bad + "\"";
    EXPECT_EQ(error_of(tmp / "s.yaml", {"runtime.device=" + quoted}), set + quoted + ": runtime.device: " + why);
    try {
      resolve_device(bad);
      ADD_FAILURE() << "resolve_device accepted it";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "runtime.device: " + why);
    }
  }
  for (const char* ok : {"auto", "cpu"})
    EXPECT_EQ(error_of(tmp / "s.yaml", {std::string("runtime.device=") + ok}), "(no error)");
  // What `run` refuses on this machine, loading refuses: CUDA without CUDA, or a device index beyond those present.
  const std::string expected =
      torch::cuda::is_available() ? "'cuda:99': this machine has " + std::to_string(torch::cuda::device_count()) +
                                        " CUDA device" + (torch::cuda::device_count() == 1 ? "" : "s") +
                                        ", cuda:0 to cuda:" + std::to_string(torch::cuda::device_count() - 1)
                                  : "'cuda:99' needs CUDA, but this LibTorch build (" +
                                        std::string(compat::torch_version()) + ") sees no CUDA device; use auto or cpu";
  EXPECT_EQ(error_of(tmp / "s.yaml", {"runtime.device=cuda:99"}), set + "cuda:99: runtime.device: " + expected);
  try {
    resolve_device("cuda:99");
    ADD_FAILURE() << "resolve_device accepted cuda:99";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "runtime.device: " + expected);
  }
  if (!torch::cuda::is_available())
    EXPECT_NE(error_of(tmp / "s.yaml", {"runtime.device=cuda"}).find("'cuda' needs CUDA"), std::string::npos);
}

TEST(Calibration, MoreSamplesThanTheSplitHoldsAreRefusedAtLoad) {
  test::TempDir tmp;
  const fs::path f = tmp / "p.yaml";
  // Beyond the published split (CIFAR-10: 10,000 test, 50,000 train images).
  test::write_file(f, prune_scenario("{name: CIFAR10}", "{pruner: wanda, calibration: {samples: 10001}}"));
  EXPECT_EQ(error_of(f), f.string() +
                             ":6:47: prune.calibration.samples: must be at most 10000, the images of the "
                             "test split; got 10001");
  test::write_file(f,
                   prune_scenario("{name: CIFAR10}", "{pruner: wanda, calibration: {split: train, samples: 50001}}"));
  EXPECT_EQ(error_of(f), f.string() +
                             ":6:61: prune.calibration.samples: must be at most 50000, the images of the "
                             "train split; got 50001");
  // Beyond a subset; a default count (Neuron Coverage: 512) is reported at the subset that is too small for it.
  test::write_file(f, prune_scenario("{name: FashionMNIST, test_subset: 256}", "{pruner: neuron_coverage}"));
  EXPECT_EQ(error_of(f), f.string() +
                             ":4:44: prune.calibration.samples: must be at most 256, the images of the "
                             "test split (dataset.test_subset); got 512");
  EXPECT_NE(error_of(f, {"dataset.train_subset=100", "prune.calibration.split=train", "prune.calibration.samples=101"})
                .find("--set prune.calibration.samples=101: prune.calibration.samples: must be at most 100, the images "
                      "of the train split (dataset.train_subset); got 101"),
            std::string::npos);
  // The whole split is allowed, and a subset larger than the split leaves the whole split.
  EXPECT_EQ(error_of(f, {"prune.calibration.samples=256"}), "(no error)");
  EXPECT_EQ(error_of(f, {"dataset.test_subset=20000", "prune.calibration.samples=10000"}), "(no error)");
  EXPECT_NE(error_of(f, {"dataset.test_subset=20000", "prune.calibration.samples=10001"}).find("at most 10000"),
            std::string::npos);
}

// The pruners that profile neuron ranges (kmnc, nbc, snac) refuse to run without profile images, at load; tknc
// needs none.
TEST(Profile, APrunerThatProfilesRefusesNoProfileImagesAtLoad) {
  test::TempDir tmp;
  const fs::path f = tmp / "p.yaml";
  for (const char* pruner : {"kmnc", "nbc", "snac"}) {
    test::write_file(f,
                     prune_scenario("{name: CIFAR10}", std::string("{pruner: ") + pruner + ", profile: {samples: 0}}"));
    EXPECT_NE(error_of(f).find(f.string() + ":6:"), std::string::npos) << error_of(f);
    EXPECT_NE(error_of(f).find(": prune.profile.samples: must be at least 1: " + std::string(pruner) +
                               " takes each neuron's range from the profile images"),
              std::string::npos)
        << error_of(f);
  }
  test::write_file(f, prune_scenario("{name: CIFAR10}", "{pruner: tknc, profile: {samples: 0}}"));
  EXPECT_EQ(error_of(f), "(no error)");
  test::write_file(f, prune_scenario("{name: CIFAR10}", "{pruner: kmnc}"));  // the default: 1024 training images
  EXPECT_EQ(error_of(f), "(no error)");
}

TEST(NotAScenario, ItsContentIsNeverEchoed) {
  test::TempDir tmp;
  const std::string secret = "hunter2-token";
  // Text, a list, malformed YAML whose parser message would quote it: described by kind, never quoted.
  test::write_file(tmp / "text.txt", secret + "\nmore text\n");
  test::write_file(tmp / "list.txt", "- " + secret + "\n");
  test::write_file(tmp / "escape.txt", "\"" + secret + "\\q\"\n");
  test::write_file(tmp / "version.txt", "%YAML 9." + secret + "\n---\na: 1\n");
  test::write_file(tmp / "shadow", "root:" + secret + ":19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\n");
  test::write_file(tmp / "binary.bin", std::string("\x7f"
                                                   "ELF\x02\x01\x01\0\0\0",
                                                   10) +
                                           secret + "\xff\xfe\n");
  const std::vector<std::pair<std::string, std::string>> cases{
      {"text.txt", ":1:1: a scenario file must be a mapping of keys, found a scalar"},
      {"list.txt", ":1:1: a scenario file must be a mapping of keys, found a list"},
      {"escape.txt", ":1:17: malformed YAML: unknown escape character"},
      {"version.txt", ":1:1: malformed YAML: bad YAML version"},
      {"binary.bin", ":1:10: malformed YAML: unknown escape character"},  // yaml-cpp's reading of a NUL byte
      // /etc/shadow's lines end in ':', so YAML reads each as a key: one message, no key quoted.
      {"shadow", ":1:1: 2 top-level keys that are not expctl's, the first here; valid: " + std::string(kTopKeys) +
                     "; a file named by include or starts_from may be any file, so none of its text is shown"},
  };
  for (const auto& [name, message] : cases) {
    SCOPED_TRACE(name);
    const std::string path = (tmp / name).string();
    test::write_file(tmp / "inc.yaml", "include: " + name + "\n" + kMinimal);
    EXPECT_EQ(error_of(tmp / "inc.yaml"), path + message);
    test::write_file(tmp / "up.yaml", "schema: 1\nscenario: {test_scenario: TS7, method: P, starts_from: " + name +
                                          "}\nmodel: {name: ResNet18}\ndataset: {name: CIFAR10}\nstages: [download]\n");
    std::string err = error_of(tmp / "up.yaml");
    EXPECT_EQ(err, (tmp / "up.yaml").string() + ":2:56: scenario.starts_from: " + path + " is not a valid scenario:\n" +
                       path + message);
    EXPECT_EQ(err.find("hunter2"), std::string::npos);
  }
}

TEST(Calibration, TheWholeTestSplitRunsToTheReportWithoutAHeldOutAccuracy) {
  test::TempDir tmp;
  const fs::path t = tmp.path();
  const std::string sets =
      " --set paths.checkpoints=" + (t / "ckpt").string() + " --set paths.datasets=" + (t / "data").string() +
      " --set paths.models=" + (t / "models").string() +
      " --set dataset.train_subset=64 --set dataset.test_subset=32 --set runtime.threads=2"
      " --set finetune.epochs=1 --set finetune.batch_size=32 --set finetune.eval_batch_size=32"
      " --set report.latency.warmup=1 --set report.latency.repeats=1 --set report.latency.large_batch=2"
      " --set report.latency.large_batch_repeats=1 --set report.plot=false";
  const std::string ts0 = "configs/test_scenarios/TS0/";
  auto r = test::run_expctl("run " + ts0 + "finetune.yaml --set stages=[download,finetune]" + sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Neuron Coverage, as the faster of the two pruners; 32 images are the whole test subset.
  r = test::run_expctl("run " + ts0 + "nc.yaml --set stages=[prune,report] --set prune.calibration.samples=32" + sets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path dir = t / "ckpt/TS0_NeuronCoverage_ResNet18_FashionMNIST";
  auto metrics = nlohmann::json::parse(test::read_file(dir / "prune_metrics.json"));
  EXPECT_EQ(metrics["calibration"]["samples"], 32);
  EXPECT_EQ(metrics["calibration"]["held_out_images"], 0);
  EXPECT_TRUE(metrics["calibration"].contains("held_out_note"));
  // The subset is the whole calibration set: described once ("subset of 32 ..., subset of 32 ..." before).
  const std::string source = metrics["calibration"]["source"];
  EXPECT_NE(source.find("class-balanced subset of 32 samples (seed 0)"), std::string::npos) << source;
  EXPECT_EQ(source.find("subset of 32"), source.rfind("subset of 32")) << source;
  EXPECT_FALSE(metrics["before"].contains("held_out"));
  EXPECT_FALSE(metrics["after"].contains("held_out"));
  auto report = nlohmann::json::parse(test::read_file(dir / "report.json"));
  ASSERT_EQ(report["rows"].size(), 2u);
  EXPECT_FALSE(report["rows"][1].contains("accuracy_held_out"));
  EXPECT_EQ(report["calibration"]["held_out_images"], 0);
}

TEST(NotAScenario, AnIncludedFileIsOneMessageHoweverLong) {
  test::TempDir tmp;
  // A thousand "name: value" lines (a /proc file, a .env file): one line of output, naming no key, through the CLI.
  std::string env;
  for (int i = 0; i < 1000; ++i) env += "SECRET_" + std::to_string(i) + ": hunter2\n";
  test::write_file(tmp / "vars.env", env);
  test::write_file(tmp / "s.yaml", "include: vars.env\n" + std::string(kMinimal));
  auto r = test::run_expctl("validate s.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output.find("hunter2"), std::string::npos) << r.output.substr(0, 500);
  EXPECT_EQ(r.output.find("SECRET"), std::string::npos) << r.output.substr(0, 500);
  EXPECT_NE(r.output.find("vars.env:1:1: 1000 top-level keys that are not expctl's, the first here; valid: "),
            std::string::npos)
      << r.output;
  // A typo in a shared defaults file is still pointed out, with the key it resembles (not the key as written).
  test::write_file(tmp / "defaults.yaml", "finetun:\n  epochs: 3\n");
  test::write_file(tmp / "s.yaml", "include: defaults.yaml\n" + std::string(kMinimal));
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "defaults.yaml").string() +
                                          ":1:1: a top-level key that is not expctl's (did you mean 'finetune'?); "
                                          "valid: " +
                                          kTopKeys +
                                          "; a file named by include or starts_from may be any file, so none of its "
                                          "text is shown");
  // The scenario named on the command line is the user's own: its unknown keys are named, as before.
  test::write_file(tmp / "s.yaml", "finetun: {}\n" + std::string(kMinimal));
  EXPECT_NE(error_of(tmp / "s.yaml").find(":1:1: finetun: unknown key (did you mean 'finetune'?)"), std::string::npos);
}

TEST(NotAScenario, ProblemListsAreCapped) {
  test::TempDir tmp;
  // 300 missing includes: 100 lines and a count, not 300 lines.
  std::string list;
  for (int i = 0; i < 300; ++i) list += (i ? ", m" : "m") + std::to_string(i) + ".yaml";
  test::write_file(tmp / "s.yaml", "include: [" + list + "]\n" + kMinimal);
  const std::string err = error_of(tmp / "s.yaml");
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 100) << err.substr(0, 300);
  EXPECT_NE(err.find("\n... and 200 more problems"), std::string::npos) << err.substr(err.size() - 200);
}

TEST(PathKeys, ANulByteIsRefusedAtLoadAndNothingIsCreated) {
  test::TempDir tmp;
  // YAML's "\0" escape; a shell cannot pass a NUL in --set (the argument ends there).
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + "paths: {checkpoints: \"ckpt\\0evil\"}\n");
  const std::string expected =
      ":6:22: paths.checkpoints: a path cannot hold a NUL byte (\\x00 at offset 4): the system would cut it to 'ckpt'";
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "s.yaml").string() + expected);
  for (const char* command : {"validate", "run"}) {
    SCOPED_TRACE(command);
    auto r = test::run_expctl(std::string(command) + " s.yaml", tmp.path());  // the file as given: relative
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("s.yaml" + expected), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "ckpt"));
  }
  // Every path-typed key, in any block (scenario.starts_from here).
  test::write_file(tmp / "s.yaml", "schema: 1\nscenario: {test_scenario: TS7, method: P, starts_from: \"a\\0.yaml\"}\n"
                                   "model: {name: ResNet18}\ndataset: {name: CIFAR10}\nstages: [download]\n");
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "s.yaml").string() +
                                          ":2:56: scenario.starts_from: a path cannot hold a NUL byte (\\x00 at offset "
                                          "1): the system would cut it to 'a'");
}

TEST(PathKeys, AFolderThatCannotBeOneIsRefusedAtValidate) {
  test::TempDir tmp;
  test::write_file(tmp / "file.txt", "not a folder\n");
  test::write_file(tmp / "s.yaml", kMinimal);
  const std::string set = "--set paths.checkpoints=";
  const std::vector<std::pair<std::string, std::string>> cases{
      {"/dev/null", "'/dev/null' exists and is a character device, not a directory; name a folder (it is created "
                    "when missing)"},
      {"/dev/null/x", "'/dev/null/x' lies under '/dev/null', which is a character device, not a directory: nothing "
                      "can be created there"},
      {"file.txt", "'file.txt' exists and is a regular file, not a directory; name a folder (it is created when "
                   "missing)"},
      {"file.txt/a/b", "'file.txt/a/b' lies under 'file.txt', which is a regular file, not a directory: nothing can "
                       "be created there"},
  };
  for (const auto& [path, why] : cases) {
    SCOPED_TRACE(path);
    auto r = test::run_expctl("validate s.yaml " + set + path, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output, set + path + ": paths.checkpoints: " + why + "\n");
  }
  // Each paths.* key; a folder that does not exist yet is fine (the run creates it).
  auto r = test::run_expctl("validate s.yaml --set paths.models=/dev/null --set paths.reports=new/folder", tmp.path());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output, "--set paths.models=/dev/null: paths.models: '/dev/null' exists and is a character device, not "
                      "a directory; name a folder (it is created when missing)\n");
  EXPECT_FALSE(fs::exists(tmp / "new"));
}

TEST(StartsFrom, ALoopIsReportedOnce) {
  test::TempDir tmp;
  auto scenario = [](const std::string& up) {
    return "schema: 1\nscenario: {test_scenario: TS7, method: P, starts_from: " + up +
           "}\nmodel: {name: ResNet18}\ndataset: {name: CIFAR10}\nstages: [download]\n";
  };
  test::write_file(tmp / "a.yaml", scenario("b.yaml"));
  test::write_file(tmp / "b.yaml", scenario("a.yaml"));
  auto r = test::run_expctl("validate a.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output, "a.yaml:2:56: scenario.starts_from: b.yaml is not a valid scenario:\n"
                      "b.yaml:2:56: scenario.starts_from: scenarios start from each other in a loop: a.yaml -> b.yaml "
                      "-> a.yaml\n");
  test::write_file(tmp / "self.yaml", scenario("self.yaml"));
  r = test::run_expctl("validate self.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output,
            "self.yaml:2:56: scenario.starts_from: scenarios start from each other in a loop: self.yaml -> self.yaml\n");
}

namespace {

// Sets EXPCTL_AVAILABLE_MEMORY for a scope (the loader and the binaries it starts read it).
struct AvailableMemory {
  explicit AvailableMemory(const std::string& bytes) { ::setenv("EXPCTL_AVAILABLE_MEMORY", bytes.c_str(), 1); }
  ~AvailableMemory() { ::unsetenv("EXPCTL_AVAILABLE_MEMORY"); }
};

const char* const kReportScenario =
    "schema: 1\nscenario: {test_scenario: TS7, method: FineTuning}\nmodel: {name: ResNet18}\n"
    "dataset: {name: CIFAR10}\nstages: [report]\nreport: {latency: {large_batch: 65536}}\n";

}  // namespace

TEST(BatchSizes, ALargeBatchBeyondMemoryIsRefusedAtLoadNamingTheKey) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", kReportScenario);
  const AvailableMemory one_gib("1073741824");
  // ResNet-18 (ImageNet stem) on 3x32x32: the image (3,072 floats), and bn1 reading conv1's 64x16x16 output while
  // it writes its own (2 x 16,384): 35,840 floats, 143,360 bytes per image.
  const std::string why =
      "report.latency.large_batch: a batch of 65536 needs at least 8.75 GiB for ResNet18's activations on 3x32x32 "
      "images, more than the 1.00 GiB of memory available; at most 7489 fits (143360 bytes per image: the image, and "
      "the largest layer's inputs and output, at 4 bytes)";
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "s.yaml").string() + ":6:33: " + why);
  for (const char* command : {"validate", "run"}) {
    SCOPED_TRACE(command);
    auto r = test::run_expctl(std::string(command) + " s.yaml", tmp.path());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("s.yaml:6:33: " + why + "\n"), std::string::npos) << r.output;
  }
  // What fits passes; a --set is named as the place.
  EXPECT_EQ(error_of(tmp / "s.yaml", {"report.latency.large_batch=7489"}), "(no error)");
  const std::string err = error_of(tmp / "s.yaml", {"report.latency.large_batch=7490"});
  EXPECT_EQ(err.rfind("--set report.latency.large_batch=7490: report.latency.large_batch: a batch of 7490 needs at "
                      "least 1.00 GiB",
                      0),
            0u)
      << err;
  // Evaluation batches are cut to the split they batch (10,000 test images), then bounded the same way.
  test::write_file(tmp / "f.yaml", "schema: 1\nscenario: {test_scenario: TS7, method: FineTuning}\n"
                                   "model: {name: ResNet18}\ndataset: {name: CIFAR10}\nstages: [finetune]\n"
                                   "finetune: {eval_batch_size: 65536}\n");
  const AvailableMemory small("500000000");
  EXPECT_EQ(error_of(tmp / "f.yaml"),
            (tmp / "f.yaml").string() +
                ":6:29: finetune.eval_batch_size: a batch of 10000 needs at least 1.34 GiB for ResNet18's activations "
                "on 3x32x32 images, more than the 0.47 GiB of memory available; at most 3487 fits (143360 bytes per "
                "image: the image, and the largest layer's inputs and output, at 4 bytes)");
}

TEST(BatchSizes, ATrainingBatchIsBoundedByItsSplitAndByMemory) {
  test::TempDir tmp;
  test::write_file(tmp / "f.yaml", "schema: 1\nscenario: {test_scenario: TS7, method: FineTuning}\n"
                                   "model: {name: ResNet18}\ndataset: {name: CIFAR10, train_subset: 100}\n"
                                   "stages: [finetune]\n");
  // The default batch (128) against a subset of 100: reported at the subset.
  EXPECT_EQ(error_of(tmp / "f.yaml"), (tmp / "f.yaml").string() +
                                          ":4:40: finetune.batch_size: must be at most 100, the images of the train "
                                          "split (dataset.train_subset): a larger batch is never full, and incomplete "
                                          "batches are dropped; got 128");
  EXPECT_EQ(error_of(tmp / "f.yaml", {"finetune.batch_size=100"}), "(no error)");
  // Memory: autograd keeps every conv, linear and batch-norm input (95,744 elements per image; bf16 under autocast:
  // 2 bytes each).
  const AvailableMemory one_gib("1073741824");
  EXPECT_EQ(error_of(tmp / "f.yaml", {"dataset.train_subset=0", "finetune.batch_size=50000"}),
            "--set finetune.batch_size=50000: finetune.batch_size: a batch of 50000 needs at least 8.92 GiB for "
            "ResNet18's activations on 3x32x32 images, more than the 1.00 GiB of memory available; at most 5607 fits "
            "(191488 bytes per image: every conv, linear and batch-norm layer's input, kept for the backward pass, at "
            "2 bytes)");
  // fp32 training keeps them at 4 bytes.
  EXPECT_NE(error_of(tmp / "f.yaml", {"dataset.train_subset=0", "finetune.batch_size=5000", "finetune.precision=fp32"})
                .find("at most 2803 fits (382976 bytes per image"),
            std::string::npos);
}
