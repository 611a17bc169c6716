// The built-in CNNs beyond ResNet-18/34 (runner/models/zoo.h run by GraphNet): torchvision's structure, MACs and
// weights; derived channel groups against hand-written expectations; surgery; NC and Wanda-sp pruning; training,
// checkpoints, TorchScript export and Python interop.
#include "runner/models/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/metrics/metrics.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/deployment.h"
#include "runner/models/graph_net.h"
#include "runner/models/models.h"
#include "runner/models/torchscript_export.h"
#include "tests/core/test_util.h"
#include "tests/models/block_params.h"

namespace em = expctl::models;
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

struct Case {
  const char* registry;  ///< the YAML's model.name
  const char* arch;      ///< torchvision's function name
  int64_t macs224;       ///< forward hooks on torchvision's Conv2d/Linear at 1x3x224x224 (torchvision 0.14)
  int64_t params;        ///< torchvision's parameter count, 1000 classes
  double gflops;         ///< torchvision's published figure ("GFLOPS" = GMACs)
  size_t groups;         ///< derived channel groups
};

// 8 / 13 convs + 2 hidden linears; 1 stem + 16 expansions + 7 stage streams + the head conv; conv0 + 58 bottlenecks
// + 58 growths + 3 transitions; stem + 4 stage streams + 2 inner widths for each of the 16 blocks.
const Case kCases[] = {
    {"VGG11_BN", "vgg11_bn", 7609090048, 132868840, 7.61, 10},
    {"VGG16_BN", "vgg16_bn", 15470264320, 138365992, 15.47, 15},
    {"MobileNetV2", "mobilenet_v2", 300774272, 3504872, 0.30, 25},
    {"DenseNet121", "densenet121", 2834161664, 7978856, 2.83, 120},
    {"ResNet50", "resnet50", 4089184256, 25557032, 4.09, 37},
};

em::Graph graph_of(const std::string& arch, int64_t classes, int64_t channels, bool small) {
  if (arch == "vgg11_bn") return em::zoo::vgg_bn(11, classes, channels, small);
  if (arch == "vgg16_bn") return em::zoo::vgg_bn(16, classes, channels, small);
  if (arch == "mobilenet_v2") return em::zoo::mobilenet_v2(classes, channels, small);
  if (arch == "densenet121") return em::zoo::densenet121(classes, channels, small);
  return em::zoo::resnet50(classes, channels, small);
}

em::GraphNet make(const std::string& arch, int64_t classes, int64_t channels, bool small) {
  return em::GraphNet(graph_of(arch, classes, channels, small), arch);
}

/// Randomised BN statistics and affine parameters: defaults (0, 1, 1, 0) would hide mix-ups.
void randomise_bn(torch::nn::Module& model) {
  torch::NoGradGuard g;
  for (auto& m : model.modules(false))
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.1);
      bn->running_mean.normal_(0, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
    }
}

const em::ChannelGroup& group(const std::vector<em::ChannelGroup>& groups, const std::string& name) {
  for (const auto& g : groups)
    if (g.name == name) return g;
  throw std::runtime_error("no group " + name);
}

bool has_member(const em::ChannelGroup& g, const em::GroupMember& m) {
  return std::find(g.members.begin(), g.members.end(), m) != g.members.end();
}

int64_t offset_of(const em::ChannelGroup& g, const std::string& point) {
  for (size_t k = 0; k < g.activation_points.size(); ++k)
    if (g.activation_points[k] == point) return g.activation_offsets.at(k);
  return -1;
}

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST(Zoo, ParametersAndMacsEqualTorchvisionAt224) {
  for (const Case& c : kCases) {
    em::GraphNet net = make(c.arch, 1000, 3, false);
    EXPECT_EQ(count_parameters(*net), c.params) << c.arch;
    const auto macs = expctl::metrics::count_macs(net, 224, 224);
    EXPECT_EQ(macs.macs, c.macs224) << c.arch;
    EXPECT_NEAR(double(macs.macs) / 1e9, c.gflops, 0.005) << c.arch;
    EXPECT_EQ(em::channel_groups(net).size(), c.groups) << c.arch;
    // Every model is in the registry, as the YAML names it, and builds there for a gray 10-class data set.
    const em::ModelEntry* e = em::ModelRegistry::find(c.registry);
    ASSERT_NE(e, nullptr) << c.registry;
  }
}

TEST(Zoo, DerivedGroupsOfVggFollowTheFlattenIntoTheClassifier) {
  const auto groups = em::channel_groups(make("vgg16_bn", 10, 3, false));
  const auto& last = group(groups, "features.40");
  EXPECT_EQ(last.size, 512);
  EXPECT_EQ(last.consumers, std::vector<std::string>{"classifier.0"});
  EXPECT_TRUE(has_member(last, {"classifier.0.weight", 1, 0, 49}));  // avgpool 7x7: 49 features per channel
  EXPECT_TRUE(has_member(last, {"features.40.bias", 0, 0, 1}));
  EXPECT_TRUE(has_member(last, {"features.41.running_var", 0, 0, 1}));
  EXPECT_EQ(last.activation_points, std::vector<std::string>{"features.42"});
  const auto& hidden = group(groups, "classifier.0");
  EXPECT_EQ(hidden.size, 4096);
  EXPECT_EQ(hidden.consumers, std::vector<std::string>{"classifier.3"});
  EXPECT_EQ(hidden.activation_points, std::vector<std::string>{"classifier.1"});
  // The small-input variant: one linear after a global pool, one feature per channel.
  const auto small = em::channel_groups(make("vgg16_bn", 10, 1, true));
  EXPECT_EQ(small.size(), 13u);
  EXPECT_TRUE(has_member(group(small, "features.40"), {"classifier.weight", 1, 0, 1}));
}

TEST(Zoo, DerivedGroupsOfMobileNetV2CarryDepthwiseConvsAndResiduals) {
  const auto groups = em::channel_groups(make("mobilenet_v2", 10, 3, false));
  const auto& stem = group(groups, "features.0.0");
  EXPECT_EQ(stem.size, 32);
  EXPECT_EQ(stem.depthwise, std::vector<std::string>{"features.1.conv.0.0"});
  EXPECT_EQ(stem.consumers, std::vector<std::string>{"features.1.conv.1"});
  EXPECT_EQ(stem.activation_points, (std::vector<std::string>{"features.0.2", "features.1.conv.0.2"}));
  EXPECT_TRUE(has_member(stem, {"features.1.conv.0.0.weight", 0, 0, 1}));  // the depthwise filters follow
  const auto& expand = group(groups, "features.2.conv.0.0");
  EXPECT_EQ(expand.size, 96);
  EXPECT_EQ(expand.depthwise, std::vector<std::string>{"features.2.conv.1.0"});
  EXPECT_EQ(expand.consumers, std::vector<std::string>{"features.2.conv.2"});
  // The 24-channel stream: two projections tied by features.3's residual add.
  const em::ChannelGroup* stream = nullptr;
  for (const auto& g : groups)
    if (g.producers == std::vector<std::string>{"features.2.conv.2", "features.3.conv.2"}) stream = &g;
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->size, 24);
  EXPECT_EQ(stream->consumers, (std::vector<std::string>{"features.3.conv.0.0", "features.4.conv.0.0"}));
  EXPECT_TRUE(stream->activation_points.empty());  // a linear bottleneck: no activation carries it
  EXPECT_EQ(group(groups, "features.18.0").consumers, std::vector<std::string>{"classifier.1"});
}

TEST(Zoo, DerivedGroupsOfDenseNetPlaceEachLayersChannelsAtTheirOffsets) {
  const auto groups = em::channel_groups(make("densenet121", 10, 3, false));
  const std::string b1 = "features.denseblock1.";
  const auto& growth = group(groups, b1 + "denselayer1.conv2");
  EXPECT_EQ(growth.size, 32);
  std::vector<std::string> readers;
  for (int l = 2; l <= 6; ++l) readers.push_back(b1 + "denselayer" + std::to_string(l) + ".conv1");
  readers.push_back("features.transition1.conv");
  EXPECT_EQ(growth.consumers, readers);
  // Channel c of layer 1's output is channel 64 + c of every later concatenation in the block.
  EXPECT_TRUE(has_member(growth, {b1 + "denselayer2.conv1.weight", 1, 64, 1}));
  EXPECT_TRUE(has_member(growth, {b1 + "denselayer6.norm1.running_mean", 0, 64, 1}));
  EXPECT_TRUE(has_member(growth, {"features.transition1.norm.weight", 0, 64, 1}));
  EXPECT_EQ(offset_of(growth, b1 + "denselayer2.relu1"), 64);
  EXPECT_EQ(offset_of(growth, "features.transition1.relu"), 64);
  const auto& growth5 = group(groups, b1 + "denselayer5.conv2");
  EXPECT_TRUE(has_member(growth5, {"features.transition1.conv.weight", 1, 64 + 4 * 32, 1}));
  const auto& stem = group(groups, "features.conv0");
  EXPECT_EQ(stem.size, 64);
  EXPECT_EQ(stem.consumers.size(), 7u);
  const auto& bottleneck = group(groups, b1 + "denselayer1.conv1");
  EXPECT_EQ(bottleneck.size, 128);
  EXPECT_EQ(bottleneck.consumers, std::vector<std::string>{b1 + "denselayer1.conv2"});
  EXPECT_EQ(bottleneck.activation_points, std::vector<std::string>{b1 + "denselayer1.relu2"});
  // The last block's channels reach the classifier through norm5 and the final ReLU.
  const auto& last = group(groups, "features.denseblock4.denselayer16.conv2");
  EXPECT_EQ(last.consumers, std::vector<std::string>{"classifier"});
  EXPECT_TRUE(has_member(last, {"classifier.weight", 1, 512 + 15 * 32, 1}));
  EXPECT_EQ(offset_of(last, "relu"), 512 + 15 * 32);
}

TEST(Zoo, DerivedGroupsOfResNet50TieEachStagesProjectionsAndBlocks) {
  const auto groups = em::channel_groups(make("resnet50", 10, 3, false));
  const auto& stem = group(groups, "conv1");
  EXPECT_EQ(stem.size, 64);
  EXPECT_EQ(stem.consumers, (std::vector<std::string>{"layer1.0.conv1", "layer1.0.downsample.0"}));
  const auto& stage = group(groups, "layer1");
  EXPECT_EQ(stage.size, 256);
  EXPECT_EQ(stage.producers,
            (std::vector<std::string>{"layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"}));
  EXPECT_EQ(stage.activation_points, (std::vector<std::string>{"layer1.0", "layer1.1", "layer1.2"}));
  EXPECT_EQ(group(groups, "layer4").consumers.back(), "fc");
  EXPECT_EQ(group(groups, "layer3.5.conv2").consumers, std::vector<std::string>{"layer3.5.conv3"});
}

TEST(Zoo, RemovingExactlyZeroChannelsLeavesEveryModelsOutputUnchanged) {
  // Zeroing a group's BN weights and biases (or, where no BN carries the channels, its producers' rows) makes its
  // channels exactly 0 wherever they flow, so removing them changes the logits by summation order only.
  torch::NoGradGuard g;
  torch::manual_seed(5);
  for (const Case& c : kCases) {
    em::GraphNet base = make(c.arch, 10, 3, /*small=*/true);
    randomise_bn(*base);
    base->to(torch::kDouble);
    base->eval();
    const auto x = torch::randn({2, 3, 16, 16}, torch::kDouble);
    const auto reference = base->forward(x);
    std::set<std::string> bn_tensors;
    const em::Graph graph = base->graph();  // a copy: graph() returns by value
    for (const auto& n : graph.nodes())
      if (n.op == em::Op::BatchNorm) bn_tensors.insert({n.name + ".weight", n.name + ".bias"});
    const auto groups = em::channel_groups(base);
    const size_t step = std::max<size_t>(1, groups.size() / 6);
    for (size_t gi = 0; gi < groups.size(); gi += step) {
      const em::ChannelGroup& group = groups[gi];
      em::GraphNet model = em::copy_model(base);
      std::vector<int64_t> keep, removed;
      for (int64_t i = 0; i < group.size; ++i) (i % 3 == 1 ? removed : keep).push_back(i);
      const auto removed_t = torch::tensor(removed);
      const auto sd = em::state_dict(*model);
      bool any_bn = false;
      for (const auto& m : group.members) any_bn = any_bn || (m.dim == 0 && bn_tensors.count(m.tensor));
      for (const auto& m : group.members) {
        if (m.dim != 0) continue;
        const bool bn = bn_tensors.count(m.tensor) > 0;
        const bool producer = std::any_of(group.producers.begin(), group.producers.end(), [&](const std::string& p) {
          return m.tensor == p + ".weight" || m.tensor == p + ".bias";
        });
        if (bn || (!any_bn && producer)) em::member_rows(sd[m.tensor], m, group.size).index_fill_(0, removed_t, 0.0);
      }
      const auto zeroed = model->forward(x);
      const double scale = zeroed.abs().max().item<double>();
      EXPECT_GT((zeroed - reference).abs().max().item<double>(), 1e-9 * scale) << c.arch << " " << group.name;
      em::prune_groups(model, {{group.name, torch::tensor(keep)}});
      EXPECT_LT((model->forward(x) - zeroed).abs().max().item<double>(), 1e-10 * scale) << c.arch << " " << group.name
          << " (logits up to " << scale << ")";
      // The pruned graph rebuilds the same network.
      em::GraphNet rebuilt(model->graph(), c.arch);
      rebuilt->to(torch::kDouble);
      em::load_state_dict(*rebuilt, em::state_dict(*model), "rebuilt");
      rebuilt->eval();
      EXPECT_LT((rebuilt->forward(x) - zeroed).abs().max().item<double>(), 1e-10 * scale) << c.arch << " " << group.name;
    }
  }
}

TEST(Zoo, NeuronCoverageAndWandaStructuredShrinkEveryModelWhichThenTrainsSavesAndLoads) {
  const fs::path dir = fs::temp_directory_path() / ("expctl_zoo_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  torch::manual_seed(7);
  const auto x = torch::randn({8, 3, 32, 32});
  const auto y = torch::randint(0, 10, {8}, torch::kLong);
  const auto profile = torch::randn({8, 3, 32, 32}) * 0.8;  // the profiling pruners' (kmnc, nbc, snac) ranges
  for (const Case& c : kCases) {
    for (const std::string pruner :
         {"neuron_coverage", "wanda", "apoz", "mean_activation", "kmnc", "nbc", "snac", "tknc"}) {
      const std::string what = std::string(c.arch) + " " + pruner;
      em::GraphNet model = make(c.arch, 10, 3, /*small=*/true);
      randomise_bn(*model);
      model->eval();
      const auto before = expctl::metrics::count_macs(model, 32, 32);
      const int64_t params_before = count_parameters(*model);
      const expctl::Params params = expctl::test::prune_params(
          pruner, pruner == "wanda" ? ordered_json{{"mode", "structured"}, {"sparsity", 0.5}}
                                    : ordered_json{{"sparsity", 0.5}});
      const expctl::PrunePlan plan = expctl::test::run_pruner(pruner, model, params, /*batch_size=*/8, x, y, profile);
      ASSERT_FALSE(plan.keep.empty()) << what;
      em::prune_groups(model, plan.keep);
      const auto after = expctl::metrics::count_macs(model, 32, 32);
      EXPECT_LT(double(after.macs), 0.8 * double(before.macs)) << what;
      EXPECT_LT(count_parameters(*model), params_before) << what;
      // DenseNet's growth channels and MobileNetV2's depthwise convs shrink too.
      if (std::string(c.arch) == "densenet121")
        EXPECT_TRUE(plan.keep.count("features.denseblock2.denselayer3.conv2")) << what;
      if (std::string(c.arch) == "mobilenet_v2") {
        EXPECT_TRUE(plan.keep.count("features.5.conv.0.0")) << what;
        const em::Graph graph = model->graph();
        for (const auto& n : graph.nodes())
          if (n.name == "features.5.conv.1.0") EXPECT_EQ(n.groups, n.in_channels) << what;
      }
      // One training step runs on the pruned model, which saves, loads and gives the same logits.
      model->train();
      torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
      const auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      EXPECT_TRUE(std::isfinite(loss.item<double>())) << what;
      loss.backward();
      sgd.step();
      model->eval();
      const fs::path file = dir / (std::string(c.arch) + ".pt");
      em::save_checkpoint(file, model, {{"pruner", pruner}});
      em::Checkpoint ck;
      em::Network back = em::load_checkpoint(file, &ck);
      EXPECT_EQ(ck.family, "graph");
      EXPECT_EQ(ck.name, c.arch);
      back->eval();
      torch::NoGradGuard ng;
      EXPECT_LT((back->forward(x) - model->forward(x)).abs().max().item<float>(), 1e-5) << what;
      EXPECT_EQ(expctl::metrics::count_macs(back, 32, 32).macs, after.macs) << what;
    }
  }
  fs::remove_all(dir);
}

// torchvision state dicts saved by Python load into expctl's models and give Python's logits; expctl's
// checkpoints and TorchScript exports load back in Python and give expctl's.
TEST(Zoo, PythonInterop) {
  const std::string python = "/usr/bin/python3";
  const std::string script = std::string(EXPCTL_SOURCE_DIR) + "/tests/models/zoo_interop.py";
  const auto probe = expctl::test::run_shell(python + " -c 'import torch, torchvision'");
  if (probe.exit_code != 0)
    GTEST_FAIL() << "python3 with torch + torchvision unavailable (scripts/install-deps.sh installs it): "
                 << probe.output;
  const fs::path dir = fs::temp_directory_path() / ("expctl_zoo_py_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto made = expctl::test::run_shell(python + " " + script + " make " + dir.string());
  ASSERT_EQ(made.exit_code, 0) << made.output;
  for (const std::string arch : {"vgg11_bn", "mobilenet_v2", "densenet121", "resnet50"}) {
    em::GraphNet model = make(arch, 10, 3, false);
    em::load_state_dict(*model, expctl::io::read_state_dict_file(dir / ("tv_" + arch + ".pth")), arch);
    model->eval();
    const auto io = expctl::io::read_torch_file(dir / ("io_" + arch + ".pth"));
    const torch::Tensor xin = io.find("x")->tensor;
    torch::NoGradGuard ng;
    const torch::Tensor logits = model->forward(xin);
    const torch::Tensor want = io.find("logits")->tensor;
    EXPECT_LE((logits - want).abs().max().item<float>(), 1e-5 * std::max(1.0f, want.abs().max().item<float>()))
        << arch;
    em::save_checkpoint(dir / (arch + ".pt"), model);
    em::export_torchscript(*model, model->graph(), dir / (arch + ".torchscript.pt"));
    auto d = expctl::io::PickleValue::dict();
    d.set("x", expctl::io::PickleValue::from(xin));
    d.set("logits", expctl::io::PickleValue::from(logits));
    expctl::write_file_atomic(dir / (arch + ".io.pth"), expctl::io::serialize_torch_file(d), "logits");
    // Half of every group's channels removed (every other one): checkpoint, export and logits for Python.
    std::map<std::string, torch::Tensor> keep;
    for (const auto& g : em::channel_groups(model)) keep[g.name] = torch::arange(0, g.size, 2);
    em::prune_groups(model, keep);
    em::save_checkpoint(dir / (arch + "_pruned.pt"), model);
    em::export_torchscript(*model, model->graph(), dir / (arch + "_pruned.torchscript.pt"));
    em::write_deployable(*model, xin.size(2), xin.size(3), dir / (arch + "_pruned.deployed.pt"));
    auto p = expctl::io::PickleValue::dict();
    p.set("x", expctl::io::PickleValue::from(xin));
    p.set("logits", expctl::io::PickleValue::from(model->forward(xin)));
    expctl::write_file_atomic(dir / (arch + "_pruned.io.pth"), expctl::io::serialize_torch_file(p), "logits");
  }
  const auto checked = expctl::test::run_shell(python + " " + script + " check " + dir.string());
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
  std::cout << checked.output;
  fs::remove_all(dir);
}


TEST(Zoo, PretrainedImageNetWeightsAdaptToEachModelsVariants) {
  torch::NoGradGuard ng;
  torch::manual_seed(11);
  // DenseNet-121's published file uses the old key names ("denselayer1.norm.1.weight"); the small-input gray
  // variant takes the centre 3x3 of conv0's 7x7, summed over RGB, and a new 10-class classifier.
  {
    const em::ModelEntry& e = *em::ModelRegistry::find("DenseNet121");
    em::GraphNet imagenet = make("densenet121", 1000, 3, false);
    em::StateDict old_names;
    for (const auto& item : em::state_dict(*imagenet)) {
      std::string key = item.key();
      for (const char* part : {".norm1.", ".norm2.", ".conv1.", ".conv2."}) {
        const auto pos = key.find(part);
        if (key.find(".denselayer") != std::string::npos && pos != std::string::npos) key.insert(pos + 5, ".");
      }
      old_names.insert(key, item.value().clone());
    }
    ASSERT_TRUE(old_names.contains("features.denseblock1.denselayer1.norm.1.weight"));
    em::Network net = em::make_model(e, expctl::test::block_params(e.info.params, "model", {{"stem", "cifar"}}), 10, 1, &old_names, "densenet121-a639ec97.pth");
    const auto sd = em::state_dict(*net);
    EXPECT_TRUE(torch::equal(sd["features.conv0.weight"],
                             old_names["features.conv0.weight"].slice(2, 2, 5).slice(3, 2, 5).sum(1, true)));
    EXPECT_TRUE(torch::equal(sd["features.denseblock3.denselayer7.conv2.weight"],
                             old_names["features.denseblock3.denselayer7.conv.2.weight"]));
    EXPECT_EQ(sd["classifier.weight"].size(0), 10);
  }
  // VGG's small-input head is one new linear layer: ImageNet's three classifier layers are dropped.
  {
    const em::ModelEntry& e = *em::ModelRegistry::find("VGG11_BN");
    em::GraphNet imagenet = make("vgg11_bn", 1000, 3, false);
    const em::StateDict pretrained = em::state_dict(*imagenet);
    em::Network net = em::make_model(e, expctl::test::block_params(e.info.params, "model", {{"stem", "cifar"}}), 10, 3, &pretrained);
    const auto sd = em::state_dict(*net);
    EXPECT_TRUE(torch::equal(sd["features.25.weight"], pretrained["features.25.weight"]));
    EXPECT_FALSE(sd.contains("classifier.0.weight"));
    EXPECT_EQ(sd["classifier.weight"].sizes(), (std::vector<int64_t>{10, 512}));
  }
  // A gray image is an RGB image with equal channels: the adapted MobileNetV2 gives the ImageNet model's logits.
  {
    const em::ModelEntry& e = *em::ModelRegistry::find("MobileNetV2");
    em::GraphNet rgb = make("mobilenet_v2", 1000, 3, false);
    randomise_bn(*rgb);
    rgb->eval();
    const em::StateDict pretrained = em::state_dict(*rgb);
    em::Network gray = em::make_model(e, expctl::test::block_params(e.info.params, "model", {{"stem", "imagenet"}}), 1000, 1, &pretrained);
    gray->eval();
    const auto x = torch::randn({2, 1, 64, 64});
    const auto want = rgb->forward(x.repeat({1, 3, 1, 1}));
    EXPECT_LT((gray->forward(x) - want).abs().max().item<float>(), 1e-5 * std::max(1.0f, want.abs().max().item<float>()));
  }
}
