// ResNet-18/34 as graphs (runner/models/zoo.h): structure, initialisation, observation points, channel groups and surgery.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runner/core/error.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"

namespace em = expctl::models;

namespace {

std::string shape_text(const torch::Tensor& t) {
  std::string s;
  for (auto d : t.sizes()) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s.empty() ? "scalar" : s;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  return lines;
}

// Random BN statistics and affine parameters, so that tests notice mixed-up BN tensors.
void randomise_bn(em::GraphNet& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& m : model->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.1);
      bn->running_mean.normal_(0, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
    }
  }
}

em::ResNetSpec thin_spec(int depth, em::Stem stem) {
  em::ResNetSpec s;
  s.depth = depth;
  s.num_classes = 7;
  s.stem = stem;
  s.stage_widths = {8, 12, 16, 20};
  return s.resolved();
}

struct Recorder : em::ForwardObserver {
  std::vector<std::string> inputs, activations;
  std::map<std::string, std::vector<int64_t>> shapes;
  void on_layer_input(const std::string& layer, const torch::Tensor& x) override {
    inputs.push_back(layer);
    shapes[layer] = x.sizes().vec();
  }
  void on_activation(const std::string& point, const torch::Tensor& y) override {
    activations.push_back(point);
    shapes[point] = y.sizes().vec();
  }
};

// Every channel index that `keep` leaves out.
std::vector<int64_t> every_third(int64_t size) {
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < size; ++i)
    if (i % 3 != 1) keep.push_back(i);
  return keep;
}

}  // namespace

TEST(ResNet, StateDictNamesAndShapesEqualTorchvision) {
  for (int depth : {18, 34}) {
    em::ResNetSpec spec;
    spec.depth = depth;
    em::GraphNet model = em::make_resnet(spec);
    std::vector<std::string> ours;
    for (const auto& item : em::state_dict(*model)) ours.push_back(item.key() + " " + shape_text(item.value()));
    const auto expected = read_lines(std::string(EXPCTL_SOURCE_DIR) + "/tests/models/torchvision_resnet" +
                                     std::to_string(depth) + "_keys.txt");
    EXPECT_EQ(ours, expected) << "depth " << depth;
    // Parameters only: the same names torchvision's named_parameters() gives.
    size_t params = 0;
    for (const auto& p : model->named_parameters()) params += p.value().numel();
    EXPECT_EQ(params, depth == 18 ? 11689512u : 21797672u);
  }
}

TEST(ResNet, SpecValidationNamesTheField) {
  em::ResNetSpec bad;
  bad.depth = 50;
  EXPECT_THROW(bad.resolved(), expctl::Error);
  em::ResNetSpec widths;
  widths.block_widths = {1, 2, 3};
  try {
    widths.resolved();
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("block_widths needs 8 entries, got 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(em::parse_stem("cifar10"), expctl::Error);
  EXPECT_EQ(em::parse_stem("cifar"), em::Stem::Cifar);
}

TEST(ResNet, ForwardShapesForBothStemsAndGrayInput) {
  torch::NoGradGuard g;
  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = em::Stem::Cifar;
  spec.in_channels = 1;
  em::GraphNet model = em::make_resnet(spec);
  model->eval();
  EXPECT_EQ(model->forward(torch::randn({2, 1, 32, 32})).sizes(), (std::vector<int64_t>{2, 10}));
  Recorder rec;
  model->forward(torch::randn({1, 1, 32, 32}), &rec);
  EXPECT_EQ(rec.shapes["relu"], (std::vector<int64_t>{1, 64, 32, 32}));  // no max-pool, stride 1
  EXPECT_EQ(rec.shapes["layer4.1"], (std::vector<int64_t>{1, 512, 4, 4}));
  em::GraphNet imagenet = em::make_resnet(em::ResNetSpec{});
  imagenet->eval();
  Recorder rec2;
  EXPECT_EQ(imagenet->forward(torch::randn({1, 3, 64, 64}), &rec2).sizes(), (std::vector<int64_t>{1, 1000}));
  EXPECT_EQ(rec2.shapes["relu"], (std::vector<int64_t>{1, 64, 32, 32}));
  EXPECT_EQ(rec2.shapes["layer1.0.conv1"], (std::vector<int64_t>{1, 64, 16, 16}));  // after max-pool
}

TEST(ResNet, ObserverSeesEveryLayerInputAndActivationInOrder) {
  torch::NoGradGuard g;
  em::GraphNet model = em::make_resnet(thin_spec(34, em::Stem::Cifar));
  model->eval();
  const auto x = torch::randn({2, 3, 16, 16});
  Recorder rec;
  const auto with = model->forward(x, &rec);
  const auto without = model->forward(x);
  EXPECT_TRUE(torch::equal(with, without));
  EXPECT_EQ(rec.inputs, model->layer_names());
  EXPECT_EQ(rec.activations, model->activation_points());
  // Every Conv2d/Linear of the state dict is observed under its parameter prefix.
  std::set<std::string> weighted;
  for (const auto& item : em::state_dict(*model)) {
    const auto& k = item.key();
    if (k.size() > 7 && k.compare(k.size() - 7, 7, ".weight") == 0 && item.value().dim() != 1)
      weighted.insert(k.substr(0, k.size() - 7));
  }
  EXPECT_EQ(weighted, std::set<std::string>(rec.inputs.begin(), rec.inputs.end()));
  EXPECT_EQ(rec.shapes["fc"], (std::vector<int64_t>{2, 20}));
  EXPECT_EQ(rec.inputs[5], "layer1.2.conv1");
  // In torchvision's order, the downsample runs after conv2 of the first block of a stage.
  auto pos = [&](const std::string& n) {
    return std::find(rec.inputs.begin(), rec.inputs.end(), n) - rec.inputs.begin();
  };
  EXPECT_EQ(pos("layer2.0.downsample.0"), pos("layer2.0.conv2") + 1);
}

TEST(ChannelGroups, CoverEveryChannelDimensionExactlyOnce) {
  for (int depth : {18, 34}) {
    em::GraphNet model = em::make_resnet(thin_spec(depth, em::Stem::ImageNet));
    const auto groups = em::channel_groups(model);
    EXPECT_EQ(groups.size(), depth == 18 ? 4u + 8u : 4u + 16u);
    const auto sd = em::state_dict(*model);
    std::map<std::pair<std::string, int64_t>, int> seen;
    Recorder rec;
    torch::NoGradGuard g;
    model->eval();
    model->forward(torch::randn({1, 3, 64, 64}), &rec);
    const auto layers = model->layer_names();
    for (const auto& group : groups) {
      for (const auto& m : group.members) {
        ASSERT_TRUE(sd.contains(m.tensor)) << group.name << ": " << m.tensor;
        EXPECT_EQ(sd[m.tensor].size(m.dim), group.size) << group.name << ": " << m.tensor;
        seen[std::make_pair(m.tensor, m.dim)]++;
      }
      for (const auto& a : group.activation_points) EXPECT_EQ(rec.shapes[a][1], group.size) << a;
      for (const auto& p : group.producers) EXPECT_NE(std::find(layers.begin(), layers.end(), p), layers.end()) << p;
      for (const auto& c : group.consumers) EXPECT_EQ(rec.shapes[c][1], group.size) << c;
    }
    // Every channel dimension of every tensor, except the image's channels (conv1 in) and the classes (fc out),
    // belongs to exactly one group.
    for (const auto& item : sd) {
      const auto& t = item.value();
      if (t.dim() == 0) continue;
      for (int64_t d = 0; d < std::min<int64_t>(t.dim(), 2); ++d) {
        const bool free_dim = (item.key() == "conv1.weight" && d == 1) || (item.key().rfind("fc.", 0) == 0 && d == 0);
        if (t.dim() == 1 && d == 1) continue;
        EXPECT_EQ((seen[{item.key(), d}]), free_dim ? 0 : 1) << item.key() << " dim " << d;
      }
    }
    EXPECT_EQ(groups[0].name, "layer1");
    EXPECT_EQ(groups[0].activation_points.front(), "relu");
    const auto last = std::find_if(groups.begin(), groups.end(), [](const auto& g) { return g.name == "layer4"; });
    ASSERT_NE(last, groups.end());
    EXPECT_EQ(last->consumers.back(), "fc");
    EXPECT_EQ(groups.back().name, depth == 18 ? "layer4.1.conv1" : "layer4.2.conv1");
  }
}

TEST(ChannelGroups, PruningEachGroupKeepsTheModelRunnableAndRebuildable) {
  torch::NoGradGuard g;
  for (int depth : {18, 34}) {
    em::GraphNet base = em::make_resnet(thin_spec(depth, em::Stem::Cifar));
    const auto groups = em::channel_groups(base);
    for (const auto& group : groups) {
      em::GraphNet model = em::copy_model(base);
      const auto keep = every_third(group.size);
      em::prune_group(model, group, torch::tensor(keep));
      const auto sd = em::state_dict(*model);
      for (const auto& m : group.members)
        EXPECT_EQ(sd[m.tensor].size(m.dim), static_cast<int64_t>(keep.size())) << group.name << " " << m.tensor;
      model->eval();
      EXPECT_EQ(model->forward(torch::randn({2, 3, 16, 16})).sizes(), (std::vector<int64_t>{2, 7})) << group.name;
      // The spec follows the surgery, so the pruned model can be rebuilt and reloaded from spec + weights.
      em::GraphNet rebuilt = em::make_resnet(em::resnet_spec(*model));
      EXPECT_NO_THROW(em::load_state_dict(*rebuilt, sd, group.name)) << group.name;
      EXPECT_EQ(em::infer_spec(sd), em::resnet_spec(*model)) << group.name;
      // Module options follow too.
      for (auto& mod : model->modules(false))
        if (auto* conv = mod->as<torch::nn::Conv2dImpl>())
          EXPECT_EQ(conv->options.out_channels(), conv->weight.size(0));
    }
  }
}

TEST(ChannelGroups, RemovingExactlyZeroChannelsLeavesTheOutputUnchanged) {
  // Zeroing the BN weight and bias of a group's producers makes its channels exactly 0 after BN (+ ReLU, + the
  // residual add of zeros), so its consumers multiply them by their weights and add exact zeros. Removing those
  // channels must give the same logits up to summation order; double precision makes that ~1e-15.
  torch::NoGradGuard g;
  for (int depth : {18, 34}) {
    em::GraphNet base = em::make_resnet(thin_spec(depth, em::Stem::Cifar));
    randomise_bn(base, 3);
    base->to(torch::kDouble);
    base->eval();
    const auto x = torch::randn({2, 3, 16, 16}, torch::kDouble);
    const auto reference = base->forward(x);
    for (const auto& group : em::channel_groups(base)) {
      em::GraphNet model = em::copy_model(base);
      model->to(torch::kDouble);
      model->eval();
      const auto keep = every_third(group.size);
      std::vector<int64_t> removed;
      for (int64_t i = 0; i < group.size; ++i)
        if (i % 3 == 1) removed.push_back(i);
      const auto sd = em::state_dict(*model);
      const auto removed_t = torch::tensor(removed);
      for (const auto& m : group.members) {
        const bool bn_affine =
            m.tensor.find("bn") != std::string::npos || m.tensor.find("downsample.1") != std::string::npos;
        if (bn_affine && (m.tensor.size() >= 7 && (m.tensor.compare(m.tensor.size() - 7, 7, ".weight") == 0 ||
                                                   m.tensor.compare(m.tensor.size() - 5, 5, ".bias") == 0)))
          sd[m.tensor].index_fill_(0, removed_t, 0.0);
      }
      const auto zeroed = model->forward(x);
      // The zeroed channels change the output (so the test has teeth) ...
      EXPECT_GT((zeroed - reference).abs().max().item<double>(), 1e-6) << group.name;
      em::prune_group(model, group, torch::tensor(keep));
      const auto pruned = model->forward(x);
      // ... and removing them changes nothing.
      EXPECT_LT((pruned - zeroed).abs().max().item<double>(), 1e-12) << group.name;
    }
  }
}

TEST(ChannelGroups, PruneGroupRejectsBadIndicesAndUnknownGroups) {
  em::GraphNet model = em::make_resnet(thin_spec(18, em::Stem::Cifar));
  const auto groups = em::channel_groups(model);
  const auto& g = groups[1];
  EXPECT_THROW(em::prune_group(model, g, torch::tensor(std::vector<int64_t>{0, 0, 1})), expctl::Error);
  EXPECT_THROW(em::prune_group(model, g, torch::tensor(std::vector<int64_t>{0, 99})), expctl::Error);
  EXPECT_THROW(em::prune_group(model, g, torch::tensor(std::vector<int64_t>{-1})), expctl::Error);
  EXPECT_THROW(em::prune_group(model, g, torch::empty({0}, torch::kLong)), expctl::Error);
  EXPECT_THROW(em::prune_group(model, g, torch::tensor({0.0, 1.0})), expctl::Error);
  try {
    em::prune_groups(model, {{"layer1", torch::tensor({0, 1})}, {"layer9", torch::tensor({0})}});
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown channel group 'layer9'"), std::string::npos);
  }
  EXPECT_EQ(em::resnet_spec(*model), thin_spec(18, em::Stem::Cifar));  // nothing changed
  // Unsorted keep indices are fine; the result keeps the original order.
  em::GraphNet a = em::copy_model(model);
  em::prune_groups(a, {{"layer2", torch::tensor({5, 0, 3})}});
  EXPECT_EQ(em::resnet_spec(*a).stage_widths, (std::vector<int64_t>{8, 3, 16, 20}));
  EXPECT_TRUE(
      torch::equal(em::state_dict(*a)["layer2.0.bn2.running_var"],
                   em::state_dict(*model)["layer2.0.bn2.running_var"].index_select(0, torch::tensor({0, 3, 5}))));
}

TEST(ResNet, AdaptPretrainedStemGrayAndClasses) {
  torch::NoGradGuard g;
  em::GraphNet pretrained = em::make_resnet(em::ResNetSpec{});
  randomise_bn(pretrained, 5);
  pretrained->eval();
  const auto sd = em::state_dict(*pretrained);

  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = em::Stem::Cifar;
  spec.in_channels = 1;
  em::GraphNet fresh = em::make_resnet(spec);
  const auto fresh_fc = em::state_dict(*fresh)["fc.weight"].clone();
  const auto adapted = em::adapt_pretrained(sd, fresh);
  EXPECT_TRUE(torch::equal(adapted["conv1.weight"], sd["conv1.weight"].sum(1, true).slice(2, 2, 5).slice(3, 2, 5)));
  EXPECT_TRUE(torch::equal(adapted["fc.weight"], fresh_fc));
  EXPECT_TRUE(torch::equal(adapted["layer3.1.bn2.running_mean"], sd["layer3.1.bn2.running_mean"]));
  em::load_state_dict(*fresh, adapted);

  // Gray adaptation is exact: the gray model on g equals the RGB model on (g, g, g).
  em::ResNetSpec gray;
  gray.in_channels = 1;
  em::GraphNet gray_model = em::make_pretrained_resnet(gray, sd);
  gray_model->eval();
  const auto img = torch::randn({2, 1, 64, 64});
  const auto a = gray_model->forward(img), b = pretrained->forward(img.repeat({1, 3, 1, 1}));
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-4);
  EXPECT_TRUE(torch::equal(em::state_dict(*gray_model)["fc.weight"], sd["fc.weight"]));  // same classes: kept
}

TEST(ResNet, CopyModelIsIndependentAndLoadStateDictNamesProblems) {
  em::GraphNet model = em::make_resnet(thin_spec(18, em::Stem::Cifar));
  em::GraphNet copy = em::copy_model(model);
  {
    torch::NoGradGuard g;
    em::state_dict(*copy)["fc.weight"].fill_(3.0);
  }
  EXPECT_FALSE(torch::equal(em::state_dict(*copy)["fc.weight"], em::state_dict(*model)["fc.weight"]));

  auto sd = em::state_dict(*model);
  em::StateDict bad;
  for (const auto& item : sd)
    if (item.key() != "layer1.0.conv1.weight") bad.insert(item.key(), item.value());
  bad.insert("extra.weight", torch::zeros({1}));
  bad["fc.bias"] = torch::zeros({3});
  try {
    em::load_state_dict(*copy, bad, "some.pth");
    FAIL();
  } catch (const expctl::DataError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("some.pth"), std::string::npos) << m;
    EXPECT_NE(m.find("missing keys: layer1.0.conv1.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected keys: extra.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("fc.bias: file has [3], model has [7]"), std::string::npos) << m;
  }
  EXPECT_EQ(em::state_dict(*copy)["fc.weight"][0][0].item<float>(), 3.0f);  // unchanged after a failed load
}

TEST(ResNet, InitialisedLikeTorchvisionsResNet) {
  // torchvision's ResNet: convs kaiming-normal (fan-out, ReLU gain), BN weight 1 / bias 0, and fc left at the
  // framework's default (uniform within ±1/sqrt(in_features), bias too) — unlike VGG's N(0, 0.01) classifier.
  torch::manual_seed(0);
  em::GraphNet model = em::make_resnet(em::ResNetSpec{});
  const auto sd = em::state_dict(*model);
  const auto& conv = sd["layer3.0.conv2.weight"];  // 256 x 256 x 3 x 3
  const double expected_std = std::sqrt(2.0 / (256.0 * 9.0));
  EXPECT_NEAR(conv.std().item<double>(), expected_std, 0.01 * expected_std);
  EXPECT_NEAR(conv.mean().item<double>(), 0.0, 0.01 * expected_std);
  const double bound = 1.0 / std::sqrt(512.0);
  for (const char* key : {"fc.weight", "fc.bias"}) {
    const auto& t = sd[key];
    EXPECT_LE(t.abs().max().item<double>(), bound) << key;
    EXPECT_GT(t.abs().max().item<double>(), 0.9 * bound) << key;  // uniform over the whole range, not N(0, 0.01)
  }
  EXPECT_TRUE(torch::equal(sd["layer2.1.bn1.weight"], torch::ones({128})));
  EXPECT_TRUE(torch::equal(sd["layer2.1.bn1.bias"], torch::zeros({128})));
  // The same seed gives the same network.
  torch::manual_seed(0);
  em::GraphNet again = em::make_resnet(em::ResNetSpec{});
  for (const auto& item : em::state_dict(*again)) EXPECT_TRUE(torch::equal(item.value(), sd[item.key()])) << item.key();
}
