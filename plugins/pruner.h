// The pruner plugin interface. A pruner scores a fine-tuned model on calibration inputs and returns a plan:
// channels to keep per channel group (structured: the model really shrinks) and/or masks of weights to zero
// (unstructured, N:M). The prune stage applies the plan; the recover stage keeps masks fixed while training.
//
// A pruner lives in plugins/<name>/, declares its parameters once (they join the `prune` block of a scenario)
// and registers with one line at the end of its file:
//
//     EXPCTL_REGISTER(PrunerRegistry, entry());
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "runner/core/options_binder.h"
#include "runner/core/params.h"
#include "runner/core/registry.h"
#include "runner/models/channel_groups.h"
#include "runner/models/network.h"

namespace expctl {

/// What a pruner gets.
struct PruneRequest {
  models::Network model{nullptr};  ///< the fine-tuned model, in eval mode, on `device`; a pruner may zero weights in place
  std::vector<models::ChannelGroup> groups;  ///< channel_groups(model)
  torch::Tensor calibration;                 ///< normalised calibration images, float [N, C, H, W] on `device`
  int64_t batch_size = 128;                  ///< forward calibration in batches of this size
  const Params* params = nullptr;            ///< the prune block (the pruner's own keys included)
  torch::Device device = torch::kCPU;
  torch::Tensor calibration_labels;  ///< the calibration images' labels, int64 [N] on `device` (gradient-based scores)
  /// Profile images (DeepGauge's training-data profile: each neuron's range), normalised float [N, C, H, W] on
  /// `device`, never overlapping the calibration images; undefined when prune.profile.samples is 0.
  torch::Tensor profile;
};

/// A pruner's plan.
struct PrunePlan {
  /// Structured: for each group to shrink, the channel indices to KEEP (int64, sorted). Groups not listed keep
  /// all channels. Applied with models::prune_groups.
  std::map<std::string, torch::Tensor> keep;
  /// Unstructured / N:M: for each weight to sparsify (state-dict name), a bool mask of its shape, true = keep.
  std::map<std::string, torch::Tensor> masks;
  /// Statistics for the report; the prune stage saves them in prune_metrics.json ("stats") and the report stage
  /// draws its per-layer section from them. What the report reads (anything else is kept in the JSON only):
  /// - "groups" (structured plans): {group name: {"size": channels before, "kept": channels kept, and
  ///   optionally "mean_coverage" + "covered_fraction" (coverage columns and the coverage line of the chart) or
  ///   "min_score" / "mean_score" / "max_score" (score columns)}}, in group order; "pruner" names the scores.
  /// - else "layers" (mask plans): {weight layer name: {"weights", "zeros", "sparsity"} or {"skipped": why}},
  ///   in forward order; and "overall": {"pruned_layers" | "all_layers": {"weights", "zeros", "sparsity"}}.
  /// A plan with neither gets no per-layer section. selection::make_plan() fills "groups" for structured pruners.
  /// Structured pruners also list "unmeasured": groups their score cannot measure, kept whole (JSON only).
  nlohmann::ordered_json stats = nlohmann::ordered_json::object();
};

class Pruner {
 public:
  virtual ~Pruner() = default;
  virtual PrunePlan prune(PruneRequest& request) = 0;
};

/// What names one configuration of a pruner in tables, legends and sweep summaries.
struct MethodSettings {
  std::string label;    ///< "Wanda 2:4", "Magnitude", "Neuron Coverage (global)"
  double sparsity = 0;  ///< the fraction removed (n/m for N:M)
  /// The settings that tell configurations apart, as written in YAML: mode, score, scope.
  std::vector<std::pair<std::string, std::string>> settings;
};

struct PrunerEntry {
  static constexpr const char* kKind = "pruner";
  PluginInfo info;  ///< info.code is the short name in checkpoint names ("NC", "W")
  std::function<std::unique_ptr<Pruner>()> create;
  /// The configuration the prune block `params` sets (read through the pruner's own binder). Unset: the label is
  /// info.name and nothing else is known.
  std::function<MethodSettings(const Params& params)> method;
};
using PrunerRegistry = TypedRegistry<PrunerEntry>;

/// The prune stage's own keys (the selected pruner's join the same block), declared once in pruner.cpp.
struct PruneStageOptions {
  std::string pruner;                   ///< required: a registered pruner
  int64_t from_epoch = 0;               ///< 0: the last epoch of scenario.starts_from
  int64_t recalibrate_bn = 0;           ///< training batches for adaptive BN; 0: off
  bool calibrate_on_train = false;      ///< calibration.split: test | train
  int64_t calibration_samples = 128;    ///< each pruner sets its own default (set_calibration_defaults)
  int64_t calibration_batch_size = 64;  ///< idem
  bool profile_on_test = false;         ///< profile.split: train | test
  int64_t profile_samples = 0;          ///< profile.samples; 0: no profile (the pruners that need one set a default)
};
const OptionBinder<PruneStageOptions>& prune_stage_binder();
/// The prune stage's options of a validated prune block.
PruneStageOptions prune_stage_options(const Params& block);

/// The prune stage owns calibration.split (default test), calibration.samples and calibration.batch_size: it takes
/// the images, holds them out of the held-out accuracy and hands them to the pruner. A pruner gives its own
/// defaults for the count and the batch size here (PluginInfo::overrides); `use` says in `expctl describe` what it
/// does with the images.
void set_calibration_defaults(PluginInfo& info, int64_t samples, int64_t batch_size, const std::string& use);

/// The prune stage owns profile.split (default train) and profile.samples (default 0: none): images drawn apart from
/// the calibration images, handed to the pruner as PruneRequest::profile. A pruner that profiles its neurons gives
/// its own default count here; `use` says in `expctl describe` what it does with them.
void set_profile_default(PluginInfo& info, int64_t samples, const std::string& use);

struct ScenarioConfig;
/// What identifies a run's method in tables and legends: {"scenario_method", "pruner", "label", "sparsity", and the
/// pruner's own keys such as "mode" and "score"}. The report stage writes it into report.json ("method"); the
/// sweep summaries read it back from there.
nlohmann::ordered_json method_info(const ScenarioConfig& cfg);

}  // namespace expctl
