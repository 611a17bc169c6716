// Channel selection shared by the structured pruners (Neuron Coverage, group magnitude, BN scale, Taylor, random):
// given one score per channel of every channel group (higher = keep), decide how many channels each group keeps
// and which, under one set of rules — local or global scope, `min_channels`, `round_to`, exclusions — so that
// pruners differ only in how they score channels, never in how the budget is spent.
//
// The rules' keys (sparsity, scope, min_channels, round_to, exclude) are declared once, by bind_budget() below;
// `expctl describe <pruner>` lists them with each structured pruner's defaults. Two of them in words: in global
// scope the channels of all prunable groups are ranked together and the lowest-scoring ones go; kept channel counts
// are rounded UP to a multiple of round_to (at most the group's size); exclude keeps the outputs of a listed layer
// (the group it produces stays whole, the channels it reads may shrink, as with Torch-Pruning's ignored_layers) or a
// listed group whole.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "plugins/pruner.h"
#include "runner/core/options_binder.h"
#include "runner/core/params.h"
#include "runner/models/channel_groups.h"

namespace expctl::selection {

/// The budget rules; plain data.
struct Options {
  double sparsity = 0.5;                            ///< in [0, 1)
  bool scope_global = false;                        ///< false: per group; true: ranked across prunable groups
  int64_t min_channels = 8;                         ///< >= 1
  int64_t round_to = 8;                             ///< >= 1
  std::vector<std::string> exclude{"first", "last"};  ///< layer or group names, or first / last (resolve_exclude)

  /// The rules of a prune block (sparsity, scope, min_channels, round_to, exclude); absent keys keep the defaults
  /// above. Throws expctl::Error "<who>: <key>: ..." for a value out of range.
  static Options from_params(const Params& params, const std::string& who);
};

/// Binds sparsity, scope, min_channels, round_to and exclude to the fields of `O` (selection::Options or an options
/// struct deriving from it): every structured pruner declares the budget keys through this one function, with the
/// defaults of the fields' initializers.
template <class O>
void bind_budget(OptionBinder<O>& b) {
  b.add(&O::sparsity, "sparsity", "fraction of channels removed (of each group's, or of all prunable ones)")
      .min(0)
      .below(1);
  b.template add_enum<bool>(&O::scope_global, "scope", {{"local", false}, {"global", true}},
                            "local: sparsity per group; global: channels ranked across the network");
  b.add(&O::min_channels, "min_channels", "never keep fewer channels in a group").min(1);
  b.add(&O::round_to, "round_to", "kept channel counts are rounded to a multiple of this").min(1).max(1024);
  b.add(&O::exclude, "exclude",
        "layers whose outputs are never pruned (their inputs may shrink); a group name keeps that group whole; "
        "first / last = the model's first and last conv/linear layer (ResNet: conv1, fc)");
}

/// The budget keys bound to selection::Options (bind_budget()): the table of the baselines' prune block.
const OptionBinder<Options>& binder();

/// One group's scores; both double [C] on the CPU. Higher `score` = keep; equal scores are ordered by `tie`
/// (higher = keep; undefined = no tie-break), then the lower channel index is kept.
struct GroupScores {
  const models::ChannelGroup* group = nullptr;
  torch::Tensor score;
  torch::Tensor tie;
};

/// What a group keeps.
struct Choice {
  const models::ChannelGroup* group = nullptr;
  bool excluded = false;
  bool unmeasured = false;  ///< its scores were undefined: kept whole (and counted as excluded)
  int64_t keep = 0;     ///< channels kept (= group size when excluded or untouched)
  torch::Tensor order;  ///< int64 [C]: channel indices, best first
};

/// The channels a group of `size` keeps in local scope: ceil((1 - sparsity) × size) rounded up to a multiple of
/// `round_to`, at least `min_channels`, at most `size`.
int64_t local_keep_count(int64_t size, double sparsity, int64_t min_channels, int64_t round_to);

/// `exclude` with the words "first" and "last" replaced by the model's first and last conv/linear layer
/// (`layer_names` in forward order): ResNet's conv1 and fc, VGG's features.0 and classifier.6, ... Other names are
/// kept as they are.
std::vector<std::string> resolve_exclude(const std::vector<std::string>& exclude,
                                         const std::vector<std::string>& layer_names);

/// True when `group` must be kept whole: its own name, or one of its producers, is in `exclude`.
bool is_excluded(const models::ChannelGroup& group, const std::vector<std::string>& exclude);

/// Throws expctl::Error "<who>: exclude: no layer or channel group named 'x' (layers: ...; groups: ...)" for a name
/// in `exclude` that is neither one of `layer_names` nor a group: a misspelt entry would silently prune a layer the
/// user meant to protect.
void check_exclude(const std::vector<std::string>& exclude, const std::vector<models::ChannelGroup>& groups,
                   const std::vector<std::string>& layer_names, const std::string& who);

/// The channel indices of one group from most to least worth keeping: score descending, tie descending, index
/// ascending.
torch::Tensor rank(const GroupScores& scores);

/// Decides every group's kept count. Local scope: each prunable group keeps local_keep_count() channels. Global
/// scope: all channels of prunable groups are ranked together (score, then tie ascending; remaining ties remove the
/// later group's, higher-index channel first) and the lowest are removed until floor(sparsity × prunable channels)
/// are gone, skipping a group once it is down to min_channels; then each group's kept count is rounded UP to a
/// multiple of round_to (at most its size), so the removed total may fall short of the target by less than round_to
/// per group. Scores must be comparable across groups in global scope (normalise them first). An undefined score
/// marks a group the pruner cannot measure (no activation carries it, no BatchNorm normalises it): it is kept whole,
/// like an excluded one, and make_plan() lists it under "unmeasured". Throws expctl::Error "<who>: group 'g': ..."
/// when a group's scores do not have its size.
std::vector<Choice> choose(const std::vector<GroupScores>& scores, const Options& options, const std::string& who);

/// The plan of `choices`: keep[group] = the first `keep` channels of its order, sorted, for every group that
/// shrinks; stats = {"pruner", "scope", "sparsity", "min_channels", "round_to", "exclude", "unmeasured",
/// "groups": {name: {"size",
/// "kept", "excluded"}}, "channels_before", "channels_after", "prunable_channels", "removed_channels",
/// "removed_fraction"}. Pruners add their own keys (per group too) afterwards.
PrunePlan make_plan(const std::vector<Choice>& choices, const Options& options, const std::string& pruner);

/// Divides `score` by its mean (Torch-Pruning's "mean" normalizer), so that groups whose raw scores have different
/// scales (wide and narrow layers, several members) compete fairly in global scope. A group whose mean is 0 or not
/// finite is returned unchanged.
torch::Tensor normalize_by_mean(const torch::Tensor& score);

}  // namespace expctl::selection
