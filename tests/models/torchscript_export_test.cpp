// TorchScript export: the exported file, loaded back with torch::jit::load (Python's torch.jit.load is checked in
// test_interop.cpp), gives the model's logits and keeps its parameter names, for dense and pruned ResNets and for
// graphs with concatenation, depthwise convs, squeeze-excitation multiplies, ReLU6, max-pooling and dropout.
#include "runner/models/torchscript_export.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <filesystem>

#include "runner/core/error.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"
#include "tests/models/tiny_net.h"

namespace em = expctl::models;
namespace fs = std::filesystem;

namespace {

class Export : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("expctl_export_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters()) p.value().uniform_(-0.3, 0.3);
  for (auto& b : m.named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
    else if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
  }
}

/// Loads `file`, checks its parameter and buffer names and values against `module`, returns its logits for `x`.
torch::Tensor run_exported(const fs::path& file, torch::nn::Module& module, const torch::Tensor& x) {
  torch::jit::Module loaded = torch::jit::load(file.string());
  std::map<std::string, torch::Tensor> want, got;
  for (const auto& p : module.named_parameters()) want[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) want[b.key()] = b.value();
  for (const auto& p : loaded.named_parameters()) got[p.name] = p.value;
  for (const auto& b : loaded.named_buffers()) got[b.name] = b.value;
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) {
    EXPECT_TRUE(got.count(name)) << name;
    if (got.count(name)) EXPECT_TRUE(torch::equal(got[name], t)) << name;
  }
  torch::NoGradGuard g;
  return loaded.forward({x}).toTensor();
}

TEST_F(Export, ResNetsDenseAndPrunedGiveTheirLogits) {
  torch::NoGradGuard g;
  struct Case {
    int depth;
    em::Stem stem;
    int64_t in_channels;
    bool prune;
    std::vector<int64_t> input;
  };
  for (const Case& c : {Case{18, em::Stem::ImageNet, 1, false, {2, 1, 28, 28}},
                        Case{18, em::Stem::Cifar, 3, true, {2, 3, 32, 32}},
                        Case{34, em::Stem::ImageNet, 3, true, {1, 3, 64, 64}}}) {
    em::ResNetSpec spec;
    spec.depth = c.depth;
    spec.stem = c.stem;
    spec.in_channels = c.in_channels;
    spec.num_classes = 10;
    spec.stage_widths = {16, 24, 32, 40};
    em::GraphNet model = em::make_resnet(spec);
    randomise(*model, 3);
    if (c.prune) {
      torch::manual_seed(4);
      std::map<std::string, torch::Tensor> keep;
      for (const auto& group : em::channel_groups(model))
        keep[group.name] = torch::randperm(group.size).slice(0, 0, group.size / 2 + 1);
      em::prune_groups(model, keep);
    }
    model->train();  // the export is an inference model whatever the mode
    const auto file = dir_ / ("resnet" + std::to_string(c.depth) + ".torchscript.pt");
    em::export_torchscript(*model, model->graph(), file);
    model->eval();
    const auto x = torch::randn(c.input);
    EXPECT_LT((run_exported(file, *model, x) - model->forward(x)).abs().max().item<double>(), 1e-5) << c.depth;
  }
}

TEST_F(Export, ConcatDepthwiseAndFlattenGraphs) {
  torch::NoGradGuard g;
  auto net = std::make_shared<expctl::testing::TinyNet>();
  randomise(*net, 5);
  net->eval();
  const auto file = dir_ / "tiny.pt";
  em::export_torchscript(*net, expctl::testing::TinyNet::graph(), file);
  const auto x = torch::randn({3, 3, 6, 6});
  EXPECT_LT((run_exported(file, *net, x) - net->forward(x)).abs().max().item<double>(), 1e-5);
}

/// conv (stride 2) -> ReLU6 -> max-pool -> squeeze-excitation (pool, 1x1 conv + bias, ReLU, 1x1 conv, sigmoid,
/// multiply) -> dropout -> flatten -> linear without bias.
struct SeNet : torch::nn::Module {
  torch::nn::Conv2d conv{torch::nn::Conv2dOptions(2, 6, 3).stride(2).padding(1).bias(false)};
  torch::nn::Conv2d fc1{torch::nn::Conv2dOptions(6, 3, 1)};
  torch::nn::Conv2d fc2{torch::nn::Conv2dOptions(3, 6, 1)};
  torch::nn::Linear head{torch::nn::LinearOptions(6 * 4, 5).bias(false)};
  SeNet() {
    register_module("conv", conv);
    register_module("se", torch::nn::Sequential(fc1, fc2));  // se.0, se.1
    register_module("head", head);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = torch::max_pool2d(torch::clamp(conv(x), 0, 6), {3, 3}, {2, 2}, {1, 1});
    auto s = torch::sigmoid(fc2(fc1(torch::adaptive_avg_pool2d(y, {1, 1})).relu()));
    return head(torch::flatten(y * s, 1));
  }
  static em::Graph graph() {
    em::Graph g;
    int y = g.conv("conv", g.input("input", 2), 2, 6, 3, 2, 1);
    y = g.max_pool("maxpool", g.activation("relu6", y, "relu6"), 3, 2, 1);
    int s = g.conv("se.0", g.adaptive_avg_pool("se.pool", y, 1, 1), 6, 3, 1, 1, 0, 1, true);
    s = g.conv("se.1", g.activation("se.relu", s), 3, 6, 1, 1, 0, 1, true);
    y = g.mul("se.mul", y, g.activation("se.sigmoid", s, "sigmoid"));
    g.output(g.linear("head", g.flatten("flatten", g.dropout("drop", y), 4), 24, 5, false));
    return g;
  }
};

TEST_F(Export, SqueezeExcitationReLU6MaxPoolDropoutAndABiasFreeLinear) {
  torch::NoGradGuard g;
  auto net = std::make_shared<SeNet>();
  randomise(*net, 6);
  const auto file = dir_ / "se.pt";
  em::export_torchscript(*net, SeNet::graph(), file);
  const auto x = torch::randn({2, 2, 8, 8});
  EXPECT_LT((run_exported(file, *net, x) - net->forward(x)).abs().max().item<double>(), 1e-5);
  // The derived groups of the same graph: the SE's scale joins the features it multiplies.
  const auto groups = em::derive_channel_groups(SeNet::graph());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "se");
  EXPECT_EQ(groups[0].producers, (std::vector<std::string>{"conv", "se.1"}));
}

TEST_F(Export, WhatItCannotExpressIsAClearErrorAndNoFile) {
  auto net = std::make_shared<SeNet>();
  em::Graph g;
  g.output(g.activation("act", g.conv("conv", g.input("input", 2), 2, 6, 3, 2, 1), "gelu"));
  const auto file = dir_ / "bad.pt";
  try {
    em::export_torchscript(*net, g, file);
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "TorchScript export: node 'act': activation 'gelu' is not supported (relu, relu6, sigmoid, hardswish, "
              "silu, hardsigmoid)");
  }
  em::Graph missing;
  missing.output(missing.conv("conv", missing.input("input", 2), 2, 6, 1, 1, 0, 1, true));
  try {
    em::export_torchscript(*net, missing, file);
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "TorchScript export: node 'conv' needs tensor 'conv.bias', which the model lacks");
  }
  EXPECT_FALSE(fs::exists(file));
  EXPECT_TRUE(fs::is_empty(dir_));  // no temporary file left either
}

}  // namespace
