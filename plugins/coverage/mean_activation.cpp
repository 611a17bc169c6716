// mean_activation: the mean activation criterion (Distiller's "mean activation" channel ranking; Molchanov et al.
// 2017 compare it as a baseline). A channel's score at an activation point is the mean over calibration images of
// its spatial mean after the activation (a ReLU output); a group's score is the mean over its activation points.
// The channels with the lowest mean activation are removed.
#include "plugins/baselines/baselines.h"
#include "plugins/coverage/activation_stats.h"
#include "runner/core/registry.h"

namespace expctl::coverage {
namespace {

PrunerEntry entry() {
  return baselines::baseline_entry(
      "mean_activation", "MA",
      "structured: remove the channels whose ReLU outputs are smallest on average over calibration images and "
      "positions (mean activation), averaged over the group's activation points",
      512, "their activations are measured",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        std::map<std::string, torch::Tensor> means;
        for (const auto& [point, s] : measure_stats(r.model, r.calibration, r.batch_size,
                                                    baselines::activation_points(groups), "mean_activation"))
          means.emplace(point, s.mean());
        return baselines::scores_by_group(groups, means, "mean_activation");
      },
      [](const Params&) { return std::string("mean activation"); });
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::coverage
