// group_magnitude: Torch-Pruning's group L1/L2 magnitude over a channel group. See baselines.h.
#include "plugins/baselines/baselines.h"
#include "runner/core/error.h"
#include "runner/core/options_binder.h"
#include "runner/core/registry.h"

namespace expctl::baselines {
torch::Tensor group_magnitude(const models::StateDict& sd, const models::ChannelGroup& group, int p) {
  const std::string what = "group_magnitude: group '" + group.name + "'";
  torch::Tensor sum;
  int64_t contributing = 0;
  for (const auto& m : group.members) {
    const torch::Tensor* t = sd.find(m.tensor);
    if (!t) throw Error(what + ": the model has no tensor '" + m.tensor + "'");
    // Conv/linear weights (the only members of 2 or more dimensions) and BN scales count; biases and running
    // statistics do not.
    if (t->dim() < 2 && !is_batch_norm_scale(sd, m.tensor)) continue;
    // |w|^p summed over everything the channel owns: a filter (dim 0), an input slice (dim 1; all H×W features
    // of a flattened channel), or γ_c.
    torch::Tensor w;
    try {
      w = models::member_rows(t->detach(), m, group.size).to(torch::kCPU, torch::kDouble);
    } catch (const Error& e) {
      throw Error(what + ": " + e.what());
    }
    const torch::Tensor local = (p == 1 ? w.abs() : w.square()).sum(1);
    sum = sum.defined() ? sum + local : local;
    ++contributing;
  }
  if (contributing == 0) throw Error(what + " has no weight to score");
  return sum / static_cast<double>(contributing);
}

namespace {

struct Options {
  int64_t p = 2;  ///< the norm's power: 2 (L2, Torch-Pruning's default) or 1
};

const OptionBinder<Options>& binder() {
  static const OptionBinder<Options> b = [] {
    OptionBinder<Options> b;
    b.add_enum(&Options::p, "norm", {{"l1", int64_t{1}}, {"l2", int64_t{2}}},
               "l2: sum of squared weights per channel (p = 2); l1: of |w|");
    return b;
  }();
  return b;
}

Options options_of(const Params* params) { return params ? binder().read(*params, "group_magnitude") : Options{}; }

PrunerEntry entry() {
  PrunerEntry e = baseline_entry(
      "group_magnitude", "GM",
      "structured: remove the channels whose weights, over every layer of their group, have the smallest L1/L2 "
      "magnitude (Torch-Pruning's group magnitude)",
      128, "not used: the score needs no data; the prune stage still holds them out",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        const int p = int(options_of(r.params).p);
        const models::StateDict sd = models::state_dict(*r.model);
        std::vector<torch::Tensor> out;
        for (const auto& g : groups) out.push_back(group_magnitude(sd, g, p));
        return out;
      },
      [](const Params& p) { return std::string("Group L") + std::to_string(options_of(&p).p); });
  e.info.params.append(binder().table());
  return e;
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::baselines
