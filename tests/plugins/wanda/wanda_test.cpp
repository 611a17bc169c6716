// Wanda pruner: input norms and masks against brute-force references (explicit unfold, per-row stable sorts),
// N:M patterns, the magnitude baseline, the sequential calibration rule on a small ResNet, structured plans.
#include "plugins/wanda/wanda.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "runner/core/compat.h"
#include "runner/core/error.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"

namespace expctl::wanda {
namespace {

namespace F = torch::nn::functional;

// ---- references ----------------------------------------------------------------------------------

/// ||X_j||² of a conv's patch elements via the explicit unfolded input [N, C*KH*KW, L].
torch::Tensor unfold_sq_norms(const torch::Tensor& x, const ConvGeometry& g) {
  const torch::Tensor cols = F::unfold(
      x.to(torch::kDouble),
      F::UnfoldFuncOptions({g.kernel_h, g.kernel_w}).padding({g.pad_h, g.pad_w}).stride({g.stride_h, g.stride_w}));
  return cols.square().sum(std::vector<int64_t>{0, 2});
}

/// ||X_j||² of a Linear's input features with a plain loop.
torch::Tensor loop_sq_norms(const torch::Tensor& x) {
  const torch::Tensor xd = x.to(torch::kDouble).contiguous();
  auto a = xd.accessor<double, 2>();
  torch::Tensor out = torch::zeros({x.size(1)}, torch::kDouble);
  auto o = out.accessor<double, 1>();
  for (int64_t i = 0; i < x.size(0); ++i)
    for (int64_t j = 0; j < x.size(1); ++j) o[j] += a[i][j] * a[i][j];
  return out;
}

/// Indices of `values` in ascending order, ties by lower index (std::stable_sort).
std::vector<int64_t> stable_order(const std::vector<double>& values) {
  std::vector<int64_t> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return values[a] < values[b]; });
  return idx;
}

/// Per-row mask: the floor(s*L + 0.5) lowest of each flattened row removed.
torch::Tensor brute_row_mask(const torch::Tensor& scores, double sparsity) {
  const torch::Tensor flat = scores.to(torch::kDouble).reshape({scores.size(0), -1}).contiguous();
  const int64_t rows = flat.size(0), len = flat.size(1);
  const auto k = static_cast<int64_t>(std::floor(sparsity * len + 0.5));
  torch::Tensor mask = torch::ones({rows, len}, torch::kBool);
  auto s = flat.accessor<double, 2>();
  auto mk = mask.accessor<bool, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> row(len);
    for (int64_t j = 0; j < len; ++j) row[j] = s[r][j];
    const auto order = stable_order(row);
    for (int64_t i = 0; i < k; ++i) mk[r][order[i]] = false;
  }
  return mask.reshape(scores.sizes());
}

/// N:M mask by explicit loops: groups of m consecutive input channels at each (row, kh, kw).
torch::Tensor brute_nm_mask(const torch::Tensor& scores, int64_t n, int64_t m) {
  const torch::Tensor s4 = (scores.dim() == 2 ? scores.unsqueeze(-1).unsqueeze(-1) : scores).to(torch::kDouble);
  torch::Tensor mask = torch::ones(s4.sizes(), torch::kBool);
  auto s = s4.accessor<double, 4>();
  auto mk = mask.accessor<bool, 4>();
  for (int64_t o = 0; o < s4.size(0); ++o)
    for (int64_t h = 0; h < s4.size(2); ++h)
      for (int64_t w = 0; w < s4.size(3); ++w)
        for (int64_t c0 = 0; c0 < s4.size(1); c0 += m) {
          std::vector<double> group(m);
          for (int64_t i = 0; i < m; ++i) group[i] = s[o][c0 + i][h][w];
          const auto order = stable_order(group);
          for (int64_t i = 0; i < n; ++i) mk[o][c0 + order[i]][h][w] = false;
        }
  return mask.reshape(scores.sizes());
}

/// Number of groups violating "exactly n zeros in every m consecutive inputs" (per row and kernel position).
int64_t nm_violations(const torch::Tensor& mask, int64_t n, int64_t m) {
  const torch::Tensor m4 = mask.dim() == 2 ? mask.unsqueeze(-1).unsqueeze(-1) : mask;
  auto a = m4.accessor<bool, 4>();
  int64_t bad = 0;
  for (int64_t o = 0; o < m4.size(0); ++o)
    for (int64_t h = 0; h < m4.size(2); ++h)
      for (int64_t w = 0; w < m4.size(3); ++w)
        for (int64_t c0 = 0; c0 < m4.size(1); c0 += m) {
          int64_t zeros = 0;
          for (int64_t i = 0; i < m; ++i) zeros += a[o][c0 + i][h][w] ? 0 : 1;
          bad += zeros != n;
        }
  return bad;
}

bool same(const torch::Tensor& a, const torch::Tensor& b) { return a.sizes() == b.sizes() && a.equal(b); }

// ---- model helpers -------------------------------------------------------------------------------

models::GraphNet small_resnet() {
  torch::manual_seed(0);
  models::ResNetSpec spec;
  spec.depth = 18;
  spec.num_classes = 10;
  spec.stem = models::Stem::Cifar;
  spec.stage_widths = {8, 16, 16, 16};
  auto model = models::make_resnet(spec);
  // Non-trivial BN statistics, so that activations are not all alike.
  torch::NoGradGuard no_grad;
  for (auto& m : model->modules(false))
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->running_mean.uniform_(-0.2, 0.2);
      bn->running_var.uniform_(0.5, 1.5);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    }
  model->eval();
  return model;
}

torch::Tensor calibration_images() {
  torch::manual_seed(1);
  return torch::randn({6, 3, 16, 16});
}

constexpr int64_t kBatch = 4;  // 6 images: batches of 4 and 2, so accumulation over batches is exercised

/// name → weight of every Conv2d / Linear.
std::map<std::string, torch::Tensor> weights_of(const models::GraphNet& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : model->layer_names()) out[name] = model->named_parameters()[name + ".weight"];
  return out;
}

ConvGeometry geometry_of(models::GraphNet& model, const std::string& layer) {
  for (const auto& item : model->named_modules("", false))
    if (item.key() == layer)
      if (auto* conv = item.value()->as<torch::nn::Conv2dImpl>()) {
        const auto& o = conv->options;
        const auto* pad = compat::variant_get_if<torch::ExpandingArray<2>>(o.padding());
        if (pad == nullptr) throw std::runtime_error("not an explicit padding: " + layer);
        return ConvGeometry{
            (*o.kernel_size())[0], (*o.kernel_size())[1], (*o.stride())[0], (*o.stride())[1], (**pad)[0], (**pad)[1]};
      }
  throw std::runtime_error("not a conv: " + layer);
}

/// Every layer's full calibration input (batches of kBatch, concatenated), from one forward pass.
class CaptureAll : public models::ForwardObserver {
 public:
  void on_layer_input(const std::string& layer, const torch::Tensor& x) override { parts_[layer].push_back(x.clone()); }
  torch::Tensor input(const std::string& layer) const { return torch::cat(parts_.at(layer)); }

 private:
  std::map<std::string, std::vector<torch::Tensor>> parts_;
};

std::map<std::string, torch::Tensor> reference_sq_norms(models::GraphNet& model, const torch::Tensor& calib) {
  torch::NoGradGuard no_grad;
  CaptureAll capture;
  for (int64_t b = 0; b < calib.size(0); b += kBatch)
    model->forward(calib.slice(0, b, std::min(calib.size(0), b + kBatch)), &capture);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : model->layer_names()) {
    const torch::Tensor x = capture.input(name);
    out[name] = x.dim() == 4 ? unfold_sq_norms(x, geometry_of(model, name)) : loop_sq_norms(x);
  }
  return out;
}

/// |W| * sqrt(norms) with the norms broadcast over the rows (double).
torch::Tensor reference_scores(const torch::Tensor& w, const torch::Tensor& sq) {
  const torch::Tensor flat = w.detach().to(torch::kDouble).abs().reshape({w.size(0), -1});
  return (flat * sq.sqrt().unsqueeze(0)).reshape(w.sizes());
}

Params params_with(const std::map<std::string, Value>& overrides) {
  std::vector<Diagnostic> diags;
  Params p = validate_block(nullptr, Mark{}, "prune", entry().info.params, diags);
  EXPECT_TRUE(diags.empty());
  for (const auto& [k, v] : overrides) p.set(k, v);
  return p;
}
Value num(double d) { return Value{d, {}, false}; }
Value integer(int64_t i) { return Value{i, {}, false}; }
Value text(const std::string& s) { return Value{s, {}, false}; }
Value list(std::vector<std::string> l) { return Value{std::move(l), {}, false}; }

PrunePlan run_pruner(models::GraphNet& model, const torch::Tensor& calib, const Params& params) {
  PruneRequest request{model, models::channel_groups(model), calib, kBatch, &params, torch::kCPU};
  return PrunerRegistry::find("wanda")->create()->prune(request);
}

/// The sequential rule done by hand: for each layer in forward order, a fresh forward through the copy whose
/// earlier layers are already zeroed, explicit-unfold norms, brute-force mask, zero. `sequential = false` takes
/// every layer's norms from the unpruned model instead (to show the difference matters).
std::map<std::string, torch::Tensor> reference_masks(models::GraphNet original, const torch::Tensor& calib,
                                                     const std::set<std::string>& exclude, bool nm, int64_t n,
                                                     int64_t m, double sparsity, bool sequential) {
  models::GraphNet model = models::copy_model(original);
  auto weights = weights_of(model);
  const auto dense_norms = reference_sq_norms(model, calib);
  std::map<std::string, torch::Tensor> masks;
  for (const auto& name : model->layer_names()) {
    if (exclude.count(name)) continue;
    if (nm && weights[name].size(1) % m != 0) continue;
    const torch::Tensor sq = sequential ? reference_sq_norms(model, calib).at(name) : dense_norms.at(name);
    const torch::Tensor scores = reference_scores(weights[name], sq);
    const torch::Tensor mask = nm ? brute_nm_mask(scores, n, m) : brute_row_mask(scores, sparsity);
    torch::NoGradGuard no_grad;
    weights[name].mul_(mask);
    masks[name + ".weight"] = mask;
  }
  return masks;
}

// ---- norms -----------------------------------------------------------------------------------------

TEST(WandaNorms, ConvNormsEqualExplicitUnfold) {
  torch::manual_seed(3);
  const std::vector<std::pair<ConvGeometry, std::vector<int64_t>>> cases = {
      {{3, 3, 2, 2, 1, 1}, {4, 3, 9, 7}},    // stride 2, padding 1, odd sizes
      {{3, 3, 1, 1, 1, 1}, {2, 5, 8, 8}},    // a block's 3×3 conv
      {{1, 1, 1, 1, 0, 0}, {3, 6, 5, 5}},    // 1×1
      {{1, 1, 2, 2, 0, 0}, {3, 6, 7, 6}},    // 1×1 stride 2 (downsample)
      {{7, 7, 2, 2, 3, 3}, {2, 3, 16, 16}},  // ImageNet stem
      {{3, 2, 2, 1, 1, 0}, {2, 4, 7, 5}},    // rectangular kernel, mixed stride and padding
  };
  for (const auto& [g, shape] : cases) {
    const torch::Tensor x = torch::randn(shape);
    const torch::Tensor got = conv_input_sq_norms(x, g);
    const torch::Tensor want = unfold_sq_norms(x, g);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ(got.scalar_type(), torch::kDouble);
    EXPECT_TRUE(torch::allclose(got, want, 1e-12, 1e-12)) << "kernel " << g.kernel_h << "x" << g.kernel_w;
  }
}

TEST(WandaNorms, LinearNormsEqualLoop) {
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({5, 7});
  EXPECT_TRUE(torch::allclose(linear_input_sq_norms(x), loop_sq_norms(x), 1e-12, 1e-12));
}

TEST(WandaNorms, GroupedAndDepthwiseConvRowsReadTheirGroupsNorms) {
  // weight [O=6, C/groups, 3, 3] with groups 3 (2 input channels each) and groups 6 (depthwise): row o's scores
  // are |W[o]| times the norms of the input channels its group reads.
  torch::manual_seed(9);
  const torch::Tensor sq = torch::rand({6 * 9}, torch::kDouble);  // [C=6, 3, 3] flattened
  for (int64_t groups : {3, 6}) {
    const int64_t per = 6 / groups;
    const torch::Tensor w = torch::randn({6, per, 3, 3});
    const torch::Tensor got = wanda_scores(w, sq, groups);
    for (int64_t o = 0; o < 6; ++o) {
      const int64_t g = o / (6 / groups);
      const torch::Tensor want =
          w[o].abs().to(torch::kDouble) * sq.slice(0, g * per * 9, (g + 1) * per * 9).sqrt().view({per, 3, 3});
      EXPECT_TRUE(torch::allclose(got[o], want, 1e-12, 1e-12)) << groups << " " << o;
    }
  }
  EXPECT_THROW(wanda_scores(torch::ones({6, 1, 3, 3}), sq, 4), Error);  // 4 does not divide 6 rows
}

TEST(WandaNorms, ScoresNeedOneNormPerInput) {
  EXPECT_THROW(wanda_scores(torch::ones({4, 3, 3, 3}), torch::ones({26}, torch::kDouble)), Error);
  EXPECT_THROW(conv_input_sq_norms(torch::ones({2, 3}), ConvGeometry{}), Error);
}

// ---- masks -----------------------------------------------------------------------------------------

TEST(WandaMasks, ConvAndLinearMasksEqualBruteForce) {
  torch::manual_seed(5);
  struct Case {
    std::vector<int64_t> weight, input;
    ConvGeometry g;
  };
  const std::vector<Case> cases = {
      {{6, 4, 3, 3}, {3, 4, 9, 9}, {3, 3, 2, 2, 1, 1}},  // stride 2, padding 1
      {{5, 6, 1, 1}, {3, 6, 6, 6}, {1, 1, 1, 1, 0, 0}},  // 1×1
      {{5, 6, 1, 1}, {3, 6, 7, 7}, {1, 1, 2, 2, 0, 0}},  // 1×1 stride 2
  };
  for (double sparsity : {0.0, 0.3, 0.5, 0.77}) {
    for (const auto& c : cases) {
      const torch::Tensor w = torch::randn(c.weight), x = torch::randn(c.input);
      const torch::Tensor got = row_mask(wanda_scores(w, conv_input_sq_norms(x, c.g)), sparsity);
      const torch::Tensor want = brute_row_mask(reference_scores(w, unfold_sq_norms(x, c.g)), sparsity);
      EXPECT_TRUE(same(got, want)) << "sparsity " << sparsity << " weight " << w.sizes();
      // Exactly round(s * L) zeros in every row.
      const int64_t len = w[0].numel(), k = static_cast<int64_t>(std::floor(sparsity * len + 0.5));
      EXPECT_TRUE(got.logical_not().reshape({w.size(0), -1}).sum(1).eq(k).all().item<bool>());
    }
    const torch::Tensor w = torch::randn({7, 10}), x = torch::randn({9, 10});
    const torch::Tensor got = row_mask(wanda_scores(w, linear_input_sq_norms(x)), sparsity);
    EXPECT_TRUE(same(got, brute_row_mask(reference_scores(w, loop_sq_norms(x)), sparsity))) << "fc " << sparsity;
  }
}

TEST(WandaMasks, TiesRemoveTheLowerIndexFirst) {
  torch::manual_seed(6);
  const torch::Tensor scores = torch::randint(0, 3, {9, 4, 3, 3}).to(torch::kDouble);  // many ties
  EXPECT_TRUE(same(row_mask(scores, 0.5), brute_row_mask(scores, 0.5)));
  EXPECT_TRUE(same(nm_mask(scores, 2, 4), brute_nm_mask(scores, 2, 4)));
  const torch::Tensor flat = torch::zeros({1, 4}, torch::kDouble);
  EXPECT_TRUE(same(row_mask(flat, 0.5), torch::tensor({false, false, true, true}).view({1, 4})));
}

TEST(WandaMasks, NMPatternHoldsInEveryGroup) {
  torch::manual_seed(7);
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{2, 4}, {4, 8}, {1, 4}, {3, 4}}) {
    const torch::Tensor conv = torch::rand({6, 16, 3, 3}, torch::kDouble);
    const torch::Tensor conv_mask = nm_mask(conv, n, m);
    EXPECT_EQ(nm_violations(conv_mask, n, m), 0) << n << ":" << m;
    EXPECT_TRUE(same(conv_mask, brute_nm_mask(conv, n, m))) << n << ":" << m;
    const torch::Tensor fc = torch::rand({5, 24}, torch::kDouble);
    const torch::Tensor fc_mask = nm_mask(fc, n, m);
    EXPECT_EQ(nm_violations(fc_mask, n, m), 0) << n << ":" << m;
    EXPECT_TRUE(same(fc_mask, brute_nm_mask(fc, n, m))) << n << ":" << m;
    EXPECT_EQ(conv_mask.logical_not().sum().item<int64_t>(), conv.numel() / m * n);
  }
  EXPECT_THROW(nm_mask(torch::rand({4, 6, 3, 3}), 2, 4), Error);  // 6 input channels
}

TEST(WandaMasks, MagnitudeScoreIsAbsoluteWeight) {
  torch::manual_seed(8);
  const torch::Tensor w = torch::randn({6, 5, 3, 3});
  EXPECT_TRUE(same(wanda_scores(w), w.abs().to(torch::kDouble)));
  EXPECT_TRUE(same(row_mask(wanda_scores(w), 0.4), brute_row_mask(w.abs(), 0.4)));
}

TEST(WandaMasks, CountToRemoveRoundsHalfUp) {
  EXPECT_EQ(count_to_remove(0.5, 9), 5);  // 4.5 → 5
  EXPECT_EQ(count_to_remove(0.3, 10), 3);
  EXPECT_EQ(count_to_remove(0.0, 10), 0);
  EXPECT_EQ(count_to_remove(0.99, 3), 3);
}

// ---- the pruner on a small ResNet ----------------------------------------------------------------

TEST(WandaPruner, IsRegisteredWithTheSameTable) {
  const PrunerEntry* e = PrunerRegistry::find("wanda");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->info.code, "W");
  for (const char* key : {"sparsity", "mode", "n", "m", "score", "exclude"})
    EXPECT_NE(e->info.params.find(key), nullptr) << key;
  ASSERT_EQ(e->info.overrides.size(), 2u);  // calibration defaults for the prune stage's keys
  EXPECT_EQ(e->info.overrides[0].value.to_text(), "128");
  EXPECT_NE(e->create(), nullptr);
  ASSERT_TRUE(e->info.check);
  std::vector<Diagnostic> diags;
  e->info.check(params_with({{"mode", text("n:m")}, {"n", integer(4)}, {"m", integer(4)}}), "prune", diags);
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].key, "prune.n");
  EXPECT_NE(diags[0].reason.find("must be less than m (4)"), std::string::npos) << diags[0].reason;
  diags.clear();
  e->info.check(params_with({{"n", integer(4)}, {"m", integer(4)}}), "prune", diags);  // not n:m mode
  EXPECT_TRUE(diags.empty());
}

TEST(WandaPruner, SequentialUnstructuredEqualsManualReference) {
  models::GraphNet model = small_resnet();
  const models::GraphNet original = models::copy_model(model);
  const torch::Tensor calib = calibration_images();
  const Params params = params_with({{"sparsity", num(0.5)}});
  const PrunePlan plan = run_pruner(model, calib, params);

  const auto want = reference_masks(original, calib, {"conv1"}, false, 0, 0, 0.5, true);
  ASSERT_EQ(plan.masks.size(), want.size());
  for (const auto& [name, mask] : want) {
    ASSERT_TRUE(plan.masks.count(name)) << name;
    EXPECT_TRUE(same(plan.masks.at(name), mask)) << name;
  }
  EXPECT_EQ(plan.masks.count("conv1.weight"), 0u);
  EXPECT_TRUE(plan.keep.empty());

  // Weights were zeroed in place where the mask says so, and nothing else changed.
  auto now = weights_of(model);
  auto before = weights_of(original);
  for (const auto& [name, w] : now) {
    const auto it = plan.masks.find(name + ".weight");
    const torch::Tensor expected = it == plan.masks.end() ? before[name] : before[name] * it->second;
    EXPECT_TRUE(same(w, expected)) << name;
  }
  // The rule matters: norms from the unpruned model give different masks for some later layers.
  const auto dense = reference_masks(original, calib, {"conv1"}, false, 0, 0, 0.5, false);
  int differing = 0;
  for (const auto& [name, mask] : dense) differing += !same(mask, plan.masks.at(name));
  EXPECT_GT(differing, 0);
  EXPECT_TRUE(same(dense.at("layer1.0.conv1.weight"), plan.masks.at("layer1.0.conv1.weight")));

  // Stats: exact per-row sparsity (round(0.5 * 72) = 36 of each 8×3×3 row of layer1.0.conv1).
  const auto& ls = plan.stats["layers"];
  EXPECT_EQ(ls["conv1"]["skipped"], "excluded");
  EXPECT_EQ(ls["layer1.0.conv1"]["weights"], 8 * 8 * 9);
  EXPECT_EQ(ls["layer1.0.conv1"]["zeros"], 8 * 36);
  EXPECT_DOUBLE_EQ(ls["layer1.0.conv1"]["sparsity"].get<double>(), 0.5);
  EXPECT_EQ(ls["fc"]["mode"], "unstructured");
  EXPECT_DOUBLE_EQ(plan.stats["overall"]["pruned_layers"]["sparsity"].get<double>(), 0.5);
  const double all = plan.stats["overall"]["all_layers"]["sparsity"].get<double>();
  EXPECT_GT(all, 0.49);
  EXPECT_LT(all, 0.5);
  EXPECT_EQ(plan.stats["settings"]["calibration_images"], 6);
}

TEST(WandaPruner, KeptActivationsAndRecomputedOnesGiveTheSameMasks) {
  // The sequential pass keeps the calibration activations between segments; over the size limit it recomputes
  // them from the images for every layer. Both are the same rule: the same masks, bit for bit.
  const torch::Tensor calib = calibration_images();
  for (const char* mode : {"unstructured", "n:m"}) {
    SCOPED_TRACE(mode);
    const Params params = params_with({{"mode", text(mode)}, {"sparsity", num(0.6)}});
    models::GraphNet kept_model = small_resnet();
    const PrunePlan kept = run_pruner(kept_model, calib, params);
    EXPECT_EQ(kept.stats["settings"]["calibration_activations"], "kept between segments");
    const int64_t previous = set_calibration_cache_limit(0);
    models::GraphNet recomputed_model = small_resnet();
    const PrunePlan recomputed = run_pruner(recomputed_model, calib, params);
    set_calibration_cache_limit(previous);
    EXPECT_NE(recomputed.stats["settings"]["calibration_activations"], "kept between segments");
    ASSERT_EQ(kept.masks.size(), recomputed.masks.size());
    for (const auto& [name, mask] : kept.masks) EXPECT_TRUE(same(mask, recomputed.masks.at(name))) << name;
    EXPECT_EQ(kept.stats["layers"].dump(), recomputed.stats["layers"].dump());
  }
}

TEST(WandaPruner, NMModeHasExactlyNZerosPerGroupAndSkipsIndivisibleLayers) {
  models::GraphNet model = small_resnet();
  const models::GraphNet original = models::copy_model(model);
  const torch::Tensor calib = calibration_images();
  const Params params = params_with({{"mode", text("n:m")}, {"exclude", list({})}, {"sparsity", num(0.1)}});
  const PrunePlan plan = run_pruner(model, calib, params);

  EXPECT_EQ(plan.masks.count("conv1.weight"), 0u);  // 3 input channels
  EXPECT_EQ(plan.stats["layers"]["conv1"]["skipped"], "in_channels 3 is not a multiple of m = 4");
  const auto want = reference_masks(original, calib, {}, true, 2, 4, 0.0, true);
  ASSERT_EQ(plan.masks.size(), want.size());
  for (const auto& [name, mask] : plan.masks) {
    EXPECT_EQ(nm_violations(mask, 2, 4), 0) << name;
    EXPECT_TRUE(same(mask, want.at(name))) << name;
    EXPECT_DOUBLE_EQ(plan.stats["layers"][name.substr(0, name.size() - 7)]["sparsity"].get<double>(), 0.5);
  }
  EXPECT_EQ(plan.stats["settings"]["sparsity"], "ignored in n:m mode (n of every m zeroed)");
}

TEST(WandaPruner, MagnitudeModeRanksAbsoluteWeightsWithoutCalibration) {
  models::GraphNet model = small_resnet();
  auto before = weights_of(model);
  for (auto& [name, w] : before) w = w.detach().clone();
  const Params params = params_with({{"score", text("magnitude")}, {"sparsity", num(0.3)}});
  const PrunePlan plan = run_pruner(model, torch::Tensor(), params);  // no images: none are needed
  EXPECT_EQ(plan.masks.size(), before.size() - 1);
  for (const auto& [name, mask] : plan.masks)
    EXPECT_TRUE(same(mask, brute_row_mask(before.at(name.substr(0, name.size() - 7)).abs(), 0.3))) << name;
  EXPECT_EQ(plan.stats["settings"]["calibration_images"], 0);

  models::GraphNet nm_model = small_resnet();
  const PrunePlan nm =
      run_pruner(nm_model, torch::Tensor(), params_with({{"score", text("magnitude")}, {"mode", text("n:m")}}));
  for (const auto& [name, mask] : nm.masks)
    EXPECT_TRUE(same(mask, brute_nm_mask(before.at(name.substr(0, name.size() - 7)).abs(), 2, 4))) << name;
}

TEST(WandaPruner, ExcludeIsRespected) {
  models::GraphNet model = small_resnet();
  auto before = weights_of(model);
  for (auto& [name, w] : before) w = w.detach().clone();
  const std::vector<std::string> excluded{"conv1", "layer2.0.downsample.0", "fc"};
  const PrunePlan plan = run_pruner(model, calibration_images(), params_with({{"exclude", list(excluded)}}));
  auto after = weights_of(model);
  for (const auto& name : excluded) {
    EXPECT_EQ(plan.masks.count(name + ".weight"), 0u) << name;
    EXPECT_TRUE(same(after.at(name), before.at(name))) << name;
    EXPECT_EQ(plan.stats["layers"][name]["skipped"], "excluded");
  }
  EXPECT_EQ(plan.masks.size(), before.size() - excluded.size());

  models::GraphNet other = small_resnet();
  try {
    run_pruner(other, calibration_images(), params_with({{"exclude", list({"layer9.conv1"})}}));
    FAIL() << "an unknown layer in exclude must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'layer9.conv1'"), std::string::npos) << e.what();
  }
}

TEST(WandaPruner, StructuredPlanMatchesReferenceAndShrinksTheModel) {
  models::GraphNet model = small_resnet();
  const models::GraphNet original = models::copy_model(model);
  auto before = weights_of(model);
  for (auto& [name, w] : before) w = w.detach().clone();
  const torch::Tensor calib = calibration_images();
  const PrunePlan plan = run_pruner(model, calib, params_with({{"mode", text("structured")}, {"sparsity", num(0.3)}}));
  EXPECT_TRUE(plan.masks.empty());
  for (const auto& [name, w] : weights_of(model)) EXPECT_TRUE(same(w, before.at(name))) << name;  // untouched

  // Reference: channel score = sum over consumers of |W| * ||X|| over everything reading the channel, all norms
  // from the unpruned model; remove round(0.3 * size) lowest (ties: lower index), keep the rest sorted.
  const auto norms = reference_sq_norms(model, calib);
  const auto groups = models::channel_groups(model);
  for (const auto& g : groups) {
    const bool touches_conv1 = std::count(g.producers.begin(), g.producers.end(), "conv1") > 0;
    if (touches_conv1) {
      EXPECT_EQ(plan.keep.count(g.name), 0u) << g.name;
      EXPECT_EQ(plan.stats["groups"][g.name]["skipped"], "produced by excluded layer conv1");
      continue;
    }
    std::vector<double> score(g.size, 0.0);
    for (const auto& c : g.consumers) {
      const torch::Tensor s = reference_scores(before.at(c), norms.at(c));
      for (int64_t ch = 0; ch < g.size; ++ch) score[ch] += s.select(1, ch).sum().item<double>();
    }
    const auto order = stable_order(score);
    const int64_t removed = static_cast<int64_t>(std::floor(0.3 * g.size + 0.5));
    std::vector<int64_t> keep(order.begin() + removed, order.end());
    std::sort(keep.begin(), keep.end());
    ASSERT_TRUE(plan.keep.count(g.name)) << g.name;
    const torch::Tensor got = plan.keep.at(g.name);
    EXPECT_EQ(got.scalar_type(), torch::kLong);
    EXPECT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + got.numel()), keep) << g.name;
    EXPECT_EQ(plan.stats["groups"][g.name]["kept"], g.size - removed);
  }
  EXPECT_EQ(plan.keep.size(), groups.size() - 1);

  models::prune_groups(model, plan.keep);
  EXPECT_EQ(models::resnet_spec(*model).stage_widths, (std::vector<int64_t>{8, 11, 11, 11}));
  EXPECT_EQ(models::resnet_spec(*model).block_widths, (std::vector<int64_t>{6, 6, 11, 11, 11, 11, 11, 11}));
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->forward(calib);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{6, 10}));
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
  // fc lost 5 of its 16 inputs: the projected weight count in the stats says so.
  EXPECT_EQ(plan.stats["layers"]["fc"]["weights_kept"], 10 * 11);
}

TEST(WandaPruner, StructuredExcludeProtectsTheLayersOutputsOnly) {
  // exclude [fc]: fc keeps its 10 outputs (the classes), the layer4 stream it reads still shrinks; naming the
  // group keeps that group whole; an unknown name is refused, listing the groups too.
  models::GraphNet model = small_resnet();
  const PrunePlan plan =
      run_pruner(model, calibration_images(), params_with({{"mode", text("structured")}, {"exclude", list({"fc"})}}));
  ASSERT_EQ(plan.keep.count("layer4"), 1u);
  EXPECT_LT(plan.keep.at("layer4").numel(), 16);
  EXPECT_EQ(plan.keep.count("layer1"), 1u);  // conv1 is not excluded here
  EXPECT_EQ(plan.stats["layers"]["fc"]["excluded"], true);
  models::GraphNet pruned = models::copy_model(model);
  models::prune_groups(pruned, plan.keep);
  EXPECT_EQ(models::state_dict(*pruned)["fc.weight"].size(0), 10);

  const PrunePlan whole = run_pruner(model, calibration_images(),
                                     params_with({{"mode", text("structured")}, {"exclude", list({"layer4"})}}));
  EXPECT_EQ(whole.keep.count("layer4"), 0u);
  EXPECT_EQ(whole.stats["groups"]["layer4"]["skipped"], "excluded");
  try {
    run_pruner(model, calibration_images(), params_with({{"mode", text("structured")}, {"exclude", list({"layer5"})}}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("groups: layer1"), std::string::npos) << e.what();
  }
}

TEST(WandaPruner, StructuredKeepsAtLeastOneChannelAndHonoursMagnitude) {
  models::GraphNet model = small_resnet();
  auto before = weights_of(model);
  const PrunePlan plan = run_pruner(model, torch::Tensor(),
                                    params_with({{"mode", text("structured")},
                                                 {"sparsity", num(0.99)},
                                                 {"score", text("magnitude")},
                                                 {"exclude", list({})}}));
  const auto groups = models::channel_groups(model);
  ASSERT_EQ(plan.keep.size(), groups.size());
  for (const auto& g : groups) {
    ASSERT_EQ(plan.keep.at(g.name).numel(), 1) << g.name;
    // The one survivor is the channel with the largest summed |W| over its consumers.
    torch::Tensor score = torch::zeros({g.size}, torch::kDouble);
    for (const auto& c : g.consumers) {
      const torch::Tensor w = before.at(c).detach().to(torch::kDouble).abs();
      score += w.transpose(0, 1).reshape({g.size, -1}).sum(1);
    }
    EXPECT_EQ(plan.keep.at(g.name).item<int64_t>(), score.argmax().item<int64_t>()) << g.name;
  }
  models::prune_groups(model, plan.keep);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(model->forward(calibration_images()).sizes(), (std::vector<int64_t>{6, 10}));
}

}  // namespace
}  // namespace expctl::wanda
