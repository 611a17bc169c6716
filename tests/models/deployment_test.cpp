// The deployable model (runner/models/deployment.h): frozen, batch norms folded, optimized for inference; its logits
// equal the model's for every built-in model, a model pruned by Neuron Coverage and one masked by Wanda.
#include "runner/models/deployment.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "plugins/pruner.h"
#include "runner/core/error.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/models.h"
#include "runner/models/torchscript_export.h"
#include "tests/core/test_util.h"
#include "tests/models/block_params.h"

namespace em = expctl::models;

namespace {

// Batch norms with statistics of their own, so that folding them is visible in the logits.
void randomise_batch_norms(torch::nn::Module& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& b : model.named_buffers()) {
    if (b.key().find("running_var") != std::string::npos)
      b.value().uniform_(0.5, 1.5);
    else if (b.key().find("running_mean") != std::string::npos)
      b.value().uniform_(-0.2, 0.2);
  }
  for (auto& p : model.named_parameters())
    if (p.value().dim() == 1) p.value().uniform_(-0.5, 0.5);
}

em::Network built_in(const std::string& name) {
  const em::ModelEntry& e = *em::ModelRegistry::find(name);
  torch::manual_seed(11);
  em::Network net =
      em::make_model(e, expctl::test::block_params(e.info.params, "model", {{"stem", "cifar"}}), 10, 3, nullptr);
  randomise_batch_norms(*net, 12);
  net->eval();
  return net;
}

// The batch norms no folding can remove: those whose input is not a convolution read by them alone (DenseNet
// normalises the concatenation before each of its convs).
int64_t unfoldable_batch_norms(const em::Graph& g) {
  std::map<int, int> readers;
  for (const auto& n : g.nodes())
    for (int in : n.inputs) ++readers[in];
  int64_t count = 0;
  for (const auto& n : g.nodes()) {
    if (n.op != em::Op::BatchNorm) continue;
    const auto& in = g.nodes()[size_t(n.inputs.at(0))];
    if (in.op != em::Op::Conv || readers[n.inputs.at(0)] > 1) ++count;
  }
  return count;
}

void expect_deployable(em::Network net, const std::string& what) {
  const em::Deployable d = em::make_deployable(*net, 32, 32);
  EXPECT_EQ(d.batch_norms_left, unfoldable_batch_norms(net->graph()))
      << what << ": every batch norm that follows a conv is folded into it";
  EXPECT_GT(em::batch_norm_count(expctl::models::to_torchscript(*net, net->graph())), 0) << what;
  EXPECT_LE(d.max_difference, 1e-4 * std::max(d.logit_scale, 1.0)) << what;
  // The frozen module holds no parameters of its own any more: they are constants of its graph.
  EXPECT_EQ(d.frozen.parameters().size(), 0u) << what;
}

}  // namespace

TEST(Deployment, EveryBuiltInModelFoldsItsBatchNormsAndKeepsItsLogits) {
  for (const std::string name : {"ResNet18", "ResNet50", "VGG11_BN", "MobileNetV2", "DenseNet121"})
    expect_deployable(built_in(name), name);
}

TEST(Deployment, APrunedAndAMaskedModelKeepTheirLogits) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({16, 3, 32, 32});
  const torch::Tensor y = torch::randint(0, 10, {16}, torch::kLong);

  em::Network pruned = built_in("MobileNetV2");
  const expctl::Params nc = expctl::test::prune_params("neuron_coverage", {{"sparsity", 0.5}});
  const expctl::PrunePlan plan = expctl::test::run_pruner("neuron_coverage", pruned, nc, 8, x, y);
  ASSERT_FALSE(plan.keep.empty());
  em::prune_groups(pruned, plan.keep);
  expect_deployable(pruned, "MobileNetV2 pruned by neuron_coverage");

  em::Network masked = built_in("ResNet18");
  const expctl::Params wanda = expctl::test::prune_params("wanda", {{"sparsity", 0.5}});
  const expctl::PrunePlan masks = expctl::test::run_pruner("wanda", masked, wanda, 8, x, y);
  ASSERT_FALSE(masks.masks.empty());
  {
    torch::NoGradGuard g;
    auto params = masked->named_parameters();
    for (const auto& [name, m] : masks.masks) params[name].mul_(m.to(params[name].dtype()));
  }
  expect_deployable(masked, "ResNet18 masked by wanda");
}

// The bf16 form: every weight a bf16 constant (batch norms folded in fp32 first), fp32 in and out, logits within
// bf16's rounding of the fp32 model's; DenseNet's unfoldable batch norms run in bf16 too.
TEST(Deployment, TheBf16FormComputesInBf16AndKeepsTheLogitsWithinItsRounding) {
  for (const std::string name : {"ResNet18", "MobileNetV2", "DenseNet121"}) {
    em::Network net = built_in(name);
    em::Deployable d = em::make_deployable(*net, 32, 32, torch::kCPU, em::DeployPrecision::Bf16);
    EXPECT_EQ(d.precision, em::DeployPrecision::Bf16);
    EXPECT_EQ(d.batch_norms_left, unfoldable_batch_norms(net->graph())) << name;
    int64_t weights = 0;
    for (const torch::jit::Node* node : d.frozen.get_method("forward").graph()->nodes()) {
      if (node->kind() != c10::prim::Constant || node->output()->type()->kind() != c10::TypeKind::TensorType) continue;
      const at::Tensor t = torch::jit::toIValue(node->output())->toTensor();
      if (t.is_floating_point()) {
        EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << name;
        ++weights;
      }
    }
    EXPECT_GE(weights, 2) << name;
    torch::NoGradGuard g;
    const torch::Tensor x = torch::randn({3, 3, 32, 32});
    const torch::Tensor logits = d.frozen.forward({x}).toTensor();
    EXPECT_EQ(logits.scalar_type(), torch::kFloat) << name;
    // bf16 keeps 8 significant bits: a difference beyond fp32's rounding, well within a few per cent of the scale.
    EXPECT_GT(d.max_difference, 1e-5 * d.logit_scale) << name;
    EXPECT_LT(d.max_difference, 0.05 * std::max(d.logit_scale, 1.0)) << name;
    EXPECT_TRUE(torch::allclose(d.optimized.forward({x}).toTensor(), logits, 0.05, 0.05 * d.logit_scale)) << name;
  }
}

TEST(Deployment, AnInputSizeOfZeroIsRefused) {
  em::Network net = built_in("ResNet18");
  EXPECT_THROW(em::make_deployable(*net, 0, 32), expctl::Error);
}

TEST(Deployment, OnlyTheBatchNormsAfterAConcatenationStayInDenseNet) {
  em::Network net = built_in("DenseNet121");
  const int64_t left = unfoldable_batch_norms(net->graph());
  EXPECT_GT(left, 0);  // norm1 of every dense layer, the transitions' norms and norm5 read concatenations
  EXPECT_LT(left, em::batch_norm_count(em::to_torchscript(*net, net->graph())));  // norm0 and every norm2 fold
}

TEST(Deployment, ExpctlExportWritesTheDeployedFormOfACheckpoint) {
  expctl::test::TempDir tmp;
  em::Network net = built_in("ResNet18");
  em::save_checkpoint(tmp / "ck.pt", net);
  auto r = expctl::test::run_expctl("export ck.pt --form deployed --input 32 32 -o d.pt", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  torch::jit::Module loaded = torch::jit::load((tmp / "d.pt").string());
  EXPECT_EQ(em::batch_norm_count(loaded), 0);
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::NoGradGuard g;
  const torch::Tensor want = net->forward(x);
  EXPECT_LE((loaded.forward({x}).toTensor() - want).abs().max().item<double>(),
            1e-4 * std::max(1.0, want.abs().max().item<double>()));
  r = expctl::test::run_expctl("export ck.pt --form frozen", tmp.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--form"), std::string::npos) << r.output;
}

// oneDNN's adaptive pooling refuses an output size that does not divide its input (VGG's 7x7 pool after five
// max-pools of a 32x32 image: 1x1 in); eager LibTorch computes it. The frozen module is then the deployed form.
TEST(Deployment, AShapeOneDnnRefusesKeepsTheFrozenFormAndSaysWhy) {
  const em::ModelEntry& e = *em::ModelRegistry::find("VGG11_BN");
  torch::manual_seed(11);
  em::Network net =
      em::make_model(e, expctl::test::block_params(e.info.params, "model", {{"stem", "imagenet"}}), 10, 3, nullptr);
  randomise_batch_norms(*net, 12);
  net->eval();
  em::Deployable d = em::make_deployable(*net, 32, 32);
  EXPECT_NE(d.not_optimized.find("divisible"), std::string::npos) << d.not_optimized;
  EXPECT_EQ(d.batch_norms_left, 0);
  EXPECT_LE(d.max_difference, 1e-4 * std::max(d.logit_scale, 1.0));
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::allclose(d.optimized.forward({x}).toTensor(), net->forward(x), 1e-4, 1e-4));
}
