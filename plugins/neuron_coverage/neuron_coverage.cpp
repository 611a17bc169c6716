// Neuron Coverage pruner (DeepXplore, Pei et al. 2017), structured. The parameter table and the rules are
// documented in neuron_coverage.h.
#include "plugins/neuron_coverage/neuron_coverage.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "plugins/channel_selection.h"
#include "plugins/coverage/activation_stats.h"
#include "runner/core/error.h"
#include "runner/core/registry.h"

namespace expctl::neuron_coverage {
namespace {

const std::string kWho = "neuron_coverage";

// Channel means are taken in double so that a channel next to the threshold is judged as by a plain per-input
// loop; converting a whole ImageNet-stem batch to double would take GBs, so at most this many elements at a time.
constexpr int64_t kChunkElements = int64_t{1} << 23;

const OptionBinder<Options>& binder() {
  static const OptionBinder<Options> b = [] {
    OptionBinder<Options> b;
    selection::bind_budget(b);
    // Default t = 0.1, not 0.5. DeepXplore, with this per-input min-max scaling, reported t in {0, 0.25, 0.5, 0.75},
    // but the scaling divides by the largest value of the whole layer output (one hot spot over all channels and
    // positions), so the *spatial mean* of a channel's map rarely reaches half of it. Measured on 256 Fashion-MNIST
    // test images with a ResNet-18 trained to 78.5% (cifar stem, widths 32-256; tests/plugins/neuron_coverage/
    // threshold_survey.py): at t = 0.5, 99.1% of the (channel, activation point) coverages were 0 (the ranking would
    // be left to the tie-break alone); at 0.25, 62.9%; at 0.1, 1.2% were 0, none were 1, mean 0.29; at 0, 72.8% were
    // 1. Wider layers push the scaled means lower still: the full-width ResNet-18 of the tests gives all zeros at 0.5.
    // So 0.1 is the value of this scale that separates channels often active from rarely active ones.
    b.add(&Options::threshold, "threshold", "coverage threshold t on the [0,1]-scaled mean activation of a channel")
        .min(0)
        .below(1);
    b.add_enum(&Options::aggregate, "aggregate",
               {{"mean", Aggregate::Mean}, {"max", Aggregate::Max}, {"min", Aggregate::Min}},
               "how coverage of coupled layers (residual groups) combines");
    return b;
  }();
  return b;
}

PluginInfo info() {
  PluginInfo p;
  p.kind = "pruner";
  p.name = "neuron_coverage";
  p.code = "NC";
  p.summary = "structured: remove the channels least often covered on calibration inputs (DeepXplore)";
  p.details =
      "exclude: a listed layer keeps its outputs (the channel group it produces stays whole) while the channels it "
      "reads may still shrink, as with Torch-Pruning's ignored_layers: `fc` keeps its classes and lets the layer4 "
      "stream shrink; `conv1` keeps the layer1 stream whole. A listed group name (`layer4`) keeps that group whole.";
  p.params = binder().table();
  set_calibration_defaults(p, 512, 128, "coverage is measured on them");
  return p;
}

std::string aggregate_name(Aggregate a) {
  switch (a) {
    case Aggregate::Max:
      return "max";
    case Aggregate::Min:
      return "min";
    default:
      return "mean";
  }
}


}  // namespace

Options Options::from_params(const Params& params) { return binder().read(params, kWho); }

torch::Tensor PointCoverage::coverage() const {
  if (inputs == 0) return torch::zeros_like(covered, torch::kDouble);
  return covered.to(torch::kDouble) / static_cast<double>(inputs);
}

// ---- coverage --------------------------------------------------------------------------------------

CoverageObserver::CoverageObserver(double threshold, const std::vector<std::string>& points) : threshold_(threshold) {
  for (const auto& p : points) acc_.emplace(p, Acc{});
}

void CoverageObserver::on_activation(const std::string& point, const torch::Tensor& y) {
  auto it = acc_.find(point);
  if (it == acc_.end()) return;
  Acc& a = it->second;
  if (y.dim() < 2) throw Error(kWho + ": activation '" + point + "' has no channel dimension");
  const int64_t batch = y.size(0), channels = y.size(1);
  if (batch == 0) return;
  if (!a.covered.defined()) {
    a.covered = torch::zeros({channels}, y.options().dtype(torch::kLong));
    a.scaled_sum = torch::zeros({channels}, y.options().dtype(torch::kDouble));
  } else if (a.covered.size(0) != channels) {
    throw Error(kWho + ": activation '" + point + "' changed from " + std::to_string(a.covered.size(0)) + " to " +
                std::to_string(channels) + " channels between batches");
  }
  const torch::Tensor flat = y.reshape({batch, channels, -1});  // [B, C, positions]
  const int64_t per_input = std::max<int64_t>(1, flat.size(1) * flat.size(2));
  const int64_t chunk = std::max<int64_t>(1, kChunkElements / per_input);
  for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
    const torch::Tensor x = flat.slice(0, b0, std::min(batch, b0 + chunk));
    // Min-max over the whole layer output of each input (all channels and positions), as DeepXplore scales a
    // layer per input. The mean of the scaled map is (mean - min) / (max - min): one pass over the map instead of
    // scaling every element. min and max are exact in float; the channel means are taken in double.
    const auto [lo_f, hi_f] = torch::aminmax(x.reshape({x.size(0), -1}), 1);
    const torch::Tensor lo = lo_f.to(torch::kDouble).unsqueeze(1), range = hi_f.to(torch::kDouble).unsqueeze(1) - lo;
    const torch::Tensor means = x.to(torch::kDouble).mean(2);  // [b, C]
    // A channel that never rises above the layer's minimum scales to exactly 0 (not rounding noise that t = 0 would
    // count as covered); so does every channel of a constant output (max == min).
    const torch::Tensor flat_channel = x.amax(2).to(torch::kDouble) == lo;
    const torch::Tensor scaled = torch::where(flat_channel | (range <= 0), torch::zeros_like(means),
                                              (means - lo) / torch::where(range > 0, range, torch::ones_like(range)));
    a.covered += (scaled > threshold_).sum(0);
    a.scaled_sum += scaled.sum(0);
  }
  a.inputs += batch;
}

std::map<std::string, PointCoverage> CoverageObserver::result() const {
  std::map<std::string, PointCoverage> out;
  for (const auto& [point, a] : acc_) {
    if (!a.covered.defined()) continue;
    // clone(): outside InferenceMode this turns the accumulators into ordinary tensors callers may modify.
    out[point] = PointCoverage{a.inputs, a.covered.to(torch::kCPU).clone(), a.scaled_sum.to(torch::kCPU).clone()};
  }
  return out;
}

std::map<std::string, PointCoverage> measure_coverage(models::Network model, const torch::Tensor& calibration,
                                                      int64_t batch_size, double threshold,
                                                      const std::vector<std::string>& points) {
  CoverageObserver observer(threshold, points);
  coverage::observe(model, calibration, batch_size, observer, kWho);
  auto result = observer.result();
  coverage::require_reached(result, points, kWho);
  return result;
}

// ---- scores and plan -------------------------------------------------------------------------------

GroupScore score_group(const models::ChannelGroup& group, const std::map<std::string, PointCoverage>& coverage,
                       Aggregate aggregate) {
  const std::string what = kWho + ": group '" + group.name + "'";
  if (group.activation_points.empty()) throw Error(what + " has no activation points to measure");
  // The group's channels at each point: [offset, offset + size) of the point's channels (offset > 0 after a
  // concatenation).
  std::vector<PointCoverage> pcs;
  for (size_t k = 0; k < group.activation_points.size(); ++k) {
    const std::string& p = group.activation_points[k];
    const int64_t offset = k < group.activation_offsets.size() ? group.activation_offsets[k] : 0;
    auto it = coverage.find(p);
    if (it == coverage.end()) throw Error(what + ": no coverage measured at activation point '" + p + "'");
    const PointCoverage& pc = it->second;
    if (offset < 0 || pc.covered.size(0) < offset + group.size)
      throw Error(what + " has " + std::to_string(group.size) + " channels at offset " + std::to_string(offset) +
                  " but activation point '" + p + "' has " + std::to_string(pc.covered.size(0)));
    if (pc.inputs == 0) throw Error(what + ": no inputs were measured at activation point '" + p + "'");
    pcs.push_back(PointCoverage{pc.inputs, pc.covered.slice(0, offset, offset + group.size).contiguous(),
                                pc.scaled_sum.slice(0, offset, offset + group.size).contiguous()});
  }
  const int64_t channels = group.size, points = static_cast<int64_t>(pcs.size()), inputs = pcs[0].inputs;
  for (const auto& pc : pcs)
    if (pc.inputs != inputs) throw Error(what + ": its activation points saw different numbers of inputs");

  // Integer counts first and one division last: equal coverages are then equal doubles, so ties (also between
  // groups with different numbers of points, in global scope) are exact rather than rounding noise.
  std::vector<int64_t> agg(channels, 0);
  std::vector<double> act(channels, 0.0);
  for (int64_t i = 0; i < points; ++i) {
    const auto counts = pcs[size_t(i)].covered.accessor<int64_t, 1>();
    const auto sums = pcs[size_t(i)].scaled_sum.accessor<double, 1>();
    for (int64_t c = 0; c < channels; ++c) {
      if (aggregate == Aggregate::Mean || i == 0)
        agg[c] = (aggregate == Aggregate::Mean ? agg[c] : 0) + counts[c];
      else if (aggregate == Aggregate::Max)
        agg[c] = std::max(agg[c], counts[c]);
      else
        agg[c] = std::min(agg[c], counts[c]);
      act[c] += sums[c];
    }
  }
  const double denom = static_cast<double>(aggregate == Aggregate::Mean ? points * inputs : inputs);
  GroupScore s{torch::empty({channels}, torch::kDouble), torch::empty({channels}, torch::kDouble)};
  auto cov = s.coverage.accessor<double, 1>();
  auto mean_act = s.mean_activation.accessor<double, 1>();
  for (int64_t c = 0; c < channels; ++c) {
    cov[c] = static_cast<double>(agg[c]) / denom;
    mean_act[c] = act[c] / static_cast<double>(points * inputs);
  }
  return s;
}

torch::Tensor rank_channels(const GroupScore& score) {
  return selection::rank({nullptr, score.coverage, score.mean_activation});
}

PrunePlan make_plan(const std::vector<models::ChannelGroup>& groups,
                    const std::map<std::string, PointCoverage>& coverage, const Options& given,
                    const std::vector<std::string>& layer_names) {
  Options options = given;
  options.exclude = selection::resolve_exclude(given.exclude, layer_names);
  selection::check_exclude(options.exclude, groups, layer_names, kWho);
  // Coverage is a fraction of inputs in every group, so global scope compares it across groups as it is.
  std::vector<GroupScore> scores;
  scores.reserve(groups.size());
  std::vector<selection::GroupScores> ranked;
  // A group no activation carries (MobileNetV2's linear bottlenecks: BN output straight into the next conv and the
  // residual add) has no neuron outputs to cover: undefined scores, which the selection keeps whole ("unmeasured").
  for (const auto& g : groups) {
    scores.push_back(g.activation_points.empty() ? GroupScore{} : score_group(g, coverage, options.aggregate));
    ranked.push_back({&g, scores.back().coverage, scores.back().mean_activation});
  }
  PrunePlan plan = selection::make_plan(selection::choose(ranked, options, kWho), options, kWho);
  auto& st = plan.stats;
  st["threshold"] = options.threshold;
  st["aggregate"] = aggregate_name(options.aggregate);
  st["calibration_inputs"] = coverage.empty() ? 0 : coverage.begin()->second.inputs;
  for (size_t i = 0; i < groups.size(); ++i) {
    const models::ChannelGroup& g = groups[i];
    auto& j = st["groups"][g.name];
    if (!scores[i].coverage.defined()) continue;  // unmeasured: no coverage columns ("-" in the report)
    j["mean_coverage"] = scores[i].coverage.mean().item<double>();
    j["covered_fraction"] = (scores[i].coverage > 0).to(torch::kDouble).mean().item<double>();
    j["threshold"] = options.threshold;
    auto& pts = j["points"] = nlohmann::ordered_json::object();
    for (size_t k = 0; k < g.activation_points.size(); ++k) {
      const int64_t offset = k < g.activation_offsets.size() ? g.activation_offsets[k] : 0;
      pts[g.activation_points[k]] =
          coverage.at(g.activation_points[k]).coverage().slice(0, offset, offset + g.size).mean().item<double>();
    }
  }
  return plan;
}

PrunePlan NeuronCoveragePruner::prune(PruneRequest& request) {
  const Options options = request.params ? Options::from_params(*request.params) : options_;
  const std::vector<models::ChannelGroup> groups =
      request.groups.empty() ? models::channel_groups(request.model) : request.groups;
  std::vector<std::string> points;
  for (const auto& g : groups)
    for (const auto& p : g.activation_points)
      if (std::find(points.begin(), points.end(), p) == points.end()) points.push_back(p);
  const auto coverage =
      measure_coverage(request.model, request.calibration, request.batch_size, options.threshold, points);
  return make_plan(groups, coverage, options, request.model->layer_names());
}

PrunerEntry entry() {
  PrunerEntry e;
  e.info = info();
  e.create = [] { return std::make_unique<NeuronCoveragePruner>(); };
  e.method = [](const Params& p) {
    const Options o = Options::from_params(p);
    MethodSettings m;
    m.label = std::string("Neuron Coverage") + (o.scope_global ? " (global)" : "");
    m.sparsity = o.sparsity;
    m.settings = {{"scope", o.scope_global ? "global" : "local"}};
    return m;
  };
  return e;
}

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::neuron_coverage
