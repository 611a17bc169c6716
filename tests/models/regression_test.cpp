// Regression of the pruners' decisions on the TS0 model (ResNet-18, ImageNet stem, 1 input channel, 10 classes,
// 28×28 Fashion-MNIST images): the channels each structured plan keeps and a digest of every mask, against
// tests/fixtures/regression/ts0_plans.json, written by the code before the model graph replaced the hand-declared
// channel groups (issue #14). Any change of a pruner's decisions on this model shows up here.
//
// Bit-for-bit across CPUs: the weights and images are computed from integers (no random generator, whose
// vectorised paths differ between instruction sets) and everything runs in float64, so summation-order
// differences between kernels (~1e-16 relative) cannot flip a ranking.
//
// To rewrite the fixture after an intended change of behaviour:
//     EXPCTL_WRITE_REGRESSION=1 build/expctl_models_tests --gtest_filter='PlansRegression.*'
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "plugins/pruner.h"
#include "runner/core/hash.h"
#include "runner/core/params.h"
#include "runner/data/split.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"
#include "tests/models/block_params.h"

namespace {

namespace em = expctl::models;
namespace fs = std::filesystem;
using nlohmann::ordered_json;

const fs::path kFixture = fs::path(EXPCTL_SOURCE_DIR) / "tests/fixtures/regression/ts0_plans.json";
const fs::path kFashion = "/usr/share/datasets/fashion-mnist";

/// u in [0, 1) for elements [start, start + n): an integer hash, exact on every machine.
torch::Tensor uniform_from_integers(int64_t n, int64_t start) {
  const torch::Tensor k = torch::arange(start, start + n, torch::kLong);
  return ((k * int64_t(2654435761) + int64_t(12345)) % int64_t(65521)).to(torch::kDouble) / 65521.0;
}

/// The TS0 architecture with deterministic, non-trivial weights: convs and fc uniform with kaiming's variance
/// (fan-out), BN affine and running statistics spread around 1 / 0 so that channels differ.
em::GraphNet ts0_model() {
  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.in_channels = 1;
  em::GraphNet model = em::make_resnet(spec);
  model->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  int64_t counter = 0;
  for (auto& item : em::state_dict(*model)) {
    torch::Tensor t = item.value();
    if (!t.is_floating_point()) continue;
    const torch::Tensor u = uniform_from_integers(t.numel(), counter).reshape(t.sizes());
    counter += t.numel();
    const std::string& key = item.key();
    auto ends = [&](const std::string& s) {
      return key.size() >= s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0;
    };
    if (t.dim() == 4) {
      const double fan_out = double(t.size(0) * t.size(2) * t.size(3));
      t.copy_((u - 0.5) * (2.0 * std::sqrt(3.0 * 2.0 / fan_out)));
    } else if (t.dim() == 2) {
      t.copy_((u - 0.5) * (2.0 / std::sqrt(double(t.size(1)))));
    } else if (ends("running_var")) {
      t.copy_(u + 0.5);
    } else if (ends("weight")) {
      t.copy_(u + 0.5);
    } else {
      t.copy_((u - 0.5) * 0.2);  // BN bias, running_mean, fc bias
    }
  }
  model->eval();
  return model;
}

/// The first `n` Fashion-MNIST test images, normalised with the data set's statistics, float64; and their labels.
std::pair<torch::Tensor, torch::Tensor> calibration(int64_t n) {
  const expctl::data::Split test = expctl::data::read_fashion_mnist(kFashion, /*train=*/false);
  const torch::Tensor x = test.pixels(0, n).to(torch::kDouble) / 255.0;
  return {(x - 0.2860) / 0.3530, test.labels.slice(0, 0, n).clone()};
}

/// A plan as JSON: kept channel indices per group, and per mask its kept count and SHA-256 of its bytes.
ordered_json describe(const expctl::PrunePlan& plan) {
  ordered_json out;
  out["keep"] = ordered_json::object();
  for (const auto& [group, keep] : plan.keep) {
    const torch::Tensor k = keep.to(torch::kLong).contiguous();
    out["keep"][group] = std::vector<int64_t>(k.data_ptr<int64_t>(), k.data_ptr<int64_t>() + k.numel());
  }
  out["masks"] = ordered_json::object();
  for (const auto& [weight, mask] : plan.masks) {
    const torch::Tensor m = mask.to(torch::kCPU, torch::kUInt8).contiguous();
    const std::string bytes(reinterpret_cast<const char*>(m.data_ptr<uint8_t>()), size_t(m.numel()));
    out["masks"][weight] = {{"kept", m.sum().item<int64_t>()}, {"sha256", expctl::sha256_hex(bytes)}};
  }
  return out;
}

struct Case {
  const char* name;
  const char* pruner;
  ordered_json params;
};

const Case kCases[] = {
    {"nc_local", "neuron_coverage", {{"sparsity", 0.5}}},
    {"nc_global", "neuron_coverage", {{"sparsity", 0.5}, {"scope", "global"}, {"threshold", 0.2}}},
    {"wanda_unstructured", "wanda", {{"sparsity", 0.5}}},
    {"wanda_2_4", "wanda", {{"mode", "n:m"}}},
    {"wanda_structured", "wanda", {{"mode", "structured"}, {"sparsity", 0.3}}},
    {"magnitude_unstructured", "wanda", {{"sparsity", 0.5}, {"score", "magnitude"}}},
    {"group_l2_global", "group_magnitude", {{"sparsity", 0.4}, {"scope", "global"}}},
};

TEST(PlansRegression, Ts0ModelPlansEqualTheSavedOnes) {
  if (!fs::exists(kFashion)) GTEST_FAIL() << kFashion << " is missing: install dataset-fashion-mnist";
  const auto [x, y] = calibration(32);
  ordered_json got = ordered_json::object();
  for (const Case& c : kCases) {
    em::GraphNet model = ts0_model();  // fresh for each: unstructured Wanda zeroes weights in place
    const expctl::Params params = expctl::test::prune_params(c.pruner, c.params);
    got[c.name] = describe(expctl::test::run_pruner(c.pruner, model, params, /*batch_size=*/16, x, y));
  }
  if (std::getenv("EXPCTL_WRITE_REGRESSION")) {
    fs::create_directories(kFixture.parent_path());
    std::ofstream out(kFixture);  // one line per plan: small diffs when a plan changes
    out << "{\n";
    for (auto it = got.begin(); it != got.end(); ++it)
      out << " " << ordered_json(it.key()).dump() << ": " << it.value().dump() << (std::next(it) == got.end() ? "\n" : ",\n");
    out << "}\n";
    GTEST_SKIP() << "wrote " << kFixture;
  }
  std::ifstream in(kFixture);
  ASSERT_TRUE(in) << kFixture << " is missing";
  const ordered_json want = ordered_json::parse(in);
  for (const Case& c : kCases) {
    ASSERT_TRUE(want.contains(c.name)) << c.name;
    const auto& w = want[c.name];
    const auto& g = got[c.name];
    EXPECT_EQ(g["keep"].size(), w["keep"].size()) << c.name;
    for (const auto& [group, keep] : w["keep"].items()) EXPECT_EQ(g["keep"].value(group, ordered_json()), keep) << c.name << " " << group;
    EXPECT_EQ(g["masks"].size(), w["masks"].size()) << c.name;
    for (const auto& [weight, m] : w["masks"].items()) EXPECT_EQ(g["masks"].value(weight, ordered_json()), m) << c.name << " " << weight;
  }
  // The fixture is not trivial: structured plans shrink groups, masks remove weights.
  EXPECT_GE(want["nc_local"]["keep"].size(), 10u);
  EXPECT_GE(want["wanda_unstructured"]["masks"].size(), 20u);
}

}  // namespace
