// The standard structured baselines, beside Neuron Coverage and Wanda-sp: four ways to score the channels of every
// channel group (models::ChannelGroup: the tensors that lose the same channel indices), all spending the budget by
// the same rules (channel_selection.h: local/global scope, min_channels, round_to, exclude), so that a comparison
// between them, or with Neuron Coverage, differs only in the score.
//
// | pruner          | code | score of channel c of a group (higher = keep)                                       |
// |-----------------|------|-------------------------------------------------------------------------------------|
// | group_magnitude | GM   | Torch-Pruning's GroupMagnitudeImportance (GroupNormImportance) with its defaults:   |
// |                 |      | for every member layer, the sum of |w|^p over the weights that produce channel c   |
// |                 |      | (a conv's output filter c), read it (every consumer's input slice c) or scale it    |
// |                 |      | (BatchNorm |γ_c|^p); biases and running statistics are not counted; the mean over  |
// |                 |      | the contributing members (group_reduction "mean"). `norm: l2` (p = 2, the sum of   |
// |                 |      | squares, no root) or `norm: l1`.                                                     |
// | bn_scale        | BN   | network slimming (Liu et al. 2017): |γ_c| averaged over the group's BatchNorms      |
// | taylor          | TY   | first-order Taylor (Molchanov et al. 2017): at every activation point of the group  |
// |                 |      | (ReLU outputs), |mean over positions of a·∂L/∂a| per calibration image, averaged   |
// |                 |      | over images, then over the group's points; L = cross-entropy of that image          |
// | random          | R    | uniform in [0, 1) from a 64-bit Mersenne Twister seeded by `seed`: reproducible     |
//
// Every score is divided by its group's mean before the budget is spent (Torch-Pruning's "mean" normalizer): it
// changes nothing within a group (local scope) and makes groups of different widths and member counts comparable
// when channels compete network-wide (global scope).
//
// Their keys (the budget rules, group_magnitude's norm, random's seed, the calibration defaults each sets) are
// declared once, in each pruner's binder: `expctl describe group_magnitude` (or docs/config-reference.md) lists them
// with their defaults and ranges.
//
//     prune: {pruner: group_magnitude, norm: l2, sparsity: 0.5, exclude: []}
//     prune: {pruner: taylor, sparsity: 0.5, calibration: {split: train, samples: 512}}
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "plugins/channel_selection.h"
#include "plugins/pruner.h"
#include "runner/models/channel_groups.h"
#include "runner/models/network.h"

namespace expctl::baselines {

/// Group magnitude: double [C], the mean over the group's contributing members of the per-channel sum of |w|^p
/// (see the table above). Throws expctl::Error naming the group and tensor when a member is missing from `sd` or
/// has the wrong channel count, or when no member contributes.
torch::Tensor group_magnitude(const models::StateDict& sd, const models::ChannelGroup& group, int p);

/// BN scale: double [C], |γ| averaged over the BatchNorms of the group (a member "x.weight" with "x.running_var"
/// beside it). Throws expctl::Error naming the group when it has no BatchNorm.
torch::Tensor bn_scale(const models::StateDict& sd, const models::ChannelGroup& group);

/// First-order Taylor criterion per activation point: double [C] on the CPU for every point of `points`, the mean
/// over images of |mean over positions of a·∂L/∂a|, L the image's cross-entropy. Runs `images` (normalised float
/// [N, C, H, W]) with `labels` (int64 [N]) in batches of `batch_size`, in eval mode (BatchNorm uses its running
/// statistics, so an image's score does not depend on the rest of its batch); the parameters get no gradients and
/// the model's mode is restored. Throws expctl::Error when the inputs do not fit or a point is never reached.
std::map<std::string, torch::Tensor> taylor_scores(models::Network model, const torch::Tensor& images,
                                                   const torch::Tensor& labels, int64_t batch_size,
                                                   const std::vector<std::string>& points);

/// Random scores for `groups`: double [size] per group in order, uniform in [0, 1) from std::mt19937_64 seeded with
/// `seed` (53 random bits per value: the same numbers with every standard library).
std::vector<torch::Tensor> random_scores(const std::vector<models::ChannelGroup>& groups, uint64_t seed);

/// One value per channel of every group from values per channel of activation points (`per_point`: double [C] per
/// point, a point holding a group's channels at the group's offset there): the mean over the group's activation
/// points; undefined (unmeasured) for a group no activation point carries. Throws expctl::Error naming `who`, the
/// group and the point when a point is missing or too narrow.
std::vector<torch::Tensor> scores_by_group(const std::vector<models::ChannelGroup>& groups,
                                           const std::map<std::string, torch::Tensor>& per_point,
                                           const std::string& who);

/// The activation points of `groups`, each once, in order of first appearance.
std::vector<std::string> activation_points(const std::vector<models::ChannelGroup>& groups);

/// True when `tensor` is a BatchNorm scale γ: a "x.weight" with "x.running_var" beside it in `sd`.
bool is_batch_norm_scale(const models::StateDict& sd, const std::string& tensor);

/// A scorer's result: one double [C] per group, in order. An undefined tensor marks a group the score cannot
/// measure (no activation carries it, no BatchNorm normalises it): it is kept whole and listed in the plan's stats
/// as "unmeasured". `tie` (empty, or one per group) orders channels of equal score (higher = kept) before the shared
/// rule, the lower channel index first. `criterion` (optional) names what the scores are in the report
/// ("KMNC (k = 100)"); the report's score columns are headed by it.
struct Scores {
  std::vector<torch::Tensor> score, tie;
  std::string criterion;
  Scores(std::vector<torch::Tensor> s = {}) : score(std::move(s)) {}  // NOLINT: a plain list of scores converts
};

/// Scores every group of a request, given the request (see Scores).
using Scorer = std::function<Scores(PruneRequest& request, const std::vector<models::ChannelGroup>& groups)>;

/// A structured pruner: `scorer` scores the groups, every score is divided by its group's mean, and the shared
/// selection spends the budget. Groups excluded from pruning are scored too (their statistics are reported).
class BaselinePruner : public Pruner {
 public:
  BaselinePruner(std::string name, Scorer scorer) : name_(std::move(name)), scorer_(std::move(scorer)) {}
  PrunePlan prune(PruneRequest& request) override;

 private:
  std::string name_;
  Scorer scorer_;
};

/// The shared part of the four registry entries: info (name, code, summary), selection parameters, the
/// calibration keys with `calibration_samples` as default, and a label.
PrunerEntry baseline_entry(const std::string& name, const std::string& code, const std::string& summary,
                           int64_t calibration_samples, const std::string& calibration_use, Scorer scorer,
                           std::function<std::string(const Params&)> label);

}  // namespace expctl::baselines
