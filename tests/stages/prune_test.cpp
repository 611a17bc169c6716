// The prune stage in-process, on Fashion-MNIST files written here and a tiny model: the images it hands a pruner.
// A recording pruner, registered in this test binary only, keeps what it got.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "plugins/pruner.h"
#include "runner/models/checkpoint.h"
#include "runner/pipeline/pipeline.h"
#include "tests/data/idx_files.h"
#include "tests/training/toy_training.h"

namespace fs = std::filesystem;
using namespace expctl;
using json = nlohmann::json;

namespace {

struct Seen {
  torch::Tensor calibration, profile;
};
Seen& seen() {
  static Seen s;
  return s;
}

class Recorder : public Pruner {
 public:
  PrunePlan prune(PruneRequest& r) override {
    seen() = {r.calibration.to(torch::kCPU).clone(),
              r.profile.defined() ? r.profile.to(torch::kCPU).clone() : torch::Tensor()};
    return {};
  }
};

PrunerEntry recorder() {
  PrunerEntry e;
  e.info.kind = "pruner";
  e.info.name = "test_recorder";
  e.info.code = "TR";
  e.info.summary = "records the images the prune stage hands it";
  set_calibration_defaults(e.info, 6, 4, "recorded");
  set_profile_default(e.info, 5, "recorded");
  e.create = [] { return std::make_unique<Recorder>(); };
  return e;
}
EXPCTL_REGISTER(PrunerRegistry, recorder());

// Images of `a` that are also images of `b` (rows compared whole).
int64_t shared_images(const torch::Tensor& a, const torch::Tensor& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.size(0); ++i)
    for (int64_t j = 0; j < b.size(0); ++j) n += torch::equal(a[i], b[j]) ? 1 : 0;
  return n;
}

class PruneStage : public ::testing::Test {
 protected:
  void SetUp() override {
    auto text = [](const test::Bytes& b) { return std::string(b.begin(), b.end()); };
    const fs::path d = tmp_ / "data" / "FashionMNIST";
    fs::create_directories(d);
    // Image i of a split has the pixel pattern of i (idx_files.h): distinct within a split of up to 256 images.
    test::write_file(d / "train-images-idx3-ubyte", text(test::idx_images(24)));
    test::write_file(d / "train-labels-idx1-ubyte", text(test::idx_labels(24, 2049, -1, 4)));
    test::write_file(d / "t10k-images-idx3-ubyte", text(test::idx_images(20)));
    test::write_file(d / "t10k-labels-idx1-ubyte", text(test::idx_labels(20, 2049, -1, 4)));
    test::write_file(tmp_ / "s.yaml",
                     "schema: 1\nscenario: {test_scenario: TS0, method: P}\nmodel: {name: ResNet18, "
                     "pretrained: false}\ndataset: {name: FashionMNIST}\nstages: [prune]\npaths: "
                     "{checkpoints: \"" +
                         (tmp_ / "ck").string() + "\", datasets: \"" + (tmp_ / "data").string() +
                         "\"}\nprune: {pruner: test_recorder}\n");
  }
  json run(const std::vector<std::string>& sets) {
    const ScenarioConfig cfg = load_scenario(tmp_ / "s.yaml", sets);
    models::save_checkpoint(Naming(cfg).finetune_checkpoint(0), test::tiny_model());
    RunOptions o;
    o.console_log = false;
    o.force = true;
    Pipeline(cfg, o).run();
    return json::parse(test::read_file(Naming(cfg).stage_metrics("prune")));
  }
  test::TempDir tmp_;
};

}  // namespace

// Profile images never overlap the calibration images: from the same split they come out of what calibration left
// (and, from the test split, are held out of the held-out accuracy too); by default they are training images.
TEST_F(PruneStage, ProfileImagesAreDrawnApartFromTheCalibrationImages) {
  for (const auto& [calibration, profile] :
       std::vector<std::pair<std::string, std::string>>{{"test", "test"}, {"train", "train"}, {"test", "train"}}) {
    SCOPED_TRACE(calibration + " / " + profile);
    const json m = run({"prune.calibration.split=" + calibration, "prune.profile.split=" + profile});
    ASSERT_TRUE(seen().profile.defined());
    EXPECT_EQ(seen().calibration.size(0), 6);
    EXPECT_EQ(seen().profile.size(0), 5);
    EXPECT_EQ(m["profile"]["samples"], 5);
    EXPECT_EQ(m["profile"]["split"], profile);
    EXPECT_NE(m["profile"]["source"].get<std::string>().find(profile + " split"), std::string::npos)
        << m["profile"]["source"];
    if (calibration == profile) EXPECT_EQ(shared_images(seen().calibration, seen().profile), 0);
    if (calibration == "test") EXPECT_EQ(m["calibration"]["held_out_images"], profile == "test" ? 20 - 6 - 5 : 20 - 6);
  }
  // profile.samples: 0 hands the pruner none; more than calibration leaves is refused when the scenario is loaded.
  run({"prune.profile.samples=0"});
  EXPECT_FALSE(seen().profile.defined());
  try {
    load_scenario(tmp_ / "s.yaml", {"dataset.test_subset=10", "prune.profile.split=test"});
    ADD_FAILURE() << "5 profile images beside 6 calibration images of 10 were accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("prune.profile.samples: must be at most 4, the images of the test split (10) "
                                         "left by calibration.samples (6); got 5"),
              std::string::npos)
        << e.what();
  }
  try {  // from the other split: its own size bounds it
    load_scenario(tmp_ / "s.yaml", {"dataset.train_subset=12", "prune.profile.samples=13"});
    ADD_FAILURE() << "13 profile images of a 12-image training split were accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("prune.profile.samples: must be at most 12, the images of the train split "
                                         "(12); got 13"),
              std::string::npos)
        << e.what();
  }
}
