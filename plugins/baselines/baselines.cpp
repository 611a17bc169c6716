// The pruner shared by the structured baselines: score, normalise by the group mean, spend the budget with the
// shared channel selection. The scores themselves live in one file per pruner (see baselines.h).
#include "plugins/baselines/baselines.h"

#include <algorithm>

#include "runner/core/error.h"

namespace expctl::baselines {

PrunePlan BaselinePruner::prune(PruneRequest& request) {
  selection::Options rules =
      request.params ? selection::Options::from_params(*request.params, name_) : selection::Options{};
  const std::vector<models::ChannelGroup> groups =
      request.groups.empty() ? models::channel_groups(request.model) : request.groups;
  const std::vector<std::string> layers = request.model->layer_names();
  rules.exclude = selection::resolve_exclude(rules.exclude, layers);
  selection::check_exclude(rules.exclude, groups, layers, name_);
  const Scores scored = scorer_(request, groups);
  const std::vector<torch::Tensor>& raw = scored.score;
  if (raw.size() != groups.size() || (!scored.tie.empty() && scored.tie.size() != groups.size()))
    throw Error(name_ + ": scored " + std::to_string(raw.size()) + " of " + std::to_string(groups.size()) + " groups");
  std::vector<torch::Tensor> scores;
  std::vector<selection::GroupScores> ranked;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (!raw[i].defined()) {  // unmeasured (see Scorer): the selection keeps it whole
      scores.emplace_back();
      ranked.push_back({&groups[i], {}, {}});
      continue;
    }
    scores.push_back(raw[i].to(torch::kCPU, torch::kDouble));
    if (!torch::isfinite(scores.back()).all().item<bool>())
      throw Error(name_ + ": group '" + groups[i].name + "' has scores that are not finite");
    const torch::Tensor tie = scored.tie.empty() ? torch::Tensor() : scored.tie[i].to(torch::kCPU, torch::kDouble);
    ranked.push_back({&groups[i], selection::normalize_by_mean(scores.back()), tie});
  }
  PrunePlan plan = selection::make_plan(selection::choose(ranked, rules, name_), rules, name_);
  plan.stats["normalizer"] = "mean";
  if (!scored.criterion.empty()) plan.stats["criterion"] = scored.criterion;
  for (size_t i = 0; i < groups.size(); ++i) {
    const torch::Tensor& s = scores[i];
    if (!s.defined()) continue;  // unmeasured: no score columns ("-" in the report)
    auto& g = plan.stats["groups"][groups[i].name];
    g["mean_score"] = s.mean().item<double>();
    g["min_score"] = s.min().item<double>();
    g["max_score"] = s.max().item<double>();
  }
  return plan;
}

std::vector<torch::Tensor> scores_by_group(const std::vector<models::ChannelGroup>& groups,
                                           const std::map<std::string, torch::Tensor>& per_point,
                                           const std::string& who) {
  std::vector<torch::Tensor> out;
  for (const auto& g : groups) {
    torch::Tensor s;  // stays undefined (unmeasured: kept whole) when no activation carries the group
    for (size_t k = 0; k < g.activation_points.size(); ++k) {
      const std::string& p = g.activation_points[k];
      const int64_t offset = k < g.activation_offsets.size() ? g.activation_offsets[k] : 0;
      auto it = per_point.find(p);
      if (it == per_point.end()) throw Error(who + ": group '" + g.name + "': no values for activation '" + p + "'");
      const torch::Tensor& all = it->second;
      if (all.size(0) < offset + g.size)
        throw Error(who + ": group '" + g.name + "' has " + std::to_string(g.size) + " channels at offset " +
                    std::to_string(offset) + " but '" + p + "' has " + std::to_string(all.size(0)));
      const torch::Tensor v = all.slice(0, offset, offset + g.size);
      s = s.defined() ? s + v : v.clone();
    }
    out.push_back(s.defined() ? s / static_cast<double>(g.activation_points.size()) : s);
  }
  return out;
}

std::vector<std::string> activation_points(const std::vector<models::ChannelGroup>& groups) {
  std::vector<std::string> points;
  for (const auto& g : groups)
    for (const auto& p : g.activation_points)
      if (std::find(points.begin(), points.end(), p) == points.end()) points.push_back(p);
  return points;
}

bool is_batch_norm_scale(const models::StateDict& sd, const std::string& tensor) {
  static const std::string kWeight = ".weight";
  if (tensor.size() <= kWeight.size() || tensor.compare(tensor.size() - kWeight.size(), kWeight.size(), kWeight) != 0)
    return false;
  return sd.contains(tensor.substr(0, tensor.size() - kWeight.size()) + ".running_var");
}

PrunerEntry baseline_entry(const std::string& name, const std::string& code, const std::string& summary,
                           int64_t calibration_samples, const std::string& calibration_use, Scorer scorer,
                           std::function<std::string(const Params&)> label) {
  PrunerEntry e;
  e.info.kind = "pruner";
  e.info.name = name;
  e.info.code = code;
  e.info.summary = summary;
  e.info.details =
      "Channels are scored per channel group, each group's scores divided by their mean, and the budget spent by "
      "the rules every structured pruner shares (scope, min_channels, round_to, exclude). exclude: a listed layer "
      "keeps its outputs (the group it produces stays whole) while the channels it reads may still shrink, as with "
      "Torch-Pruning's ignored_layers; a listed group name keeps that group whole.";
  e.info.params = selection::binder().table();
  set_calibration_defaults(e.info, calibration_samples, 64, calibration_use);
  e.create = [name, scorer] { return std::make_unique<BaselinePruner>(name, scorer); };
  e.method = [name, label](const Params& p) {
    const selection::Options o = selection::Options::from_params(p, name);
    MethodSettings m;
    m.label = label(p) + (o.scope_global ? " (global)" : "");
    m.sparsity = o.sparsity;
    m.settings = {{"scope", o.scope_global ? "global" : "local"}};
    return m;
  };
  return e;
}

}  // namespace expctl::baselines
