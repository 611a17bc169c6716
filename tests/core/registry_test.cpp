// Every built-in name is registered (static registration can be dropped by a linker), each plugin's
// parameter table is well formed, and a minimal scenario using it validates.
#include "runner/core/registry.h"

#include <gtest/gtest.h>

#include <set>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/data/registry.h"
#include "runner/models/models.h"
#include "runner/pipeline/pipeline.h"
#include "tests/core/test_util.h"

using namespace expctl;

TEST(Registry, EveryBuiltInNameIsRegistered) {
  const Catalog& c = Catalog::instance();
  EXPECT_EQ(c.names("model"), (std::vector<std::string>{"DenseNet121", "MobileNetV2", "ResNet18", "ResNet34", "ResNet50",
                                                        "TorchScript", "VGG11_BN", "VGG16_BN"}));
  EXPECT_EQ(c.names("dataset"), (std::vector<std::string>{"CIFAR10", "CIFAR100", "FashionMNIST", "ImageFolder"}));
  EXPECT_EQ(c.names("pruner"),
            (std::vector<std::string>{"apoz", "bn_scale", "group_magnitude", "kmnc", "mean_activation", "nbc",
                                      "neuron_coverage", "random", "snac", "taylor", "tknc", "wanda"}));
  EXPECT_EQ(c.names("stage"), (std::vector<std::string>{"download", "finetune", "prune", "recover", "report"}));
  EXPECT_EQ(c.names("section"), (std::vector<std::string>{"paths", "runtime", "scenario"}));
  for (const auto& s : c.names("stage")) EXPECT_NE(StageRegistry::find(s), nullptr) << s;
  for (const auto& m : c.names("model")) EXPECT_NE(models::ModelRegistry::find(m), nullptr) << m;
  for (const auto& d : c.names("dataset")) EXPECT_NE(data::DatasetRegistry::find(d), nullptr) << d;
  for (const auto& p : c.names("pruner")) EXPECT_NE(PrunerRegistry::find(p), nullptr) << p;
  // Every built-in plugin is implemented, not just declared.
  for (const auto& s : c.names("stage")) EXPECT_TRUE(StageRegistry::find(s)->create) << s;
  for (const auto& p : c.names("pruner")) EXPECT_NE(PrunerRegistry::find(p)->create(), nullptr) << p;
  EXPECT_EQ(c.find("pruner", "neuron_coverage")->code, "NC");
  EXPECT_EQ(c.find("pruner", "wanda")->code, "W");
  // Codes name checkpoints (..._FTAP_{code}_{epoch}.pt): no two pruners share one.
  std::set<std::string> codes;
  for (const auto& p : c.names("pruner")) EXPECT_TRUE(codes.insert(c.find("pruner", p)->code).second) << p;
}

TEST(Registry, PluginTablesAreWellFormed) {
  const Catalog& c = Catalog::instance();
  for (const auto& kind : {"section", "model", "dataset", "pruner", "stage"}) {
    for (const auto& name : c.names(kind)) {
      const PluginInfo* p = c.find(kind, name);
      SCOPED_TRACE(std::string(kind) + " " + name);
      EXPECT_FALSE(p->summary.empty());
      for (const auto& s : p->params.specs()) {
        EXPECT_FALSE(s.help.empty()) << s.key;
        if (s.required) continue;
        // Defaults respect their own ranges.
        if (s.type == ParamType::Int || s.type == ParamType::Float) {
          double d = s.type == ParamType::Int ? double(std::get<int64_t>(s.default_value.v))
                                              : std::get<double>(s.default_value.v);
          EXPECT_TRUE(d >= s.lo && d <= s.hi) << s.key;
        }
        if (s.type == ParamType::Enum) {
          const auto& def = std::get<std::string>(s.default_value.v);
          EXPECT_NE(std::find(s.choices.begin(), s.choices.end(), def), s.choices.end()) << s.key;
        }
      }
    }
  }
  // A pruner's keys join the prune block: they must not clash with the stage's own.
  for (const auto& pruner : c.names("pruner"))
    for (const auto& s : c.find("pruner", pruner)->params.specs())
      EXPECT_EQ(c.find("stage", "prune")->params.find(s.key), nullptr) << pruner << " redeclares " << s.key;
}

TEST(Registry, EveryCombinationValidatesFromAMinimalConfig) {
  const Catalog& c = Catalog::instance();
  test::TempDir tmp;
  for (const auto& model : c.names("model"))
    for (const auto& dataset : c.names("dataset"))
      for (const auto& pruner : c.names("pruner")) {
        if (model == "TorchScript") continue;  // needs a traced file: tests/integration/ts4_smoke_test.cpp
        SCOPED_TRACE(model + " " + dataset + " " + pruner);
        // An image folder needs its folder; the rest run from their defaults.
        const std::string folder = dataset == "ImageFolder" ? ", path: images" : "";
        test::write_file(tmp / "s.yaml", "schema: 1\nscenario: {test_scenario: TS0, method: M}\nmodel: {name: " +
                                             model + "}\ndataset: {name: " + dataset + folder +
                                             "}\nstages: [download, finetune, prune, recover, report]\n"
                                             "prune: {pruner: " +
                                             pruner + "}\n");
        ScenarioConfig cfg = load_scenario(tmp / "s.yaml");
        EXPECT_EQ(cfg.stages.size(), 5u);
        // Each stage's plan can be computed from the defaults alone.
        Naming n(cfg);
        for (const auto& s : cfg.stages) EXPECT_FALSE(StageRegistry::find(s)->plan(cfg, n, cfg.stage(s)).empty()) << s;
      }
}

TEST(Registry, EveryModelBuildsForEveryDataSet) {
  const Catalog& c = Catalog::instance();
  test::TempDir tmp;
  for (const auto& model : c.names("model"))
    for (const auto& dataset : c.names("dataset")) {
      if (model == "TorchScript") continue;  // needs a traced file: tests/models/torchscript_import_test.cpp
      SCOPED_TRACE(model + " " + dataset);
      // An image folder's classes are its training folder's sub-folders: three here. `stem: cifar` (the small-input
      // variants): 28x28 images are too small for the five halvings of VGG's or DenseNet's ImageNet stem.
      for (const char* cls : {"a", "b", "c"}) std::filesystem::create_directories(tmp.path() / "images/train" / cls);
      const std::string folder =
          dataset == "ImageFolder" ? ", path: " + (tmp.path() / "images").string() + ", image_size: 32" : "";
      test::write_file(tmp / "s.yaml", "schema: 1\nscenario: {test_scenario: TS0, method: M}\nmodel: {name: " + model +
                                           ", pretrained: false, stem: cifar}\ndataset: {name: " + dataset + folder +
                                           "}\nstages: [download]\n");
      ScenarioConfig cfg = load_scenario(tmp / "s.yaml");
      const data::DatasetInfo d = data::dataset_info(cfg);
      models::Network net = models::build_model(cfg);
      auto logits = net->forward(torch::zeros({2, d.channels, d.height, d.width}));
      EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, d.num_classes}));
    }
}
