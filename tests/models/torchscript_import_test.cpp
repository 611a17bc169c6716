// Bring your own model (runner/models/torchscript_import.h): CNNs traced by Debian's python3-torch/torchvision
// (tests/models/torchscript_models.py) convert into expctl's graph with the module's own logits, derive groups
// that follow their couplings, prune with NC and Wanda, and leave as exports Python loads; unsupported ops are
// refused with their source lines.
#include "runner/models/torchscript_import.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "plugins/pruner.h"
#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/metrics/metrics.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/deployment.h"
#include "runner/models/graph_net.h"
#include "runner/models/torchscript_export.h"
#include "runner/models/zoo.h"
#include "tests/core/test_util.h"
#include "tests/models/block_params.h"

namespace em = expctl::models;
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

const char* const kNames[] = {"resnet18", "mobilenet_v2", "vgg11_bn", "densenet121", "hand"};

const std::string kPython = "/usr/bin/python3";
std::string script() { return std::string(EXPCTL_SOURCE_DIR) + "/tests/models/torchscript_models.py"; }

/// The folder of traced models, each made once per test program, when a test first asks for it.
const fs::path& traced(std::initializer_list<const char*> names) {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / ("expctl_ts_import_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  static std::set<std::string> made;
  std::string todo;
  for (const char* n : names)
    if (made.insert(n).second) todo += std::string(" ") + n;
  if (!todo.empty()) {
    const auto r = expctl::test::run_shell(kPython + " " + script() + " make " + dir.string() + todo);
    if (r.exit_code != 0)
      ADD_FAILURE() << "tracing" << todo
                    << " failed (scripts/install-deps.sh installs python3-torch/torchvision): " << r.output;
  }
  return dir;
}

struct Cleanup : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("expctl_ts_import_" + std::to_string(::getpid())), ec);
  }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new Cleanup);

em::ImportedModel import(const std::string& name) {
  return em::import_torchscript(traced({name.c_str()}) / ("ts_" + name + ".pt"), {3, 32, 32});
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1.0, b.abs().max().item<double>());
}

const em::ChannelGroup* group_with_producer(const std::vector<em::ChannelGroup>& groups, const std::string& p) {
  for (const auto& g : groups)
    if (std::find(g.producers.begin(), g.producers.end(), p) != g.producers.end()) return &g;
  return nullptr;
}

}  // namespace

TEST(TorchScriptImport, TracedModelsGiveTheModulesLogitsPruneWithNcAndWandaAndExportForPython) {
  const fs::path& dir = traced({"resnet18", "mobilenet_v2", "vgg11_bn", "densenet121", "hand"});
  for (const std::string name : kNames) {
    SCOPED_TRACE(name);
    em::ImportedModel m = import(name);
    EXPECT_LE(m.max_difference, 1e-5);
    EXPECT_EQ(m.in_channels, 3);
    EXPECT_EQ(m.num_classes, 10);
    // Python's float32 logits for its own seeded batch.
    const auto io = expctl::io::read_torch_file(dir / ("io_" + name + ".pth"));
    const torch::Tensor x = io.find("x")->tensor;
    {
      torch::NoGradGuard ng;
      EXPECT_LE(relative_difference(m.network->forward(x), io.find("logits")->tensor), 1e-5);
    }
    const auto groups = em::channel_groups(m.network);
    ASSERT_FALSE(groups.empty());
    const auto dense = expctl::metrics::count_macs(m.network, 32, 32);

    torch::manual_seed(3);
    const auto calib = torch::randn({8, 3, 32, 32});
    const auto labels = torch::randint(0, 10, {8}, torch::kLong);
    const auto profile = torch::randn({8, 3, 32, 32}) * 0.8;  // the profiling pruners' (kmnc, nbc, snac) ranges
    for (const std::string pruner :
         {"neuron_coverage", "wanda", "apoz", "mean_activation", "kmnc", "nbc", "snac", "tknc"}) {
      SCOPED_TRACE(pruner);
      em::Network model = em::copy_network(m.network);
      model->eval();
      // The hand CNN's groups are 8 to 24 wide: the default min_channels / round_to of 8 would keep most whole.
      ordered_json overrides{{"sparsity", 0.5}, {"min_channels", 1}, {"round_to", 1}};
      if (pruner == "wanda") overrides["mode"] = "structured";
      const expctl::Params params = expctl::test::prune_params(pruner, overrides);
      const expctl::PrunePlan plan =
          expctl::test::run_pruner(pruner, model, params, /*batch_size=*/8, calib, labels, profile);
      ASSERT_FALSE(plan.keep.empty());
      em::prune_groups(model, plan.keep);
      const auto pruned = expctl::metrics::count_macs(model, 32, 32);
      EXPECT_LT(double(pruned.macs), 0.8 * double(dense.macs));
      model->eval();
      torch::NoGradGuard ng;
      const torch::Tensor logits = model->forward(x);
      EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
      // A checkpoint of the pruned model loads back with the same logits, without the TorchScript file.
      const fs::path ck = dir / (name + "_" + pruner + ".pt");
      em::save_checkpoint(ck, model, {{"pruner", pruner}});
      em::Network back = em::load_checkpoint(ck);
      back->eval();
      EXPECT_LE(relative_difference(back->forward(x), logits), 1e-6);
      if (pruner == "neuron_coverage") {
        em::export_torchscript(*model, model->graph(), dir / (name + "_pruned.torchscript.pt"));
        auto d = expctl::io::PickleValue::dict();
        d.set("x", expctl::io::PickleValue::from(x));
        d.set("logits", expctl::io::PickleValue::from(logits));
        expctl::write_file_atomic(dir / (name + "_pruned.io.pth"), expctl::io::serialize_torch_file(d), "logits");
      }
    }
  }
  const auto checked = expctl::test::run_shell(kPython + " " + script() + " check " + dir.string());
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
  std::cout << checked.output;
}

TEST(TorchScriptImport, GroupsOfTheHandCnnFollowItsConcatSqueezeExcitationAndDepthwiseResidual) {
  em::ImportedModel m = import("hand");
  const auto groups = em::channel_groups(m.network);
  // The two branches keep their own groups; the concatenation places b2's channels at offset 8 of the point
  // after it, and both feed the 1x1 fuse conv.
  const em::ChannelGroup* b1 = group_with_producer(groups, "b1");
  const em::ChannelGroup* b2 = group_with_producer(groups, "b2");
  ASSERT_TRUE(b1 && b2);
  EXPECT_NE(b1, b2);
  EXPECT_EQ(b1->consumers, std::vector<std::string>{"fuse"});
  EXPECT_TRUE(std::find(b2->members.begin(), b2->members.end(), em::GroupMember{"bn.weight", 0, 8, 1}) !=
              b2->members.end());
  EXPECT_TRUE(std::find(b2->members.begin(), b2->members.end(), em::GroupMember{"fuse.weight", 1, 8, 1}) !=
              b2->members.end());
  // The excitation gate scales fuse's channels and the residual adds proj's: one group of three producers, with
  // the depthwise conv carrying it and the classifier reading 16 features (4x4) per channel.
  const em::ChannelGroup* fuse = group_with_producer(groups, "fuse");
  ASSERT_TRUE(fuse);
  EXPECT_EQ(fuse->producers, (std::vector<std::string>{"fuse", "se.fc2", "proj"}));
  EXPECT_EQ(fuse->depthwise, std::vector<std::string>{"dw"});
  EXPECT_TRUE(std::find(fuse->members.begin(), fuse->members.end(), em::GroupMember{"fc.weight", 1, 0, 16}) !=
              fuse->members.end());
  // The squeeze width is a group of its own, with the SiLU's point; the stem's group carries the hardswish.
  const em::ChannelGroup* squeeze = group_with_producer(groups, "se.fc1");
  ASSERT_TRUE(squeeze);
  EXPECT_EQ(squeeze->activation_points, std::vector<std::string>{"se.act"});
  const em::ChannelGroup* stem = group_with_producer(groups, "stem.0");
  ASSERT_TRUE(stem);
  EXPECT_EQ(stem->activation_points, std::vector<std::string>{"stem.2"});
  EXPECT_EQ(stem->consumers, (std::vector<std::string>{"b1", "b2"}));
  // Functional ops take the name of the module whose forward ran them.
  std::set<std::string> names;
  for (const auto& n : m.network->graph().nodes()) names.insert(n.name);
  for (const char* want :
       {"relu", "relu6", "hardsigmoid", "cat", "se.mul", "add", "pool", "pool_2", "flatten", "drop", "fc"})
    EXPECT_TRUE(names.count(want)) << want;
}

TEST(TorchScriptImport, ResNet18KeepsTorchvisionsNamesAndItsStageStreamsAreGroups) {
  em::ImportedModel m = import("resnet18");
  const auto groups = em::channel_groups(m.network);
  std::set<std::string> names;
  for (const auto& g : groups) names.insert(g.name);
  for (const char* want : {"layer1", "layer2", "layer3", "layer4", "layer1.0.conv1", "layer4.1.conv1"})
    EXPECT_TRUE(names.count(want)) << want;
  const em::ChannelGroup* layer2 = group_with_producer(groups, "layer2.0.downsample.0");
  ASSERT_TRUE(layer2);
  EXPECT_EQ(layer2->name, "layer2");
  EXPECT_EQ(layer2->producers, (std::vector<std::string>{"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"}));
  // Every state-dict key is torchvision's.
  const auto sd = em::state_dict(*m.network);
  EXPECT_TRUE(sd.contains("layer3.1.bn2.running_var"));
  EXPECT_TRUE(sd.contains("fc.bias"));
  EXPECT_EQ(sd.size(), 122u);  // torchvision's resnet18 state dict
}

// An imported model deploys like a built-in one: its deployable form (batch norms folded, optimized) gives the
// logits of the user's own TorchScript file, and its bf16 form stays within bf16's rounding of them.
TEST(TorchScriptImport, AnImportedModelDeploysWithTheLogitsOfTheUsersFile) {
  for (const std::string name : {"resnet18", "hand"}) {
    em::ImportedModel m = import(name);
    em::Deployable d = em::make_deployable(*m.network, 32, 32);
    if (name == "resnet18") EXPECT_EQ(d.batch_norms_left, 0);
    torch::jit::Module file = torch::jit::load((traced({name.c_str()}) / ("ts_" + name + ".pt")).string());
    file.eval();
    torch::manual_seed(21);
    const torch::Tensor x = torch::randn({3, 3, 32, 32});
    torch::NoGradGuard g;
    const torch::Tensor want = file.forward({x}).toTensor();
    EXPECT_LE(relative_difference(d.optimized.forward({x}).toTensor(), want), 1e-4) << name;
    EXPECT_LE(relative_difference(d.frozen.forward({x}).toTensor(), want), 1e-4) << name;
    em::Deployable b = em::make_deployable(*m.network, 32, 32, torch::kCPU, em::DeployPrecision::Bf16);
    EXPECT_LE(relative_difference(b.optimized.forward({x}).toTensor(), want), 0.05) << name;
  }
}

// The groups derived from a traced torchvision model are the built-in model's, tensor for tensor: every coupling
// of the traced graph (residual adds, depthwise convs, DenseNet's concatenations) is found, and nothing more.
TEST(TorchScriptImport, GroupsOfTracedTorchvisionModelsEqualTheBuiltInModelsGroups) {
  auto signature = [](const std::vector<em::ChannelGroup>& groups) {
    std::vector<std::vector<em::GroupMember>> out;
    for (const auto& g : groups) {
      auto members = g.members;
      std::sort(members.begin(), members.end());
      out.push_back(members);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  em::ResNetSpec spec;
  spec.num_classes = 10;
  const std::pair<std::string, em::Network> cases[] = {
      {"resnet18", em::make_resnet(spec)},
      {"mobilenet_v2", em::GraphNet(em::zoo::mobilenet_v2(10, 3, false), "mobilenet_v2")},
      {"densenet121", em::GraphNet(em::zoo::densenet121(10, 3, false), "densenet121")},
  };
  for (const auto& [name, builtin] : cases) {
    SCOPED_TRACE(name);
    em::ImportedModel m = import(name);
    const auto converted = em::channel_groups(m.network), own = em::channel_groups(builtin);
    EXPECT_EQ(converted.size(), own.size());
    EXPECT_TRUE(signature(converted) == signature(own));
  }
}

TEST(TorchScriptImport, UnsupportedOpsAreListedWithTheirSourceLinesAndNothingRuns) {
  const fs::path file = traced({"lstm", "scripted", "hand"}) / "ts_lstm.pt";
  const std::string msg = expctl::test::error_of([&] { em::import_torchscript(file, {3, 32, 32}); });
  EXPECT_NE(msg.find(file.string() + ": cannot convert this TorchScript model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("aten::lstm at "), std::string::npos) << msg;
  EXPECT_NE(msg.find("torch/nn/modules/rnn.py:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(module 'lstm')"), std::string::npos) << msg;
  // The flatten into a sequence is named with the line of the model's own source.
  EXPECT_NE(msg.find("aten::flatten at " + script() + ":"), std::string::npos) << msg;
  EXPECT_NE(msg.find("only flattening to [N, features]"), std::string::npos) << msg;

  // A scripted model carries control flow: it is refused with the advice to trace it.
  const std::string scripted = expctl::test::error_of([&] {
    em::import_torchscript(traced({}) / "scripted_hand.pt", {3, 32, 32});
  });
  EXPECT_NE(scripted.find("prim::If at "), std::string::npos) << scripted;
  EXPECT_NE(scripted.find("control flow is not supported (a scripted model? trace it with torch.jit.trace)"),
            std::string::npos)
      << scripted;

  // A state dict is not a TorchScript file; a missing file and a wrong input shape are named too.
  const std::string sd = expctl::test::error_of([&] {
    em::import_torchscript(traced({}) / "io_hand.pth", {3, 32, 32});
  });
  EXPECT_NE(sd.find("io_hand.pth: not a TorchScript file LibTorch can load"), std::string::npos) << sd;
  const std::string missing = expctl::test::error_of([&] {
    em::import_torchscript(traced({}) / "nope.pt", {3, 32, 32});
  });
  EXPECT_NE(missing.find("nope.pt: no such file"), std::string::npos) << missing;
  const std::string shape = expctl::test::error_of([&] {
    em::import_torchscript(traced({}) / "ts_hand.pt", {1, 32, 32});
  });
  EXPECT_NE(shape.find("'stem.0' reads 3 channels, gets 1"), std::string::npos) << shape;
}

TEST(TorchScriptImport, AGrayDataSetAndANewClassCountAdaptTheImportedModel) {
  em::ImportedModel m = import("hand");
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  const auto gray = torch::rand({2, 1, 32, 32});
  // A gray image is an RGB image with R = G = B: the adapted model gives the file's logits for it.
  em::Network g = em::adapt_imported(m, 1, 0, "hand");
  g->eval();
  EXPECT_EQ(g->in_channels(), 1);
  EXPECT_LE(relative_difference(g->forward(gray), m.network->forward(gray.expand({2, 3, 32, 32}))), 1e-5);

  // A new classifier: 5 logits, every other tensor the file's.
  em::Network five = em::adapt_imported(m, 3, 5, "hand");
  five->eval();
  EXPECT_EQ(five->forward(torch::rand({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 5}));
  const auto a = em::state_dict(*five), b = em::state_dict(*m.network);
  for (const auto& item : a) {
    if (item.key().rfind("fc.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  }
  EXPECT_EQ(a["fc.weight"].sizes(), (std::vector<int64_t>{5, 384}));

  // Two channels cannot come from three.
  const std::string msg = expctl::test::error_of([&] { em::adapt_imported(m, 2, 0, "hand.pt"); });
  EXPECT_NE(msg.find("hand.pt: the model reads 3-channel images, the data set has 2 channels"), std::string::npos)
      << msg;
}
