// The structured baselines (group magnitude, BN scale, Taylor, random) and the channel selection they share with
// Neuron Coverage: scores against brute-force references written from the definitions (plain loops over the
// layers of a small ResNet, named by hand rather than taken from the channel groups), reproducible random plans,
// the budget rules, and a structured prune -> save -> load -> train -> resume that keeps every parameter and
// optimizer state consistent.
#include "plugins/baselines/baselines.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "plugins/channel_selection.h"
#include "plugins/coverage/activation_stats.h"
#include "plugins/coverage/deepgauge.h"
#include "runner/core/error.h"
#include "runner/core/params.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/zoo.h"
#include "tests/core/test_util.h"
#include "tests/models/block_params.h"

namespace em = expctl::models;
namespace bl = expctl::baselines;
namespace sel = expctl::selection;
using expctl::Params;
using expctl::PrunePlan;
using expctl::PruneRequest;

namespace {

// A small ResNet-18 (cifar stem, widths 8-16) with random BN parameters and statistics, in eval mode.
em::GraphNet small_model(uint64_t seed = 1) {
  torch::manual_seed(seed);
  em::ResNetSpec s;
  s.num_classes = 5;
  s.stem = em::Stem::Cifar;
  s.stage_widths = {8, 16, 16, 16};
  em::GraphNet m = em::make_resnet(s);
  torch::NoGradGuard g;
  for (auto& mod : m->modules(false)) {
    if (auto* bn = mod->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(-1.5, 1.5);  // negative scales too: the scores take |gamma|
      bn->bias.normal_(0, 0.3);
      bn->running_mean.normal_(0, 0.3);
      bn->running_var.uniform_(0.5, 1.5);
    }
  }
  m->eval();
  return m;
}

const em::ChannelGroup& group(const std::vector<em::ChannelGroup>& gs, const std::string& name) {
  for (const auto& g : gs)
    if (g.name == name) return g;
  throw std::runtime_error("no group " + name);
}

std::vector<double> to_vec(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double pw(double v, int p) { return p == 1 ? std::abs(v) : v * v; }

// Sum of |w|^p over everything but output channel c (dim 0) or input channel c (dim 1) of a 4-D or 2-D weight.
double slice_norm(const torch::Tensor& weight, int64_t dim, int64_t c, int p) {
  const torch::Tensor w = weight.detach().to(torch::kDouble).contiguous();
  double s = 0;
  if (w.dim() == 2) {
    auto a = w.accessor<double, 2>();
    for (int64_t i = 0; i < w.size(1 - dim); ++i) s += pw(dim == 0 ? a[c][i] : a[i][c], p);
    return s;
  }
  auto a = w.accessor<double, 4>();
  for (int64_t i = 0; i < w.size(1 - dim); ++i)
    for (int64_t u = 0; u < w.size(2); ++u)
      for (int64_t v = 0; v < w.size(3); ++v) s += pw(dim == 0 ? a[c][i][u][v] : a[i][c][u][v], p);
  return s;
}

// The layers of a group named by hand from torchvision's ResNet-18 structure.
struct Layers {
  std::vector<std::string> producers, bns, consumers;
};

Layers layers_of(const std::string& group_name) {
  if (group_name == "layer1.0.conv1") return {{"layer1.0.conv1"}, {"layer1.0.bn1"}, {"layer1.0.conv2"}};
  if (group_name == "layer2")
    return {{"layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2"},
            {"layer2.0.downsample.1", "layer2.0.bn2", "layer2.1.bn2"},
            {"layer2.1.conv1", "layer3.0.conv1", "layer3.0.downsample.0"}};
  if (group_name == "layer4")
    return {{"layer4.0.downsample.0", "layer4.0.conv2", "layer4.1.conv2"},
            {"layer4.0.downsample.1", "layer4.0.bn2", "layer4.1.bn2"},
            {"layer4.1.conv1", "fc"}};
  throw std::runtime_error("no hand-written layers for " + group_name);
}

std::vector<double> reference_magnitude(em::GraphNet& m, const std::string& name, int64_t size, int p) {
  const em::StateDict sd = em::state_dict(*m);
  const Layers l = layers_of(name);
  std::vector<double> out(size, 0.0);
  const double members = double(l.producers.size() + l.bns.size() + l.consumers.size());
  for (int64_t c = 0; c < size; ++c) {
    double s = 0;
    for (const auto& conv : l.producers) s += slice_norm(sd[conv + ".weight"], 0, c, p);
    for (const auto& bn : l.bns) s += pw(sd[bn + ".weight"][c].item<double>(), p);
    for (const auto& reader : l.consumers) s += slice_norm(sd[reader + ".weight"], 1, c, p);
    out[c] = s / members;
  }
  return out;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], rel * std::max(1.0, std::abs(want[i]))) << "channel " << i;
}

PrunePlan run_pruner(const std::string& name, em::GraphNet& model, const Params& params, const torch::Tensor& x = {},
                     const torch::Tensor& y = {}, const torch::Tensor& profile = {}) {
  return expctl::test::run_pruner(name, model, params, /*batch_size=*/4, x, y, profile);
}

template <class T>
expctl::Value val(T x) {
  expctl::Value v;
  v.v = std::move(x);
  return v;
}

// The pruner's declared defaults, with `values` set over them (as a validated prune block holds them).
Params params_for(const std::string& pruner, const std::map<std::string, expctl::Value>& values) {
  Params p;
  for (const auto& spec : expctl::PrunerRegistry::find(pruner)->info.params.specs()) {
    auto it = values.find(spec.key);
    p.set(spec.key, it == values.end() ? spec.default_value : it->second);
  }
  return p;
}

}  // namespace

// ---- scores against brute force -----------------------------------------------------------------

TEST(GroupMagnitude, EqualsTheDefinitionOnHandNamedLayers) {
  em::GraphNet m = small_model();
  const auto groups = em::channel_groups(m);
  const em::StateDict sd = em::state_dict(*m);
  for (int p : {1, 2})
    for (const char* name : {"layer1.0.conv1", "layer2", "layer4"}) {
      SCOPED_TRACE(std::string(name) + " p=" + std::to_string(p));
      const auto& g = group(groups, name);
      expect_near_all(to_vec(bl::group_magnitude(sd, g, p)), reference_magnitude(m, name, g.size, p), 1e-12);
    }
}

TEST(BnScale, IsTheMeanAbsoluteGammaOfTheGroupsBatchNorms) {
  em::GraphNet m = small_model();
  const auto groups = em::channel_groups(m);
  const em::StateDict sd = em::state_dict(*m);
  for (const char* name : {"layer1.0.conv1", "layer2", "layer4"}) {
    SCOPED_TRACE(name);
    const auto& g = group(groups, name);
    const Layers l = layers_of(name);
    std::vector<double> want(g.size, 0.0);
    for (int64_t c = 0; c < g.size; ++c) {
      for (const auto& bn : l.bns) want[c] += std::abs(sd[bn + ".weight"][c].item<double>());
      want[c] /= double(l.bns.size());
    }
    expect_near_all(to_vec(bl::bn_scale(sd, g)), want, 1e-12);
  }
  em::ChannelGroup no_bn{"fc_inputs", 16, {{"fc.weight", 1}}, {}, {}, {"fc"}};
  try {
    bl::bn_scale(sd, no_bn);
    FAIL() << "a group without BatchNorm was scored";
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 'fc_inputs' has no BatchNorm"), std::string::npos) << e.what();
  }
}

// One image at a time, straight from the definition: keep the activation, backpropagate that image's loss, and sum
// a * dL/da over each channel's positions with plain loops.
struct Keep : em::ForwardObserver {
  std::map<std::string, torch::Tensor> acts;
  void on_activation(const std::string& point, const torch::Tensor& y) override {
    torch::Tensor t = y;
    t.retain_grad();
    acts[point] = t;
  }
};

TEST(Taylor, EqualsAPerImageBruteForceAndLeavesTheModelAsItWas) {
  em::GraphNet m = small_model();
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({6, 3, 16, 16});
  const torch::Tensor y = torch::randint(0, 5, {6}, torch::kLong);
  const std::vector<std::string> points = m->activation_points();

  std::map<std::string, std::vector<double>> want;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const torch::Tensor xi = x.slice(0, i, i + 1).clone().requires_grad_(true);
    Keep keep;
    auto loss = torch::nn::functional::cross_entropy(m->forward(xi, &keep), y.slice(0, i, i + 1));
    loss.backward();
    for (const auto& p : points) {
      const torch::Tensor a = keep.acts.at(p).detach().to(torch::kDouble).contiguous();
      const torch::Tensor g = keep.acts.at(p).grad().to(torch::kDouble).contiguous();
      auto aa = a.accessor<double, 4>();
      auto ga = g.accessor<double, 4>();
      auto& w = want[p];
      w.resize(a.size(1), 0.0);
      for (int64_t c = 0; c < a.size(1); ++c) {
        double s = 0;
        for (int64_t u = 0; u < a.size(2); ++u)
          for (int64_t v = 0; v < a.size(3); ++v) s += aa[0][c][u][v] * ga[0][c][u][v];
        w[c] += std::abs(s / double(a.size(2) * a.size(3))) / double(x.size(0));
      }
    }
  }
  for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();

  m->train();  // the scores are taken in eval mode and the mode restored
  // Batches of 4 over 6 images: the last batch is partial.
  const auto got = bl::taylor_scores(m, x, y, 4, points);
  EXPECT_TRUE(m->is_training());
  for (const auto& p : points) {
    SCOPED_TRACE(p);
    expect_near_all(to_vec(got.at(p)), want.at(p), 1e-5);
  }
  for (const auto& p : m->parameters()) {
    EXPECT_TRUE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined()) << "scoring must not leave parameter gradients behind";
  }
  EXPECT_THROW(bl::taylor_scores(m, x, y.slice(0, 0, 5), 4, points), expctl::Error);
}

TEST(Random, IsReproducibleBySeedAndDiffersBetweenSeeds) {
  em::GraphNet m = small_model();
  const auto groups = em::channel_groups(m);
  const auto a = bl::random_scores(groups, 7), b = bl::random_scores(groups, 7), c = bl::random_scores(groups, 8);
  ASSERT_EQ(a.size(), groups.size());
  bool differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i]));
    EXPECT_GE(a[i].min().item<double>(), 0.0);
    EXPECT_LT(a[i].max().item<double>(), 1.0);
    differs = differs || !torch::equal(a[i], c[i]);
  }
  EXPECT_TRUE(differs);
  // The first value of std::mt19937_64 seeded with 5489 (its default) is fixed by the C++ standard.
  em::ChannelGroup one{"g", 1, {}, {}, {}, {}};
  EXPECT_DOUBLE_EQ(bl::random_scores({one}, 5489)[0][0].item<double>(),
                   static_cast<double>(14514284786278117030ULL >> 11) * 0x1.0p-53);

  const Params p7 = params_for("random", {{"seed", val(int64_t{7})}, {"exclude", val(std::vector<std::string>{})}});
  const PrunePlan p1 = run_pruner("random", m, p7), p2 = run_pruner("random", m, p7);
  ASSERT_EQ(p1.keep.size(), p2.keep.size());
  for (const auto& [name, keep] : p1.keep) EXPECT_TRUE(torch::equal(keep, p2.keep.at(name))) << name;
}

// ---- the shared budget rules -----------------------------------------------------------------------

TEST(Selection, GlobalScopeRemovesTheLowestNormalisedScoresAcrossGroups) {
  // Two groups, scores already comparable: the six lowest of twelve channels go, within min_channels.
  em::ChannelGroup a{"a", 4, {}, {}, {"conv_a"}, {}}, b{"b", 8, {}, {}, {"conv_b"}, {}};
  const torch::Tensor sa = torch::tensor({0.1, 5.0, 0.2, 4.0}, torch::kDouble);
  const torch::Tensor sb = torch::tensor({1.0, 2.0, 3.0, 0.05, 6.0, 7.0, 0.3, 8.0}, torch::kDouble);
  sel::Options o;
  o.sparsity = 0.5;
  o.scope_global = true;
  o.min_channels = 1;
  o.round_to = 1;
  o.exclude = {};
  auto choices = sel::choose({{&a, sa, {}}, {&b, sb, {}}}, o, "test");
  // Lowest six: b3 (0.05), a0 (0.1), a2 (0.2), b6 (0.3), b0 (1.0), b1 (2.0).
  EXPECT_EQ(choices[0].keep, 2);
  EXPECT_EQ(choices[1].keep, 4);
  PrunePlan plan = sel::make_plan(choices, o, "test");
  EXPECT_TRUE(torch::equal(plan.keep.at("a"), torch::tensor({1, 3}, torch::kLong)));
  EXPECT_TRUE(torch::equal(plan.keep.at("b"), torch::tensor({2, 4, 5, 7}, torch::kLong)));
  EXPECT_EQ(plan.stats["removed_channels"], 6);

  // min_channels stops a group; round_to rounds kept counts up; excluding the producer keeps a group whole.
  o.min_channels = 3;
  choices = sel::choose({{&a, sa, {}}, {&b, sb, {}}}, o, "test");
  EXPECT_EQ(choices[0].keep, 3);
  EXPECT_EQ(choices[1].keep, 3);
  o.min_channels = 1;
  o.round_to = 4;
  choices = sel::choose({{&a, sa, {}}, {&b, sb, {}}}, o, "test");
  EXPECT_EQ(choices[0].keep, 4);
  EXPECT_EQ(choices[1].keep, 4);
  o.exclude = {"conv_a"};
  o.round_to = 1;
  choices = sel::choose({{&a, sa, {}}, {&b, sb, {}}}, o, "test");
  EXPECT_TRUE(choices[0].excluded);
  EXPECT_EQ(choices[0].keep, 4);
  EXPECT_EQ(choices[1].keep, 4);  // half of the 8 prunable channels

  EXPECT_THROW(sel::choose({{&a, sb, {}}}, o, "test"), expctl::Error);  // 8 scores for 4 channels
  EXPECT_DOUBLE_EQ(sel::normalize_by_mean(sa).mean().item<double>(), 1.0);
}

TEST(Baselines, EveryPrunerShrinksEveryPrunableGroupByItsLocalBudgetAndTheModelStillRuns) {
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({8, 3, 16, 16});
  const torch::Tensor y = torch::randint(0, 5, {8}, torch::kLong);
  for (const char* name :
       {"group_magnitude", "bn_scale", "taylor", "random", "apoz", "mean_activation", "kmnc", "nbc", "snac", "tknc"}) {
    SCOPED_TRACE(name);
    em::GraphNet m = small_model();
    const auto groups = em::channel_groups(m);
    const Params p =
        params_for(name, {{"sparsity", val(0.5)}, {"min_channels", val(int64_t{2})}, {"round_to", val(int64_t{2})}});
    const PrunePlan plan = run_pruner(name, m, p, x, y, /*profile=*/torch::randn({6, 3, 16, 16}));
    for (const auto& g : groups) {
      const bool excluded = sel::is_excluded(g, {"conv1", "fc"});
      EXPECT_EQ(plan.stats["groups"][g.name]["kept"].get<int64_t>(),
                excluded ? g.size : sel::local_keep_count(g.size, 0.5, 2, 2))
          << g.name;
      EXPECT_EQ(plan.keep.count(g.name), excluded ? 0u : 1u) << g.name;
    }
    EXPECT_EQ(plan.stats["normalizer"], "mean");
    em::prune_groups(m, plan.keep);
    torch::NoGradGuard ng;
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{8, 5}));
  }
  em::GraphNet m = small_model();
  EXPECT_THROW(run_pruner("group_magnitude", m,
                          params_for("group_magnitude", {{"exclude", val(std::vector<std::string>{"layer9"})}})),
               expctl::Error);
}

// ---- activation statistics (plugins/coverage) ------------------------------------------------------------------

namespace {

// Every activation of one forward pass, kept whole (the brute force the statistics pass must equal).
class KeepAll : public em::ForwardObserver {
 public:
  void on_activation(const std::string& point, const torch::Tensor& y) override { kept[point] = y.detach().clone(); }
  std::map<std::string, torch::Tensor> kept;
};

// Every activation of `x` run through `m` in batches of `batch` (a conv's float rounding may depend on the batch
// size: the same batches as the code under test), kept whole and concatenated.
std::map<std::string, torch::Tensor> every_activation(em::GraphNet& m, const torch::Tensor& x, int64_t batch) {
  std::map<std::string, std::vector<torch::Tensor>> batches;
  for (int64_t b0 = 0; b0 < x.size(0); b0 += batch) {
    KeepAll one;
    torch::NoGradGuard g;
    m->forward(x.slice(0, b0, std::min(x.size(0), b0 + batch)), &one);
    for (auto& [p, y] : one.kept) batches[p].push_back(y);
  }
  std::map<std::string, torch::Tensor> out;
  for (auto& [p, ys] : batches) out[p] = torch::cat(ys);
  return out;
}

// Per point, a group's channels' value averaged over the group's activation points, from per-point values.
torch::Tensor group_mean(const em::ChannelGroup& g, const std::map<std::string, torch::Tensor>& per_point) {
  torch::Tensor s = torch::zeros({g.size}, torch::kDouble);
  for (const auto& p : g.activation_points) s += per_point.at(p).slice(0, 0, g.size);
  return s / double(g.activation_points.size());
}

// Every kept channel scores at least as high as every removed one (whatever the tie rule).
void expect_kept_score_highest(const torch::Tensor& keep, const torch::Tensor& score, const std::string& what) {
  std::vector<bool> kept(size_t(score.size(0)), false);
  for (int64_t i = 0; i < keep.size(0); ++i) kept[size_t(keep[i].item<int64_t>())] = true;
  double lowest_kept = 1e300, highest_removed = -1e300;
  for (int64_t c = 0; c < score.size(0); ++c) {
    const double v = score[c].item<double>();
    if (kept[size_t(c)])
      lowest_kept = std::min(lowest_kept, v);
    else
      highest_removed = std::max(highest_removed, v);
  }
  EXPECT_GE(lowest_kept, highest_removed) << what;
}

}  // namespace

// The streamed statistics equal the definitions computed on every activation kept whole: per channel, over images,
// the spatial mean's mean, population std, min and max, and the share of exact zeros over images and positions.
TEST(ActivationStats, EqualTheDefinitionsComputedOnEveryActivation) {
  em::GraphNet m = small_model(3);
  torch::manual_seed(9);
  const torch::Tensor x = torch::randn({7, 3, 16, 16});
  const auto points = bl::activation_points(em::channel_groups(m));
  const auto stats = expctl::coverage::measure_stats(m, x, /*batch_size=*/3, points);
  const std::map<std::string, torch::Tensor> all = every_activation(m, x, 3);
  ASSERT_EQ(stats.size(), points.size());
  for (const auto& p : points) {
    SCOPED_TRACE(p);
    const torch::Tensor y = all.at(p).to(torch::kDouble);
    const torch::Tensor flat = y.reshape({y.size(0), y.size(1), -1});
    const torch::Tensor a = flat.mean(2);
    const auto& s = stats.at(p);
    EXPECT_EQ(s.images, 7);
    EXPECT_EQ(s.positions, flat.size(2));
    EXPECT_TRUE(torch::allclose(s.mean(), a.mean(0), 1e-9, 1e-12));
    EXPECT_TRUE(torch::allclose(s.std(), a.std(0, /*unbiased=*/false), 1e-6, 1e-9));
    EXPECT_TRUE(torch::equal(s.low, std::get<0>(a.min(0))));
    EXPECT_TRUE(torch::equal(s.high, std::get<0>(a.max(0))));
    EXPECT_TRUE(torch::equal(s.zero_fraction(),
                             flat.eq(0).sum(torch::IntArrayRef{0, 2}).to(torch::kDouble) / double(7 * flat.size(2))));
    EXPECT_GT(s.zero_fraction().max().item<double>(), 0.0);  // ReLU outputs: zeros are there to count
    // Memory: the statistics hold one value per channel, whatever the number of images.
    EXPECT_EQ(s.sum.numel(), y.size(1));
  }
  EXPECT_THROW(expctl::coverage::measure_stats(m, x, 3, {"no.such.point"}), expctl::Error);
  EXPECT_THROW(expctl::coverage::measure_stats(m, torch::randn({0, 3, 16, 16}), 3, points), expctl::Error);
}

// apoz keeps the channels with the fewest zeros, mean_activation those with the highest mean, each group scored by
// the mean over its activation points of the definition computed by hand.
TEST(ActivationStats, ApozAndMeanActivationKeepTheChannelsTheirDefinitionsRankHighest) {
  em::GraphNet m = small_model(4);
  const auto groups = em::channel_groups(m);
  torch::manual_seed(10);
  const torch::Tensor x = torch::randn({12, 3, 16, 16});
  std::map<std::string, torch::Tensor> nonzero, mean;
  for (const auto& [p, y] : every_activation(m, x, 4)) {  // the pruners' calibration batch size
    const torch::Tensor flat = y.to(torch::kDouble).reshape({y.size(0), y.size(1), -1});
    nonzero[p] =
        1.0 - flat.eq(0).sum(torch::IntArrayRef{0, 2}).to(torch::kDouble) / double(flat.size(0) * flat.size(2));
    mean[p] = flat.mean(2).mean(0);
  }
  for (const char* name : {"apoz", "mean_activation"}) {
    SCOPED_TRACE(name);
    em::GraphNet copy = small_model(4);
    const PrunePlan plan =
        run_pruner(name, copy, params_for(name, {{"min_channels", val(int64_t{1})}, {"round_to", val(int64_t{1})}}), x);
    for (const char* g : {"layer1.0.conv1", "layer2", "layer3.1.conv1"}) {
      const em::ChannelGroup& grp = group(groups, g);
      const torch::Tensor want = group_mean(grp, std::string(name) == "apoz" ? nonzero : mean);
      ASSERT_TRUE(plan.keep.count(g)) << g;
      EXPECT_EQ(plan.keep.at(g).size(0), grp.size / 2) << g;
      expect_kept_score_highest(plan.keep.at(g), want, g);
      EXPECT_NEAR(plan.stats["groups"][g]["mean_score"].get<double>(), want.mean().item<double>(), 1e-9) << g;
    }
  }
}

TEST(Baselines, GroupMagnitudeKeepsTheHighestScoringChannelsOfEachGroup) {
  em::GraphNet m = small_model();
  const auto groups = em::channel_groups(m);
  const Params p =
      params_for("group_magnitude",
                 {{"min_channels", val(int64_t{1})}, {"round_to", val(int64_t{1})}, {"norm", val(std::string("l1"))}});
  const PrunePlan plan = run_pruner("group_magnitude", m, p);
  for (const char* name : {"layer1.0.conv1", "layer2", "layer4"}) {
    SCOPED_TRACE(name);
    const auto& g = group(groups, name);
    std::vector<double> ref = reference_magnitude(m, name, g.size, 1);
    std::vector<int64_t> idx(g.size);
    for (int64_t i = 0; i < g.size; ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return ref[a] > ref[b]; });
    idx.resize(g.size / 2);
    std::sort(idx.begin(), idx.end());
    EXPECT_TRUE(torch::equal(plan.keep.at(name), torch::tensor(idx, torch::kLong)));
  }
}

// ---- prune -> save -> load -> train -> resume --------------------------------------------------

TEST(Baselines, PrunedModelSavesLoadsTrainsAndResumesWithConsistentOptimizerState) {
  expctl::test::TempDir tmp;
  em::GraphNet m = small_model();
  const PrunePlan plan = run_pruner("group_magnitude", m, params_for("group_magnitude", {}));
  em::prune_groups(m, plan.keep);
  const auto file = tmp / "pruned.pt";
  em::save_checkpoint(file, m);
  em::GraphNet loaded = em::load_checkpoint(file);
  EXPECT_EQ(em::resnet_spec(*loaded), em::resnet_spec(*m));
  const em::StateDict a = em::state_dict(*m), b = em::state_dict(*loaded);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();

  torch::manual_seed(9);
  const torch::Tensor x = torch::randn({8, 3, 16, 16});
  const torch::Tensor y = torch::randint(0, 5, {8}, torch::kLong);
  auto step = [&](em::GraphNet& net, torch::optim::SGD& opt) {
    net->train();
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    return loss.item<double>();
  };
  torch::optim::SGD opt(loaded->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  EXPECT_TRUE(std::isfinite(step(loaded, opt)));
  // One momentum buffer per parameter, with the parameters' (pruned) shapes.
  std::multiset<std::vector<int64_t>> param_shapes, buffer_shapes;
  for (const auto& p : loaded->parameters()) param_shapes.insert(p.sizes().vec());
  for (const auto& item : opt.state())
    buffer_shapes.insert(static_cast<torch::optim::SGDParamState&>(*item.second).momentum_buffer().sizes().vec());
  EXPECT_EQ(buffer_shapes, param_shapes);
  em::save_checkpoint(tmp / "e1.pt", loaded);
  em::save_training_state(tmp / "e1.pt", opt, 1);

  // Resume: a fresh model and optimizer from the files continue exactly like the original.
  em::GraphNet resumed = em::load_checkpoint(tmp / "e1.pt");
  torch::optim::SGD opt2(resumed->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  EXPECT_EQ(em::load_training_state(tmp / "e1.pt", opt2).epoch, 1);
  const double l1 = step(loaded, opt), l2 = step(resumed, opt2);
  EXPECT_DOUBLE_EQ(l1, l2);
  const em::StateDict c = em::state_dict(*loaded), d = em::state_dict(*resumed);
  for (const auto& item : c) EXPECT_TRUE(torch::allclose(item.value(), d[item.key()])) << item.key();
}

// ---- DeepGauge's criteria (plugins/coverage/deepgauge) ---------------------------------------------------------

namespace cov = expctl::coverage;

namespace {

// A hand profile of one point of 3 neurons: [0, 1], the single point [1, 1] (no sections) and [2, 4].
std::map<std::string, cov::ChannelStats> hand_profile() {
  cov::ChannelStats s;
  s.images = 1;
  s.positions = 1;
  s.channels = 3;
  s.low = torch::tensor({0.0, 1.0, 2.0}, torch::kDouble);
  s.high = torch::tensor({1.0, 1.0, 4.0}, torch::kDouble);
  s.sum = s.sum_squares = s.zeros = torch::zeros({3}, torch::kDouble);
  return {{"p", s}};
}

// Brute force, one neuron and one input at a time, of every count a HitsObserver keeps: values [N, M] against
// low/high [M], k sections, the top `top_k` of each input (equal values: the lower index first).
struct BruteHits {
  std::vector<std::set<int64_t>> sections;
  std::vector<double> below, above, top;
};
BruteHits brute_hits(const torch::Tensor& v, const torch::Tensor& low, const torch::Tensor& high, int64_t k,
                     int64_t top_k) {
  const int64_t n = v.size(0), m = v.size(1);
  BruteHits b{std::vector<std::set<int64_t>>(m), std::vector<double>(m), std::vector<double>(m),
              std::vector<double>(m)};
  const torch::Tensor vd = v.to(torch::kDouble).contiguous(), lod = low.to(torch::kDouble).contiguous(),
                      hid = high.to(torch::kDouble).contiguous();
  const auto va = vd.accessor<double, 2>();
  const auto la = lod.accessor<double, 1>(), ha = hid.accessor<double, 1>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < m; ++c) {
      const double x = va[i][c], lo = la[c], hi = ha[c];
      if (x < lo) b.below[c] += 1;
      if (x > hi) b.above[c] += 1;
      if (x >= lo && x <= hi && hi > lo)
        b.sections[c].insert(std::min(k - 1, int64_t(std::floor((x - lo) * k / (hi - lo)))));
      int64_t rank = 0;  // neurons ranked before c for input i
      for (int64_t d = 0; d < m; ++d) {
        const double y = va[i][d];
        if (y > x || (y == x && d < c)) ++rank;
      }
      if (rank < top_k) b.top[c] += 1;
    }
  }
  return b;
}

void expect_hits_equal(const cov::PointHits& h, const BruteHits& b, int64_t k) {
  const int64_t m = int64_t(b.below.size());
  ASSERT_EQ(h.top.size(0), m);
  const auto below = h.below.accessor<double, 1>(), above = h.above.accessor<double, 1>(),
             top = h.top.accessor<double, 1>();
  const auto section = h.section.accessor<bool, 2>();
  int64_t wrong = 0;  // one failure message per neuron at most: positions make thousands of neurons
  for (int64_t c = 0; c < m && wrong < 5; ++c) {
    bool ok = below[c] == b.below[c] && above[c] == b.above[c] && top[c] == b.top[c];
    for (int64_t j = 0; j < k; ++j) ok = ok && section[c][j] == (b.sections[c].count(j) == 1);
    if (!ok) {
      ++wrong;
      ADD_FAILURE() << "neuron " << c << ": below " << below[c] << " / " << b.below[c] << ", above " << above[c]
                    << " / " << b.above[c] << ", top " << top[c] << " / " << b.top[c];
    }
  }
}

}  // namespace

// Hand-picked values on every boundary: a value on low or high is inside its range (section 0 or k - 1), a value on
// a section edge belongs to the section above it, a single-point range has no sections, and equal values rank the
// lower index first in the top k. Fed in two batches, as [N, C] activations (one position).
TEST(DeepGauge, EveryCriterionEqualsItsDefinitionOnHandPickedValuesOnEveryBoundary) {
  const auto profile = hand_profile();
  const torch::Tensor v = torch::tensor({{0.0, 1.0, 2.0},   // low, the point range, low
                                         {0.25, 0.5, 4.0},  // edge of section 1, below, high
                                         {1.0, 2.0, 3.0},   // high, above, edge of section 2
                                         {-0.5, 1.0, 5.0},  // below, the point, above
                                         {0.75, 1.0, 2.5},  // edge of section 3, the point, edge of section 1
                                         {1.0, 1.0, 0.0}},  // a tie for the top 1 (c0 ranks first), below
                                        torch::kDouble);
  cov::HitsOptions o;
  o.sections = 4;
  o.top_k = 1;
  cov::HitsObserver obs(&profile, o, {"p"});
  obs.on_activation("p", v.slice(0, 0, 2).to(torch::kFloat));
  obs.on_activation("other", v);  // not watched
  obs.on_activation("p", v.slice(0, 2, 6).to(torch::kFloat));
  const auto hits = obs.result();
  const cov::PointHits& h = hits.at("p");
  EXPECT_EQ(h.images, 6);
  // c0 hits sections {0, 1, 3}; c1 has none; c2 hits {0, 1, 2, 3}.
  EXPECT_TRUE(torch::equal(h.section, torch::tensor({1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1}, torch::kBool).view({3, 4})));
  auto expect = [](const torch::Tensor& got, std::vector<double> want) {
    EXPECT_TRUE(torch::allclose(got, torch::tensor(want, torch::kDouble), 0, 1e-15)) << got;
  };
  expect(h.neuron_scores(cov::Criterion::KMNC), {0.75, 0.0, 1.0});
  expect(h.neuron_scores(cov::Criterion::NBC), {1.0 / 6, 2.0 / 6, 2.0 / 6});
  expect(h.neuron_scores(cov::Criterion::SNAC), {0.0, 1.0 / 6, 1.0 / 6});
  expect(h.neuron_scores(cov::Criterion::TKNC), {1.0 / 6, 0.0, 5.0 / 6});
  expect(h.channel_means(), {2.5 / 6, 6.5 / 6, 16.5 / 6});
  EXPECT_DOUBLE_EQ(cov::model_coverage(hits, cov::Criterion::KMNC), 7.0 / 12);  // (3 + 0 + 4) of 3 × 4 sections
  EXPECT_DOUBLE_EQ(cov::model_coverage(hits, cov::Criterion::NBC), 5.0 / 6);    // every corner but c0's upper
  EXPECT_DOUBLE_EQ(cov::model_coverage(hits, cov::Criterion::SNAC), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cov::model_coverage(hits, cov::Criterion::TKNC), 2.0 / 3);
  expect_hits_equal(h, brute_hits(v, profile.at("p").low, profile.at("p").high, 4, 1), 4);
  // Without a profile only TKNC can be measured.
  cov::HitsObserver bare(nullptr, o, {"p"});
  bare.on_activation("p", v);
  EXPECT_DOUBLE_EQ(cov::model_coverage(bare.result(), cov::Criterion::TKNC), 2.0 / 3);
  EXPECT_THROW(cov::model_coverage(bare.result(), cov::Criterion::KMNC), expctl::Error);
  // A profile of another width is refused.
  EXPECT_THROW(obs.on_activation("p", torch::zeros({1, 4})), expctl::Error);
}

// On a real network, profile and calibration images apart: the streamed counts of every point equal the brute force
// over every activation kept whole, with channels and with positions as neurons.
TEST(DeepGauge, StreamedHitsEqualABruteForceOverEveryActivation) {
  em::GraphNet m = small_model(5);
  torch::manual_seed(11);
  const torch::Tensor profile_images = torch::randn({9, 3, 16, 16}), test_images = torch::randn({7, 3, 16, 16}) * 1.5;
  const auto points = bl::activation_points(em::channel_groups(m));
  const auto all = every_activation(m, test_images, 3);
  for (const auto neurons : {cov::Neurons::Channels, cov::Neurons::Positions}) {
    SCOPED_TRACE(neurons == cov::Neurons::Channels ? "channels" : "positions");
    const auto profile = cov::measure_stats(m, profile_images, 4, points, "test", neurons);
    cov::HitsOptions o;
    o.sections = 5;
    o.top_k = 3;
    o.neurons = neurons;
    const auto hits = cov::measure_hits(m, test_images, 3, &profile, o, points, "test");
    ASSERT_EQ(hits.size(), points.size());
    double sections_hit = 0, sections = 0;
    for (const auto& p : points) {
      SCOPED_TRACE(p);
      const torch::Tensor y = all.at(p).to(torch::kDouble);
      const torch::Tensor flat = y.reshape({y.size(0), y.size(1), -1});
      const torch::Tensor v = neurons == cov::Neurons::Channels ? flat.mean(2) : flat.reshape({y.size(0), -1});
      const BruteHits b = brute_hits(v, profile.at(p).low, profile.at(p).high, 5, 3);
      expect_hits_equal(hits.at(p), b, 5);
      for (const auto& s : b.sections) sections_hit += double(s.size());
      sections += 5.0 * double(b.below.size());
      // A channel's score is its neurons' mean.
      const torch::Tensor per_neuron = hits.at(p).neuron_scores(cov::Criterion::NBC);
      EXPECT_TRUE(
          torch::allclose(hits.at(p).channel_scores(cov::Criterion::NBC), per_neuron.view({y.size(1), -1}).mean(1)));
    }
    EXPECT_DOUBLE_EQ(cov::model_coverage(hits, cov::Criterion::KMNC), sections_hit / sections);
    EXPECT_GT(sections_hit, 0.0);
    // What the pass keeps does not grow with the images: three times as many give tensors of the same sizes.
    const auto more =
        cov::measure_hits(m, torch::cat({test_images, test_images, test_images}), 3, &profile, o, points, "test");
    for (const auto& p : points) {
      const cov::PointHits &a = hits.at(p), &b = more.at(p);
      EXPECT_EQ(b.images, 3 * a.images);
      for (const auto& [x, y] : {std::pair{a.section, b.section}, {a.below, b.below}, {a.top, b.top}, {a.sum, b.sum}})
        EXPECT_EQ(x.sizes(), y.sizes()) << p;
    }
  }
  EXPECT_THROW(cov::measure_hits(m, test_images, 3, nullptr, {}, {"no.such.point"}, "test"), expctl::Error);
}

// Each DeepGauge pruner keeps the channels its criterion, measured against the profile images, ranks highest; the
// profiling ones refuse to run without profile images, TKNC needs none.
TEST(DeepGauge, EveryPrunerKeepsTheChannelsItsCriterionRanksHighest) {
  em::GraphNet m = small_model(6);
  const auto groups = em::channel_groups(m);
  torch::manual_seed(12);
  const torch::Tensor profile_images = torch::randn({10, 3, 16, 16}), x = torch::randn({12, 3, 16, 16}) * 1.3;
  const auto points = bl::activation_points(groups);
  const auto profile = cov::measure_stats(m, profile_images, 4, points);
  cov::HitsOptions o;  // the pruners' defaults: k = 100 sections, the top 10
  const auto hits = cov::measure_hits(m, x, 4, &profile, o, points, "test");
  const std::vector<std::pair<std::string, cov::Criterion>> pruners{{"kmnc", cov::Criterion::KMNC},
                                                                    {"nbc", cov::Criterion::NBC},
                                                                    {"snac", cov::Criterion::SNAC},
                                                                    {"tknc", cov::Criterion::TKNC}};
  for (const auto& [name, criterion] : pruners) {
    SCOPED_TRACE(name);
    std::map<std::string, torch::Tensor> per_point;
    for (const auto& [p, h] : hits) per_point[p] = h.channel_scores(criterion);
    em::GraphNet copy = small_model(6);
    const Params params = params_for(name, {{"min_channels", val(int64_t{1})}, {"round_to", val(int64_t{1})}});
    const PrunePlan plan = run_pruner(name, copy, params, x, {}, profile_images);
    EXPECT_FALSE(plan.stats["criterion"].get<std::string>().empty());
    for (const char* g : {"layer1.0.conv1", "layer2", "layer3.1.conv1"}) {
      const em::ChannelGroup& grp = group(groups, g);
      const torch::Tensor want = group_mean(grp, per_point);
      ASSERT_TRUE(plan.keep.count(g)) << g;
      EXPECT_EQ(plan.keep.at(g).size(0), grp.size / 2) << g;
      expect_kept_score_highest(plan.keep.at(g), want, g);
      EXPECT_NEAR(plan.stats["groups"][g]["mean_score"].get<double>(), want.mean().item<double>(), 1e-12) << g;
    }
    em::GraphNet again = small_model(6);
    if (criterion == cov::Criterion::TKNC)
      EXPECT_FALSE(run_pruner(name, again, params, x).keep.empty());
    else
      EXPECT_THROW(run_pruner(name, again, params, x), expctl::Error);
  }
}
