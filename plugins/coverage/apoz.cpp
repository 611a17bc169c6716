// apoz: Average Percentage of Zeros (Hu et al. 2016, "Network Trimming"), as Distiller's structure ranking uses it.
// A channel's APoZ at an activation point is the share of its elements that are exactly zero after the activation
// (a ReLU output), over every calibration image and position; a group's APoZ is the mean over its activation
// points. The channels with the highest APoZ are removed: the score is 1 − APoZ (higher = kept).
#include "plugins/baselines/baselines.h"
#include "plugins/coverage/activation_stats.h"
#include "runner/core/registry.h"

namespace expctl::coverage {
namespace {

PrunerEntry entry() {
  return baselines::baseline_entry(
      "apoz", "APOZ",
      "structured: remove the channels whose ReLU outputs are most often exactly zero on calibration images "
      "(APoZ, Hu et al. 2016); score 1 - APoZ, the share of non-zero elements over images and positions, averaged "
      "over the group's activation points",
      512, "their activations are measured",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        std::map<std::string, torch::Tensor> nonzero;
        for (const auto& [point, s] :
             measure_stats(r.model, r.calibration, r.batch_size, baselines::activation_points(groups), "apoz"))
          nonzero.emplace(point, 1.0 - s.zero_fraction());
        return baselines::scores_by_group(groups, nonzero, "apoz");
      },
      [](const Params&) { return std::string("APoZ"); });
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::coverage
