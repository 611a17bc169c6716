// Neuron Coverage pruner (DeepXplore, Pei et al. 2017), structured: removes the channels that calibration inputs
// cover least often, so the model really shrinks (size, MACs and latency drop).
//
// Coverage. For each calibration input n and each ReLU output p of the model (an activation point), the map
// y[n] at p ([C, H, W]) is scaled to [0, 1] by min-max over the whole map of that input (all channels and
// positions; all zeros when max == min). Channel c is *covered* by n when the spatial mean of its scaled map
// exceeds `threshold`. Coverage of c at p = fraction of inputs that cover it. A channel group (models::ChannelGroup:
// tensors that lose the same channels, e.g. a residual stream read at several points) aggregates the coverage of
// its activation points (`aggregate`: mean, max or min). Higher coverage = keep; ties are broken by the mean
// activation (the scaled spatial mean averaged over inputs and points), then by the lower channel index.
//
// Its keys (threshold, aggregate, the budget rules, the calibration defaults) are declared once, in the binder in
// neuron_coverage.cpp: `expctl describe neuron_coverage` lists them with their defaults, ranges and meaning.
//
//     prune: {pruner: neuron_coverage, sparsity: 0.5, threshold: 0.1, scope: local}
//
// (*) DeepXplore's thresholds were 0, 0.25, 0.5 and 0.75; with per-input min-max scaling over a whole ResNet layer,
// spatial means above 0.25 are rare and above 0.5 almost absent (see the measurements beside the parameter table
// in neuron_coverage.cpp), so 0.1 is the default.
//
// With the default exclude, the group conv1 produces (the "layer1" stream) keeps all its channels and fc keeps its
// classes; every block's inner width and the layer2..layer4 streams are pruned (fc loses the layer4 inputs). The
// budget rules (scope, min_channels, round_to, exclude) are the ones every structured pruner shares
// (plugins/channel_selection.h).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "plugins/channel_selection.h"
#include "plugins/pruner.h"
#include "runner/core/params.h"
#include "runner/models/channel_groups.h"
#include "runner/models/network.h"

namespace expctl::neuron_coverage {

/// How the coverage of a group's activation points combines into one value per channel.
enum class Aggregate { Mean, Max, Min };

/// The pruner's settings; plain data with the parameter table's defaults. The budget rules (sparsity, scope,
/// min_channels, round_to, exclude) are the shared selection::Options every structured pruner has.
///
///     Options o;
///     o.sparsity = 0.25;
///     o.scope_global = true;
struct Options : selection::Options {
  double threshold = 0.1;                 ///< coverage threshold t on the scaled spatial mean, in [0, 1)
  Aggregate aggregate = Aggregate::Mean;  ///< see Aggregate

  /// The options of a `prune` block: each key of the table above is bound to its field (one declaration gives
  /// the key, the default and the range); absent keys keep the defaults. Throws expctl::Error
  /// "neuron_coverage: <key>: ..." for a value out of range or an unknown name.
  static Options from_params(const Params& params);
};

/// Coverage counts of one activation point, accumulated over calibration inputs.
struct PointCoverage {
  int64_t inputs = 0;        ///< number of inputs seen
  torch::Tensor covered;     ///< int64 [C], CPU: inputs whose scaled spatial mean of channel c exceeds t
  torch::Tensor scaled_sum;  ///< double [C], CPU: sum over inputs of the scaled spatial mean of channel c

  /// covered / inputs, double [C] (zeros when no input was seen).
  torch::Tensor coverage() const;
};

/// A ForwardObserver that accumulates PointCoverage for the named activation points as batches stream through;
/// it keeps no activations (memory is O(channels), whatever the number of inputs).
///
///     CoverageObserver obs(0.1, {"layer1.0", "layer2.0.relu1"});
///     model->forward(x, &obs);
///     auto counts = obs.result();
class CoverageObserver : public models::ForwardObserver {
 public:
  /// `threshold` is t; `points` are the activation points to watch (others are ignored).
  CoverageObserver(double threshold, const std::vector<std::string>& points);
  void on_activation(const std::string& point, const torch::Tensor& y) override;
  /// The counts so far, on the CPU, by point (points never seen are absent).
  std::map<std::string, PointCoverage> result() const;

 private:
  struct Acc {
    int64_t inputs = 0;
    torch::Tensor covered, scaled_sum;  // on the activations' device
  };
  double threshold_;
  std::map<std::string, Acc> acc_;
};

/// Runs `calibration` (float [N, C, H, W], already normalised, on the model's device) through `model` in batches
/// of `batch_size`, in eval and inference mode (the model's train/eval mode is restored afterwards), and returns
/// the coverage counts of every activation point in `points`. Throws expctl::Error when the calibration tensor is
/// empty or not 4-D, batch_size < 1, or a point is never reached.
///
///     auto cov = measure_coverage(model, images, 128, 0.1, model->activation_points());
///     torch::Tensor c = cov.at("layer2.1").coverage();   // fraction of inputs covering each channel
std::map<std::string, PointCoverage> measure_coverage(models::Network model, const torch::Tensor& calibration,
                                                      int64_t batch_size, double threshold,
                                                      const std::vector<std::string>& points);

/// One value per channel of a group.
struct GroupScore {
  torch::Tensor coverage;         ///< double [C]: aggregated coverage over the group's activation points
  torch::Tensor mean_activation;  ///< double [C]: scaled spatial mean, averaged over inputs and points (tie-break)
};

/// The group's scores from the per-point counts. Mean coverage is computed as (sum of counts) / (points × inputs)
/// and max/min as (max/min count) / inputs, so equal coverages are bit-for-bit equal doubles (ties are exact).
/// Throws expctl::Error when one of the group's points is missing or has a different channel count.
GroupScore score_group(const models::ChannelGroup& group, const std::map<std::string, PointCoverage>& coverage,
                       Aggregate aggregate);

/// The group's channel indices (int64 [C]) from most to least worth keeping: coverage descending, then mean
/// activation descending, then index ascending.
torch::Tensor rank_channels(const GroupScore& score);

/// The plan for `groups` given the measured coverage: each group's channels ranked by rank_channels() (coverage
/// is a fraction of inputs in every group, so global scope compares it across groups as it is), the budget spent
/// by selection::choose() (local or global scope, min_channels, round_to, exclude; see channel_selection.h), kept
/// indices sorted. Throws expctl::Error when a name in options.exclude is neither a layer nor a group.
PrunePlan make_plan(const std::vector<models::ChannelGroup>& groups,
                    const std::map<std::string, PointCoverage>& coverage, const Options& options,
                    const std::vector<std::string>& layer_names);

/// The Pruner: measure_coverage() on the request's calibration images, then make_plan(). Options come from
/// request.params when set, else from the constructor. The model is not modified.
///
///     NeuronCoveragePruner pruner;
///     PrunePlan plan = pruner.prune(request);
///     models::prune_groups(request.model, plan.keep);
class NeuronCoveragePruner : public Pruner {
 public:
  explicit NeuronCoveragePruner(Options options = Options{}) : options_(std::move(options)) {}
  PrunePlan prune(PruneRequest& request) override;

 private:
  Options options_;
};

/// The registry entry: name "neuron_coverage", code "NC", the parameter table above.
PrunerEntry entry();

}  // namespace expctl::neuron_coverage
