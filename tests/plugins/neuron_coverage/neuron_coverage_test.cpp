// Neuron Coverage pruner: coverage against a brute-force per-input, per-channel loop over stored activations, the
// plan's rules (sparsity, min_channels, round_to, exclude, global scope, tie-break), surgery with the plan, and a
// never-active channel.
#include "plugins/neuron_coverage/neuron_coverage.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/data/split.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"

namespace em = expctl::models;
namespace nc = expctl::neuron_coverage;
using expctl::PrunePlan;

namespace {

// ---- fixtures ----------------------------------------------------------------------------------

em::ResNetSpec small_spec() {
  em::ResNetSpec s;
  s.depth = 18;
  s.num_classes = 5;
  s.stem = em::Stem::Cifar;
  s.stage_widths = {8, 16, 16, 16};
  return s.resolved();
}

// A small ResNet-18 with random BN affine parameters and statistics, so channels differ in how often they fire.
em::GraphNet small_model(uint64_t seed = 1) {
  torch::manual_seed(seed);
  em::GraphNet m = em::make_resnet(small_spec());
  torch::NoGradGuard g;
  for (auto& mod : m->modules(false)) {
    if (auto* bn = mod->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.3);
      bn->running_mean.normal_(0, 0.3);
      bn->running_var.uniform_(0.5, 1.5);
    }
  }
  m->eval();
  return m;
}

torch::Tensor inputs(int64_t n = 6, uint64_t seed = 7) {
  torch::manual_seed(seed);
  return torch::randn({n, 3, 16, 16});
}

// Stores a copy of every activation of one forward pass.
struct Recorder : em::ForwardObserver {
  std::map<std::string, torch::Tensor> acts;
  void on_activation(const std::string& point, const torch::Tensor& y) override { acts[point] = y.clone(); }
};

std::map<std::string, torch::Tensor> record(em::GraphNet& model, const torch::Tensor& x) {
  Recorder r;
  torch::NoGradGuard g;
  model->forward(x, &r);
  return r.acts;
}

// Brute force, straight from the definition: for each input and point, scan the whole map for min and max, scale
// every element, average each channel's elements, compare with t. Plain loops, double precision.
struct Reference {
  std::vector<int64_t> count;  // per channel: inputs covering it
  std::vector<double> sum;     // per channel: sum over inputs of the scaled spatial mean
};

Reference reference_point(const torch::Tensor& y_float, double t) {
  const torch::Tensor y = y_float.to(torch::kDouble).contiguous();
  const int64_t n = y.size(0), c = y.size(1), h = y.size(2), w = y.size(3);
  auto a = y.accessor<double, 4>();
  Reference r{std::vector<int64_t>(c, 0), std::vector<double>(c, 0.0)};
  for (int64_t i = 0; i < n; ++i) {
    double lo = a[i][0][0][0], hi = lo;
    for (int64_t k = 0; k < c; ++k)
      for (int64_t u = 0; u < h; ++u)
        for (int64_t v = 0; v < w; ++v) lo = std::min(lo, a[i][k][u][v]), hi = std::max(hi, a[i][k][u][v]);
    for (int64_t k = 0; k < c; ++k) {
      double s = 0;
      for (int64_t u = 0; u < h; ++u)
        for (int64_t v = 0; v < w; ++v) s += hi > lo ? (a[i][k][u][v] - lo) / (hi - lo) : 0.0;
      const double mean = s / static_cast<double>(h * w);
      if (mean > t) ++r.count[k];
      r.sum[k] += mean;
    }
  }
  return r;
}

// The reference coverage of a group: per point fractions, aggregated as the mean, max or min of the fractions.
std::vector<double> reference_group(const em::ChannelGroup& g, const std::map<std::string, Reference>& ref,
                                    int64_t inputs, nc::Aggregate agg) {
  std::vector<double> out(g.size, 0.0);
  for (int64_t c = 0; c < g.size; ++c) {
    std::vector<double> f;
    for (const auto& p : g.activation_points) f.push_back(double(ref.at(p).count[c]) / double(inputs));
    if (agg == nc::Aggregate::Mean) {
      for (double v : f) out[c] += v / double(f.size());
    } else if (agg == nc::Aggregate::Max) {
      out[c] = *std::max_element(f.begin(), f.end());
    } else {
      out[c] = *std::min_element(f.begin(), f.end());
    }
  }
  return out;
}

std::vector<double> reference_activation(const em::ChannelGroup& g, const std::map<std::string, Reference>& ref,
                                         int64_t inputs) {
  std::vector<double> out(g.size, 0.0);
  for (int64_t c = 0; c < g.size; ++c) {
    for (const auto& p : g.activation_points) out[c] += ref.at(p).sum[c];
    out[c] /= double(inputs * g.activation_points.size());
  }
  return out;
}

std::map<std::string, Reference> reference_all(em::GraphNet& model, const torch::Tensor& x, double t) {
  std::map<std::string, Reference> ref;
  for (const auto& [p, y] : record(model, x)) ref[p] = reference_point(y, t);
  return ref;
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

const em::ChannelGroup& group(const std::vector<em::ChannelGroup>& gs, const std::string& name) {
  for (const auto& g : gs)
    if (g.name == name) return g;
  throw std::runtime_error("no group " + name);
}

// The reference keep set of a group in local scope: top `k` by (coverage desc, activation desc, index asc).
std::vector<int64_t> reference_top(const std::vector<double>& cov, const std::vector<double>& act, int64_t k) {
  std::vector<int64_t> idx(cov.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  // Coverages are compared with a tolerance: the reference's mean of fractions carries rounding noise.
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    if (std::abs(cov[a] - cov[b]) > 1e-12) return cov[a] > cov[b];
    if (act[a] != act[b]) return act[a] > act[b];
    return a < b;
  });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

nc::Options options(double sparsity, int64_t min_channels, int64_t round_to, bool global = false) {
  nc::Options o;
  o.sparsity = sparsity;
  o.min_channels = min_channels;
  o.round_to = round_to;
  o.scope_global = global;
  return o;
}

PrunePlan plan_for(em::GraphNet& model, const torch::Tensor& x, const nc::Options& o) {
  nc::NeuronCoveragePruner pruner(o);
  expctl::PruneRequest req;
  req.model = model;
  req.groups = em::channel_groups(model);
  req.calibration = x;
  req.batch_size = 4;
  return pruner.prune(req);
}

// ---- coverage ----------------------------------------------------------------------------------

TEST(NeuronCoverage, CountsEqualBruteForceForEveryPointAndThreshold) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const auto points = model->activation_points();
  for (double t : {0.0, 0.1, 0.25, 0.5}) {
    SCOPED_TRACE("threshold " + std::to_string(t));
    const auto ref = reference_all(model, x, t);
    // Batches of 4 over 6 inputs: the last batch is partial, so accumulation across batches is exercised.
    const auto cov = nc::measure_coverage(model, x, 4, t, points);
    ASSERT_EQ(cov.size(), points.size());
    int64_t strictly_between = 0;
    for (const auto& p : points) {
      SCOPED_TRACE(p);
      const nc::PointCoverage& pc = cov.at(p);
      EXPECT_EQ(pc.inputs, 6);
      EXPECT_EQ(to_vec(pc.covered), ref.at(p).count);
      const auto sums = pc.scaled_sum.accessor<double, 1>();
      for (size_t c = 0; c < ref.at(p).sum.size(); ++c) EXPECT_NEAR(sums[c], ref.at(p).sum[c], 1e-12);
      for (int64_t k : ref.at(p).count) strictly_between += k > 0 && k < 6;
    }
    // The comparison is only meaningful if coverage actually varies.
    if (t <= 0.25) EXPECT_GT(strictly_between, 0);
  }
}

TEST(NeuronCoverage, BatchSizeDoesNotChangeCounts) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const auto points = model->activation_points();
  const auto a = nc::measure_coverage(model, x, 1, 0.25, points);
  const auto b = nc::measure_coverage(model, x, 6, 0.25, points);
  for (const auto& p : points) {
    EXPECT_TRUE(torch::equal(a.at(p).covered, b.at(p).covered)) << p;
    // Batch size changes the float convolution algorithm, hence last-bit differences in the activations.
    EXPECT_TRUE(torch::allclose(a.at(p).scaled_sum, b.at(p).scaled_sum, 0, 1e-5)) << p;
  }
}

TEST(NeuronCoverage, GroupCoverageEqualsBruteForceForEachAggregate) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const double t = 0.1;
  const auto ref = reference_all(model, x, t);
  const auto cov = nc::measure_coverage(model, x, 4, t, model->activation_points());
  const auto groups = em::channel_groups(model);
  for (auto agg : {nc::Aggregate::Mean, nc::Aggregate::Max, nc::Aggregate::Min}) {
    bool modes_disagree = false;
    for (const auto& g : groups) {
      SCOPED_TRACE(g.name);
      const nc::GroupScore s = nc::score_group(g, cov, agg);
      const auto expect = reference_group(g, ref, 6, agg);
      const auto expect_act = reference_activation(g, ref, 6);
      ASSERT_EQ(s.coverage.size(0), g.size);
      const auto got = s.coverage.accessor<double, 1>();
      const auto act = s.mean_activation.accessor<double, 1>();
      for (int64_t c = 0; c < g.size; ++c) {
        EXPECT_NEAR(got[c], expect[c], 1e-12) << "channel " << c;
        EXPECT_NEAR(act[c], expect_act[c], 1e-12) << "channel " << c;
      }
      const auto mx = reference_group(g, ref, 6, nc::Aggregate::Max);
      const auto mn = reference_group(g, ref, 6, nc::Aggregate::Min);
      modes_disagree = modes_disagree || mx != mn;
    }
    // The residual streams span several points whose coverage differs, so the modes really disagree somewhere.
    EXPECT_TRUE(modes_disagree);
  }
}

TEST(NeuronCoverage, MeasuringRestoresTrainModeAndLeavesTheModelUntouched) {
  em::GraphNet model = small_model();
  model->train();
  const auto before = em::state_dict(*model);
  std::vector<torch::Tensor> snapshot;
  for (const auto& kv : before) snapshot.push_back(kv.value().clone());
  nc::measure_coverage(model, inputs(), 4, 0.5, model->activation_points());
  EXPECT_TRUE(model->is_training());
  size_t i = 0;
  // Eval mode during calibration: BN running statistics must not move.
  for (const auto& kv : em::state_dict(*model)) EXPECT_TRUE(torch::equal(kv.value(), snapshot[i++])) << kv.key();
}

TEST(NeuronCoverage, BadCalibrationInputsAreErrors) {
  em::GraphNet model = small_model();
  EXPECT_THROW(nc::measure_coverage(model, torch::Tensor(), 4, 0.5, {"relu"}), expctl::Error);
  EXPECT_THROW(nc::measure_coverage(model, torch::zeros({0, 3, 16, 16}), 4, 0.5, {"relu"}), expctl::Error);
  EXPECT_THROW(nc::measure_coverage(model, torch::zeros({2, 3, 16, 16}, torch::kByte), 4, 0.5, {"relu"}),
               expctl::Error);
  EXPECT_THROW(nc::measure_coverage(model, inputs(2), 0, 0.5, {"relu"}), expctl::Error);
  try {
    nc::measure_coverage(model, inputs(2), 4, 0.5, {"layer9.0"});
    FAIL() << "expected an error";
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer9.0"), std::string::npos) << e.what();
  }
}

// ---- plan --------------------------------------------------------------------------------------

TEST(NeuronCoveragePlan, LocalKeepCount) {
  EXPECT_EQ(expctl::selection::local_keep_count(64, 0.5, 8, 8), 32);
  EXPECT_EQ(expctl::selection::local_keep_count(10, 0.3, 1, 1), 7);    // 0.7 * 10 is 7.000000000000001 in doubles
  EXPECT_EQ(expctl::selection::local_keep_count(16, 0.7, 1, 4), 8);    // ceil(4.8) = 5, rounded up to 8
  EXPECT_EQ(expctl::selection::local_keep_count(16, 0.9, 3, 1), 3);    // ceil(1.6) = 2 < min_channels
  EXPECT_EQ(expctl::selection::local_keep_count(16, 0.5, 32, 1), 16);  // never more than the group
  EXPECT_EQ(expctl::selection::local_keep_count(12, 0.5, 1, 8), 8);
  EXPECT_EQ(expctl::selection::local_keep_count(12, 0.2, 1, 8), 12);  // 16 capped at the size
  EXPECT_EQ(expctl::selection::local_keep_count(16, 0.0, 1, 1), 16);
}

TEST(NeuronCoveragePlan, LocalScopeKeepsTheBestChannelsOfEachPrunableGroup) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const auto groups = em::channel_groups(model);
  for (double t : {0.1, 0.5}) {
    nc::Options o = options(0.6, 3, 2);
    o.threshold = t;
    const PrunePlan plan = plan_for(model, x, o);
    const auto ref = reference_all(model, x, t);
    // Default exclude [conv1, fc]: the layer1 stream (conv1's outputs) stays whole; fc keeps its outputs (the
    // classes) but the layer4 stream it reads may shrink.
    EXPECT_EQ(plan.keep.count("layer1"), 0u);
    EXPECT_EQ(plan.keep.count("layer4"), 1u);
    EXPECT_TRUE(plan.masks.empty());
    for (const auto& g : groups) {
      SCOPED_TRACE(g.name);
      const bool excluded = g.name == "layer1";
      const int64_t k = excluded ? g.size : expctl::selection::local_keep_count(g.size, 0.6, 3, 2);
      EXPECT_EQ(plan.stats["groups"][g.name]["kept"].get<int64_t>(), k);
      EXPECT_EQ(plan.stats["groups"][g.name]["excluded"].get<bool>(), excluded);
      if (excluded) continue;
      ASSERT_EQ(plan.keep.count(g.name), 1u);
      const torch::Tensor keep = plan.keep.at(g.name);
      EXPECT_EQ(keep.scalar_type(), torch::kLong);
      EXPECT_EQ(to_vec(keep),
                reference_top(reference_group(g, ref, 6, nc::Aggregate::Mean), reference_activation(g, ref, 6), k));
    }
  }
  // 8 channels at 0.6 → ceil(3.2) = 4; 16 → ceil(6.4) = 7 → 8 with round_to 2.
  EXPECT_EQ(expctl::selection::local_keep_count(8, 0.6, 3, 2), 4);
  EXPECT_EQ(expctl::selection::local_keep_count(16, 0.6, 3, 2), 8);
}

TEST(NeuronCoveragePlan, MinChannelsAndRoundToBind) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const PrunePlan a = plan_for(model, x, options(0.95, 5, 1));
  for (const auto& [name, keep] : a.keep) EXPECT_EQ(keep.numel(), 5) << name;
  const PrunePlan b = plan_for(model, x, options(0.7, 1, 4));
  for (const auto& [name, keep] : b.keep) {
    const int64_t size = a.stats["groups"][name]["size"].get<int64_t>();
    EXPECT_EQ(keep.numel(), size == 8 ? 4 : 8) << name;  // ceil(2.4) → 4; ceil(4.8) → 8
  }
  // With the defaults (8 and 8) no group of this small model can shrink below 8: the 8-wide ones stay whole.
  const PrunePlan c = plan_for(model, x, options(0.5, 8, 8));
  EXPECT_EQ(c.keep.count("layer1.0.conv1"), 0u);
  EXPECT_EQ(c.keep.at("layer2").numel(), 8);
}

TEST(NeuronCoveragePlan, ExcludeKeepsTheLayersOutputsWholeAndLetsItsInputsShrink) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  nc::Options o = options(0.5, 1, 1);
  o.exclude = {"layer2.0.conv1"};  // reads the layer1 stream, produces the layer2.0.conv1 group
  const PrunePlan plan = plan_for(model, x, o);
  EXPECT_EQ(plan.keep.count("layer2.0.conv1"), 0u);  // its outputs
  EXPECT_EQ(plan.keep.count("layer1"), 1u);          // its inputs may shrink
  EXPECT_EQ(plan.keep.count("layer4"), 1u);
  EXPECT_EQ(plan.keep.count("layer2"), 1u);
  o.exclude = {"layer3"};  // a group name works too
  EXPECT_EQ(plan_for(model, x, o).keep.count("layer3"), 0u);
  o.exclude = {"layer2.0.cnv1"};
  try {
    plan_for(model, x, o);
    FAIL() << "expected an error";
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'layer2.0.cnv1'"), std::string::npos) << e.what();
  }
}

TEST(NeuronCoveragePlan, ApplyingThePlanGivesARunningModelWithTheExpectedWidths) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const PrunePlan plan = plan_for(model, x, options(0.5, 2, 2));
  em::GraphNet pruned = em::copy_model(model);
  em::prune_groups(pruned, plan.keep);
  const em::ResNetSpec& s = em::resnet_spec(*pruned);
  // Streams: layer1 kept whole (conv1 excluded: 8), layer2..4 halved (fc excluded keeps only its 5 classes).
  // Inner widths: 8 → 4, 16 → 8.
  EXPECT_EQ(s.stage_widths, (std::vector<int64_t>{8, 8, 8, 8}));
  EXPECT_EQ(s.block_widths, (std::vector<int64_t>{4, 4, 8, 8, 8, 8, 8, 8}));
  torch::NoGradGuard g;
  const torch::Tensor y = pruned->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{6, 5}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  // The first pruned point downstream of unpruned layers carries the same values as before, on the kept channels
  // (surgery removed channels, never mixed them up).
  const auto orig = record(model, x), after = record(pruned, x);
  const torch::Tensor keep1 = plan.keep.at("layer1.0.conv1");
  EXPECT_TRUE(torch::allclose(after.at("layer1.0.relu1"), orig.at("layer1.0.relu1").index_select(1, keep1)));
  // Stats carry what the report charts.
  const auto& st = plan.stats;
  EXPECT_EQ(st["threshold"].get<double>(), 0.1);  // the default
  EXPECT_EQ(st["scope"].get<std::string>(), "local");
  EXPECT_EQ(st["calibration_inputs"].get<int64_t>(), 6);
  for (const auto& gr : em::channel_groups(model)) {
    const auto& j = st["groups"][gr.name];
    for (const char* key : {"size", "kept", "mean_coverage", "covered_fraction", "threshold", "points"})
      EXPECT_TRUE(j.contains(key)) << gr.name << " " << key;
    EXPECT_EQ(j["points"].size(), gr.activation_points.size());
    EXPECT_GE(j["covered_fraction"].get<double>(), 0.0);
    EXPECT_LE(j["covered_fraction"].get<double>(), 1.0);
  }
}

TEST(NeuronCoveragePlan, GlobalScopeRemovesTheLowestChannelsNetworkWide) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const double t = 0.1;
  const auto ref = reference_all(model, x, t);
  const auto groups = em::channel_groups(model);
  // Reference: every channel of a prunable group with its (coverage, activation), sorted worst first.
  struct Ch {
    double cov, act;
    std::string group;
    int64_t index;
  };
  std::vector<Ch> all;
  int64_t prunable = 0;
  for (const auto& g : groups) {
    if (g.name == "layer1") continue;  // default exclude: conv1's outputs (fc keeps only its classes)
    prunable += g.size;
    const auto cov = reference_group(g, ref, 6, nc::Aggregate::Mean);
    const auto act = reference_activation(g, ref, 6);
    for (int64_t c = 0; c < g.size; ++c) all.push_back({cov[c], act[c], g.name, c});
  }
  std::sort(all.begin(), all.end(), [](const Ch& a, const Ch& b) {
    if (std::abs(a.cov - b.cov) > 1e-12) return a.cov < b.cov;
    return a.act < b.act;
  });
  nc::Options o = options(0.4, 1, 1, /*global=*/true);
  o.threshold = t;
  const PrunePlan plan = plan_for(model, x, o);
  const int64_t target = int64_t(0.4 * double(prunable));
  std::map<std::string, std::set<int64_t>> removed;
  for (int64_t i = 0; i < target; ++i) removed[all[i].group].insert(all[i].index);
  // Precondition of this reference: no group would be emptied, and the boundary is not a tie.
  ASSERT_FALSE(std::abs(all[target - 1].cov - all[target].cov) < 1e-12 && all[target - 1].act == all[target].act);
  int64_t kept_total = 0;
  for (const auto& g : groups) {
    if (g.name == "layer1") {
      EXPECT_EQ(plan.keep.count(g.name), 0u);
      continue;
    }
    ASSERT_LT(int64_t(removed[g.name].size()), g.size) << g.name;
    std::vector<int64_t> expect;
    for (int64_t c = 0; c < g.size; ++c)
      if (!removed[g.name].count(c)) expect.push_back(c);
    const std::vector<int64_t> got = plan.keep.count(g.name) ? to_vec(plan.keep.at(g.name)) : std::vector<int64_t>();
    if (!plan.keep.count(g.name)) {
      EXPECT_TRUE(removed[g.name].empty()) << g.name;
      kept_total += g.size;
    } else {
      EXPECT_EQ(got, expect) << g.name;
      kept_total += int64_t(got.size());
    }
  }
  EXPECT_EQ(prunable - kept_total, target);
  EXPECT_EQ(plan.stats["removed_channels"].get<int64_t>(), target);
  // Groups really lose different fractions: that is what global scope is for.
  std::set<int64_t> kept_counts;
  for (const auto& [name, keep] : plan.keep)
    if (plan.stats["groups"][name]["size"].get<int64_t>() == 16) kept_counts.insert(keep.numel());
  EXPECT_GT(kept_counts.size(), 1u);
}

TEST(NeuronCoveragePlan, GlobalScopeRespectsMinChannelsAndRoundTo) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const PrunePlan a = plan_for(model, x, options(0.9, 6, 1, true));
  int64_t prunable = 0, removed = 0;
  for (const auto& [name, j] : a.stats["groups"].items()) {
    if (j["excluded"].get<bool>()) continue;
    prunable += j["size"].get<int64_t>();
    removed += j["size"].get<int64_t>() - j["kept"].get<int64_t>();
    EXPECT_GE(j["kept"].get<int64_t>(), 6) << name;
  }
  // 90% cannot be removed with 6 channels kept per group: every group ends at exactly 6.
  for (const auto& [name, keep] : a.keep) EXPECT_EQ(keep.numel(), 6) << name;
  EXPECT_EQ(removed, prunable - 6 * 11);  // 11 prunable groups (all but layer1)

  const PrunePlan b = plan_for(model, x, options(0.5, 1, 4, true));
  const int64_t target = int64_t(0.5 * 160);
  EXPECT_EQ(b.stats["prunable_channels"].get<int64_t>(), 160);
  int64_t removed_b = 0;
  for (const auto& [name, j] : b.stats["groups"].items()) {
    const int64_t kept = j["kept"].get<int64_t>(), size = j["size"].get<int64_t>();
    EXPECT_TRUE(kept % 4 == 0 || kept == size) << name << " keeps " << kept;
    removed_b += size - kept;
  }
  // Rounding up only gives channels back, less than round_to per group.
  EXPECT_LE(removed_b, target);
  EXPECT_GT(removed_b, target - 4 * 11);
  EXPECT_EQ(b.stats["removed_channels"].get<int64_t>(), removed_b);
}

// ---- ties and dead channels --------------------------------------------------------------------

TEST(NeuronCoveragePlan, TiesAreBrokenByMeanActivation) {
  // Synthetic counts: channels 0-2 tie on coverage 2/4; their activation sums decide. Channel 3 is the most
  // active on average but covered least: coverage comes first.
  em::ChannelGroup g;
  g.name = "g";
  g.size = 5;
  g.activation_points = {"p"};
  g.producers = {"conv"};
  std::map<std::string, nc::PointCoverage> cov;
  cov["p"] = nc::PointCoverage{4, torch::tensor(std::vector<int64_t>{2, 2, 2, 1, 2}),
                               torch::tensor(std::vector<double>{0.3, 0.9, 0.5, 3.0, 0.3}, torch::kDouble)};
  const auto order = to_vec(nc::rank_channels(nc::score_group(g, cov, nc::Aggregate::Mean)));
  EXPECT_EQ(order, (std::vector<int64_t>{1, 2, 0, 4, 3}));  // 0 and 4 tie completely: lower index first
  nc::Options o = options(0.6, 1, 1);
  o.exclude = {};
  const PrunePlan plan = nc::make_plan({g}, cov, o, {"conv"});
  EXPECT_EQ(to_vec(plan.keep.at("g")), (std::vector<int64_t>{1, 2}));

  // On a real model: at t = 0.99 no channel is covered (a spatial mean above 0.99 of the layer's maximum needs an
  // almost constant map at the maximum), so every coverage ties at 0 and the kept channels are exactly those with
  // the highest mean activation.
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const auto ref = reference_all(model, x, 0.99);
  nc::Options hi = options(0.5, 1, 1);
  hi.threshold = 0.99;
  const PrunePlan p = plan_for(model, x, hi);
  for (const auto& gr : em::channel_groups(model)) {
    if (!p.keep.count(gr.name)) continue;
    SCOPED_TRACE(gr.name);
    const auto c = reference_group(gr, ref, 6, nc::Aggregate::Mean);
    ASSERT_TRUE(std::all_of(c.begin(), c.end(), [](double v) { return v == 0.0; }));
    const auto act = reference_activation(gr, ref, 6);
    EXPECT_EQ(to_vec(p.keep.at(gr.name)), reference_top(c, act, gr.size / 2));
    const std::set<double> distinct(act.begin(), act.end());
    EXPECT_GT(distinct.size(), size_t(gr.size / 2));  // the activation ranking is not itself a tie
  }
}

// Zeroes channel `c` of every BN producing the group, so that channel is 0 after each ReLU where it appears.
void kill_channel(em::GraphNet& model, const em::ChannelGroup& g, int64_t c) {
  torch::NoGradGuard guard;
  std::map<std::string, torch::Tensor> sd;
  for (const auto& kv : em::state_dict(*model)) sd[kv.key()] = kv.value();
  for (const auto& m : g.members) {
    const auto dot = m.tensor.rfind('.');
    const std::string suffix = m.tensor.substr(dot + 1);
    // BN members are the producers' (dim 0) weight and bias; conv weights have 4 dims.
    if (m.dim == 0 && (suffix == "weight" || suffix == "bias") && sd.at(m.tensor).dim() == 1) sd.at(m.tensor)[c] = 0;
  }
}

TEST(NeuronCoveragePlan, ANeverActiveChannelHasCoverageZeroAndGoesFirst) {
  em::GraphNet model = small_model();
  const torch::Tensor x = inputs();
  const auto groups = em::channel_groups(model);
  // An inner channel and a residual-stream channel (every producer's BN, so it is 0 at all the stream's points).
  const std::map<std::string, int64_t> victims{{"layer3.0.conv1", 11}, {"layer2", 5}};
  const auto before = nc::measure_coverage(model, x, 4, 0.0, model->activation_points());
  for (const auto& [name, c] : victims) {
    ASSERT_GT(nc::score_group(group(groups, name), before, nc::Aggregate::Min).coverage[c].item<double>(), 0.0)
        << name << ": the channel must be active before it is killed";
    kill_channel(model, group(groups, name), c);
  }
  const auto cov = nc::measure_coverage(model, x, 4, 0.0, model->activation_points());
  for (const auto& [name, c] : victims) {
    const auto& g = group(groups, name);
    for (const auto& p : g.activation_points) EXPECT_EQ(to_vec(cov.at(p).covered)[c], 0) << p;
    const nc::GroupScore s = nc::score_group(g, cov, nc::Aggregate::Max);
    EXPECT_EQ(s.coverage[c].item<double>(), 0.0) << name;
    EXPECT_EQ(s.mean_activation[c].item<double>(), 0.0) << name;
  }
  // The channels with coverage 0 at t = 0 (the killed ones, and any that a random model leaves silent) are the
  // ones removed first: remove exactly that many and exactly they go.
  auto zero_set = [&](const em::ChannelGroup& g) {
    std::set<int64_t> z;
    const auto s = nc::score_group(g, cov, nc::Aggregate::Mean);
    for (int64_t c = 0; c < g.size; ++c)
      if (s.coverage[c].item<double>() == 0.0) z.insert(c);
    return z;
  };
  auto removed = [](const torch::Tensor& keep, int64_t size) {
    std::set<int64_t> r;
    const auto k = to_vec(keep);
    for (int64_t c = 0; c < size; ++c)
      if (std::find(k.begin(), k.end(), c) == k.end()) r.insert(c);
    return r;
  };
  for (const auto& [name, c] : victims) {
    const auto& g = group(groups, name);
    const std::set<int64_t> z = zero_set(g);
    ASSERT_TRUE(z.count(c));
    ASSERT_LT(int64_t(z.size()), g.size / 2);
    nc::Options lo = options(double(z.size()) / double(g.size), 1, 1);
    lo.threshold = 0.0;
    const PrunePlan a = plan_for(model, x, lo);
    EXPECT_EQ(removed(a.keep.at(name), g.size), z) << name;
  }
  // Global: removing as many channels network-wide as have coverage 0 removes exactly those.
  nc::Options gl = options(0, 1, 1, true);
  gl.threshold = 0.0;
  int64_t zeros = 0;
  for (const auto& g : groups)
    if (!expctl::selection::is_excluded(g, gl.exclude)) zeros += int64_t(zero_set(g).size());
  gl.sparsity = (double(zeros) + 0.5) / 160.0;  // 160 prunable channels: all but layer1's 8
  const PrunePlan b = plan_for(model, x, gl);
  EXPECT_EQ(b.stats["removed_channels"].get<int64_t>(), zeros);
  for (const auto& g : groups) {
    if (expctl::selection::is_excluded(g, gl.exclude)) continue;
    const std::set<int64_t> got = b.keep.count(g.name) ? removed(b.keep.at(g.name), g.size) : std::set<int64_t>{};
    EXPECT_EQ(got, zero_set(g)) << g.name;
  }
  EXPECT_TRUE(removed(b.keep.at("layer2"), 16).count(5));
  EXPECT_TRUE(removed(b.keep.at("layer3.0.conv1"), 16).count(11));
}

// ---- registry and params -----------------------------------------------------------------------

expctl::Value value(std::variant<std::monostate, bool, int64_t, double, std::string, std::vector<std::string>> v) {
  expctl::Value out;
  out.v = std::move(v);
  return out;
}

TEST(NeuronCoverageRegistry, EntryCreatesThePrunerAndReadsTheParams) {
  const expctl::PrunerEntry* e = expctl::PrunerRegistry::find("neuron_coverage");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->info.code, "NC");
  ASSERT_TRUE(e->create);
  for (const char* key : {"sparsity", "threshold", "scope", "aggregate", "min_channels", "round_to", "exclude"})
    EXPECT_NE(e->info.params.find(key), nullptr) << key;
  // The calibration keys are the prune stage's; the pruner gives its defaults.
  EXPECT_EQ(e->info.params.find("calibration.samples"), nullptr);
  ASSERT_EQ(e->info.overrides.size(), 2u);
  EXPECT_EQ(e->info.overrides[0].key, "calibration.samples");
  EXPECT_EQ(e->info.overrides[0].value.to_text(), "512");
  EXPECT_EQ(e->info.overrides[1].value.to_text(), "128");

  expctl::Params params;
  params.set("sparsity", value(0.25));
  params.set("threshold", value(0.1));
  params.set("scope", value(std::string("global")));
  params.set("aggregate", value(std::string("min")));
  params.set("min_channels", value(int64_t{2}));
  params.set("round_to", value(int64_t{2}));
  params.set("exclude", value(std::vector<std::string>{"conv1"}));
  const nc::Options o = nc::Options::from_params(params);
  EXPECT_EQ(o.sparsity, 0.25);
  EXPECT_TRUE(o.scope_global);
  EXPECT_EQ(o.aggregate, nc::Aggregate::Min);
  EXPECT_EQ(o.exclude, (std::vector<std::string>{"conv1"}));

  em::GraphNet model = small_model();
  expctl::PruneRequest req;
  req.model = model;
  req.groups = em::channel_groups(model);
  req.calibration = inputs();
  req.batch_size = 5;
  req.params = &params;
  const PrunePlan from_registry = e->create()->prune(req);
  const PrunePlan direct = plan_for(model, inputs(), o);
  EXPECT_EQ(from_registry.stats.dump(), direct.stats.dump());
  ASSERT_EQ(from_registry.keep.size(), direct.keep.size());
  for (const auto& [name, keep] : direct.keep) EXPECT_TRUE(torch::equal(from_registry.keep.at(name), keep)) << name;
  EXPECT_EQ(from_registry.stats["aggregate"].get<std::string>(), "min");
  EXPECT_EQ(from_registry.keep.count("layer4"), 1u);  // fc is not excluded

  auto message = [](const expctl::Params& p) {
    try {
      nc::Options::from_params(p);
    } catch (const expctl::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  expctl::Params bad;
  bad.set("aggregate", value(std::string("median")));
  EXPECT_EQ(message(bad),
            "neuron_coverage: aggregate: expected one of mean, max, min; got 'median' (did you mean 'mean'?)");
  expctl::Params out_of_range;
  out_of_range.set("threshold", value(1.0));
  EXPECT_EQ(message(out_of_range), "neuron_coverage: threshold: must be in [0, 1), got 1");
  expctl::Params min_channels;
  min_channels.set("min_channels", value(int64_t{0}));
  EXPECT_EQ(message(min_channels), "neuron_coverage: min_channels: must be >= 1, got 0");
  // The defaults of the table are the fields' initializers: one declaration.
  const nc::Options defaults;
  EXPECT_EQ(e->info.params.find("threshold")->default_value.to_text(), "0.1");
  EXPECT_EQ(e->info.params.find("scope")->default_value.to_text(), defaults.scope_global ? "global" : "local");
  EXPECT_EQ(e->info.params.find("min_channels")->default_value.to_text(), std::to_string(defaults.min_channels));
  EXPECT_EQ(nc::Options::from_params(expctl::Params{}).threshold, defaults.threshold);
}

// ---- a real model on real images ---------------------------------------------------------------

// Checks that the default threshold is informative on real data: coverage neither all 0 nor all 1. Uses a full-width
// ResNet-18 (random weights: no pretrained file offline) whose BN statistics are re-estimated on real images, so
// eval-mode activations have realistic scales, and Debian's Fashion-MNIST test images. Prints the coverage
// distribution at the default and at DeepXplore's 0.5 (tests/plugins/neuron_coverage/threshold_survey.py does the same
// for a trained model).
TEST(NeuronCoverageReal, DefaultThresholdIsInformativeOnRealImages) {
  const std::filesystem::path dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir / "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist missing";
  const expctl::data::Split test = expctl::data::read_fashion_mnist(dir, false);
  const torch::Tensor x = expctl::data::normalize(test.images.slice(0, 0, 96), test.norm);
  torch::manual_seed(3);
  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = em::Stem::Cifar;
  spec.in_channels = 1;
  em::GraphNet model = em::make_resnet(spec);
  {
    torch::NoGradGuard g;
    for (auto& mod : model->modules(false))
      if (auto* bn = mod->as<torch::nn::BatchNorm2dImpl>()) bn->options.momentum(c10::nullopt);  // cumulative mean
    model->train();
    model->forward(expctl::data::normalize(test.images.slice(0, 1000, 1064), test.norm));
    model->eval();
  }
  const nc::Options defaults;
  for (double t : {defaults.threshold, 0.5}) {
    const auto cov = nc::measure_coverage(model, x, 48, t, model->activation_points());
    nc::Options o;
    o.threshold = t;
    const PrunePlan plan = nc::make_plan(em::channel_groups(model), cov, o, model->layer_names());
    int64_t zero = 0, one = 0, between = 0;
    std::cout << "threshold " << t << ":\n";
    for (const auto& [name, j] : plan.stats["groups"].items())
      std::cout << "  " << name << ": mean coverage " << j["mean_coverage"].get<double>() << ", covered fraction "
                << j["covered_fraction"].get<double>() << ", kept " << j["kept"] << "/" << j["size"] << "\n";
    for (const auto& [p, pc] : cov) {
      const torch::Tensor c = pc.coverage();
      zero += (c == 0).sum().item<int64_t>();
      one += (c == 1).sum().item<int64_t>();
      between += ((c > 0) & (c < 1)).sum().item<int64_t>();
    }
    std::cout << "  (channel, point) coverages equal to 0: " << zero << ", to 1: " << one
              << ", strictly between: " << between << "\n";
    if (t == defaults.threshold) {
      EXPECT_GT(between, (zero + one + between) / 2);
      EXPECT_EQ(plan.stats["groups"]["layer2"]["kept"].get<int64_t>(), 64);
      EXPECT_EQ(plan.stats["groups"]["layer1"]["kept"].get<int64_t>(), 64);   // conv1's outputs: excluded
      EXPECT_EQ(plan.stats["groups"]["layer4"]["kept"].get<int64_t>(), 256);  // fc keeps its classes only
    }
  }
}

}  // namespace
