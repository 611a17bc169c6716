// bn_scale: network slimming's |γ| of the BatchNorms of a channel group. See baselines.h.
#include "plugins/baselines/baselines.h"

#include <algorithm>

#include "runner/core/error.h"
#include "runner/core/registry.h"

namespace expctl::baselines {

torch::Tensor bn_scale(const models::StateDict& sd, const models::ChannelGroup& group) {
  torch::Tensor sum;
  int64_t norms = 0;
  for (const auto& m : group.members) {
    const std::string& n = m.tensor;
    if (!is_batch_norm_scale(sd, n)) continue;
    const torch::Tensor* gamma = sd.find(n);
    if (!gamma || gamma->dim() != 1 || gamma->size(0) < m.offset + group.size)
      throw Error("bn_scale: group '" + group.name + "': '" + n + "' is not a BatchNorm scale of " +
                  std::to_string(group.size) + " channels");
    // A BN after a concatenation holds this group's channels at an offset.
    const torch::Tensor a = gamma->detach().narrow(0, m.offset, group.size).to(torch::kCPU, torch::kDouble).abs();
    sum = sum.defined() ? sum + a : a;
    ++norms;
  }
  if (norms == 0) throw Error("bn_scale: group '" + group.name + "' has no BatchNorm to score it");
  return sum / static_cast<double>(norms);
}

namespace {

PrunerEntry entry() {
  return baseline_entry(
      "bn_scale", "BN",
      "structured: remove the channels with the smallest BatchNorm scale |gamma| (network slimming, Liu et al. 2017)",
      128, "not used: the score needs no data; the prune stage still holds them out",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        const models::StateDict sd = models::state_dict(*r.model);
        std::vector<torch::Tensor> out;
        for (const auto& g : groups) {
          // A group no BatchNorm normalises (VGG's hidden classifier features) is unmeasured: kept whole.
          const bool normalised = std::any_of(g.members.begin(), g.members.end(), [&](const models::GroupMember& m) {
            return is_batch_norm_scale(sd, m.tensor);
          });
          out.push_back(normalised ? bn_scale(sd, g) : torch::Tensor());
        }
        return out;
      },
      [](const Params&) { return std::string("BN scale"); });
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::baselines
