// Channel selection shared by the structured pruners; the rules are documented in channel_selection.h.
#include "plugins/channel_selection.h"

#include <algorithm>
#include <cmath>

#include "runner/core/error.h"

namespace expctl::selection {
namespace {

int64_t round_up(int64_t k, int64_t multiple) { return (k + multiple - 1) / multiple * multiple; }

}  // namespace

const OptionBinder<Options>& binder() {
  static const OptionBinder<Options> b = [] {
    OptionBinder<Options> b;
    bind_budget(b);
    return b;
  }();
  return b;
}

Options Options::from_params(const Params& params, const std::string& who) { return binder().read(params, who); }

int64_t local_keep_count(int64_t size, double sparsity, int64_t min_channels, int64_t round_to) {
  // The epsilon absorbs representation error ((1 - 0.3) * 10 = 7.000000000000001 must keep 7, not 8).
  auto keep = static_cast<int64_t>(std::ceil((1.0 - sparsity) * static_cast<double>(size) - 1e-9));
  keep = round_up(std::max<int64_t>(keep, 0), std::max<int64_t>(round_to, 1));
  keep = std::max(keep, min_channels);
  return std::max<int64_t>(1, std::min(keep, size));
}

std::vector<std::string> resolve_exclude(const std::vector<std::string>& exclude,
                                         const std::vector<std::string>& layer_names) {
  std::vector<std::string> out;
  for (const auto& name : exclude) {
    const bool first = name == "first", last = name == "last";
    const std::string resolved = (first || last) && !layer_names.empty()
                                     ? (first ? layer_names.front() : layer_names.back())
                                     : name;
    if (std::find(out.begin(), out.end(), resolved) == out.end()) out.push_back(resolved);
  }
  return out;
}

bool is_excluded(const models::ChannelGroup& group, const std::vector<std::string>& exclude) {
  auto listed = [&](const std::string& name) {
    return std::find(exclude.begin(), exclude.end(), name) != exclude.end();
  };
  // Excluding a layer protects its outputs (a classifier's classes, a conv's feature maps); the channels it
  // reads may still shrink, as with Torch-Pruning's ignored_layers. A group name protects the whole group.
  if (listed(group.name)) return true;
  for (const auto& l : group.producers)
    if (listed(l)) return true;
  return false;
}

void check_exclude(const std::vector<std::string>& exclude, const std::vector<models::ChannelGroup>& groups,
                   const std::vector<std::string>& layer_names, const std::string& who) {
  for (const auto& name : exclude) {
    bool known = std::find(layer_names.begin(), layer_names.end(), name) != layer_names.end();
    for (const auto& g : groups) known = known || g.name == name;
    if (known) continue;
    std::vector<std::string> group_names;
    for (const auto& g : groups) group_names.push_back(g.name);
    throw Error(who + ": exclude: no layer or channel group named '" + name + "' (layers: " + join(layer_names) +
                "; groups: " + join(group_names) + ")");
  }
}

torch::Tensor rank(const GroupScores& s) {
  const int64_t channels = s.score.size(0);
  const torch::Tensor score = s.score.to(torch::kDouble).contiguous();
  const torch::Tensor tie = s.tie.defined() ? s.tie.to(torch::kDouble).contiguous() : torch::zeros_like(score);
  const auto sc = score.accessor<double, 1>();
  const auto ti = tie.accessor<double, 1>();
  std::vector<int64_t> order(channels);
  for (int64_t c = 0; c < channels; ++c) order[c] = c;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (sc[a] != sc[b]) return sc[a] > sc[b];
    if (ti[a] != ti[b]) return ti[a] > ti[b];
    return a < b;
  });
  return torch::tensor(order, torch::kLong);
}

std::vector<Choice> choose(const std::vector<GroupScores>& scores, const Options& o, const std::string& who) {
  std::vector<Choice> choices;
  std::vector<torch::Tensor> score(scores.size()), tie(scores.size());
  int64_t prunable = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const GroupScores& s = scores[i];
    const models::ChannelGroup& g = *s.group;
    if (!s.score.defined()) {  // unmeasured: kept whole
      score[i] = tie[i] = torch::zeros({g.size}, torch::kDouble);
      Choice c{&g, true, true, g.size, torch::arange(g.size, torch::kLong)};
      choices.push_back(std::move(c));
      continue;
    }
    if (s.score.dim() != 1 || s.score.size(0) != g.size)
      throw Error(who + ": group '" + g.name + "' has " + std::to_string(g.size) + " channels but " +
                  (s.score.defined() ? std::to_string(s.score.numel()) : std::string("no")) + " scores");
    score[i] = s.score.to(torch::kCPU, torch::kDouble).contiguous();
    tie[i] = s.tie.defined() ? s.tie.to(torch::kCPU, torch::kDouble).contiguous() : torch::zeros_like(score[i]);
    Choice c{&g, is_excluded(g, o.exclude), false, g.size, rank({&g, score[i], tie[i]})};
    if (!c.excluded) prunable += g.size;
    choices.push_back(std::move(c));
  }

  if (!o.scope_global) {
    for (auto& c : choices)
      if (!c.excluded) c.keep = local_keep_count(c.group->size, o.sparsity, o.min_channels, o.round_to);
    return choices;
  }

  struct Candidate {
    double score, tie;
    size_t group;
    int64_t channel;
  };
  std::vector<Candidate> candidates;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (choices[i].excluded) continue;
    const auto sc = score[i].accessor<double, 1>();
    const auto ti = tie[i].accessor<double, 1>();
    for (int64_t c = 0; c < choices[i].group->size; ++c) candidates.push_back({sc[c], ti[c], i, c});
  }
  // Worst first. Restricted to one group this is exactly the reverse of rank(), so the channels a group loses here
  // are the last ones of its own ranking and keeping a prefix of that ranking is consistent.
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.tie != b.tie) return a.tie < b.tie;
    if (a.group != b.group) return a.group > b.group;
    return a.channel > b.channel;
  });
  const auto target = static_cast<int64_t>(std::floor(o.sparsity * static_cast<double>(prunable) + 1e-9));
  std::vector<int64_t> removed(choices.size(), 0);
  int64_t done = 0;
  for (const auto& cand : candidates) {
    if (done >= target) break;
    const int64_t size = choices[cand.group].group->size;
    if (size - removed[cand.group] > std::min(size, o.min_channels)) {
      ++removed[cand.group];
      ++done;
    }
  }
  // Rounding up (never down) keeps the removed total at or below the target: global sparsity is a budget.
  for (size_t i = 0; i < choices.size(); ++i) {
    Choice& c = choices[i];
    if (c.excluded) continue;
    const int64_t size = c.group->size;
    c.keep = std::max(std::min(size, round_up(size - removed[i], o.round_to)), std::min(size, o.min_channels));
  }
  return choices;
}

PrunePlan make_plan(const std::vector<Choice>& choices, const Options& o, const std::string& pruner) {
  PrunePlan plan;
  auto& st = plan.stats;
  st["pruner"] = pruner;
  st["scope"] = o.scope_global ? "global" : "local";
  st["sparsity"] = o.sparsity;
  st["min_channels"] = o.min_channels;
  st["round_to"] = o.round_to;
  st["exclude"] = o.exclude;
  auto& unmeasured = st["unmeasured"] = nlohmann::ordered_json::array();
  for (const auto& c : choices)
    if (c.unmeasured) unmeasured.push_back(c.group->name);
  int64_t total = 0, kept_total = 0, prunable = 0, kept_prunable = 0;
  auto& gs = st["groups"] = nlohmann::ordered_json::object();
  for (const auto& c : choices) {
    const models::ChannelGroup& g = *c.group;
    total += g.size;
    kept_total += c.keep;
    if (!c.excluded) {
      prunable += g.size;
      kept_prunable += c.keep;
    }
    if (c.keep < g.size) plan.keep[g.name] = std::get<0>(c.order.slice(0, 0, c.keep).sort());
    gs[g.name] = {{"size", g.size}, {"kept", c.keep}, {"excluded", c.excluded}};
  }
  st["channels_before"] = total;
  st["channels_after"] = kept_total;
  st["prunable_channels"] = prunable;
  st["removed_channels"] = prunable - kept_prunable;
  st["removed_fraction"] = prunable > 0 ? static_cast<double>(prunable - kept_prunable) / prunable : 0.0;
  return plan;
}

torch::Tensor normalize_by_mean(const torch::Tensor& score) {
  const double mean = score.to(torch::kDouble).mean().item<double>();
  if (!(std::isfinite(mean) && mean > 0)) return score;
  return score.to(torch::kDouble) / mean;
}

}  // namespace expctl::selection
