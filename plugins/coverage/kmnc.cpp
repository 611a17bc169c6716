// kmnc: k-multisection neuron coverage (DeepGauge, Ma et al. 2018) as a pruning score. Each neuron's range
// [low, high] on the profile images is cut into k equal sections; a channel's score is the share of its k sections
// the calibration images hit (deepgauge.h has the exact definition and the boundaries). The channels that hit the
// fewest sections are removed.
#include "plugins/coverage/deepgauge_pruner.h"
#include "runner/core/registry.h"

namespace expctl::coverage {

EXPCTL_REGISTER(
    PrunerRegistry,
    deepgauge_entry(Criterion::KMNC, "KMNC",
                    "structured: remove the channels that hit the fewest of their k sections of the profiled range on "
                    "calibration images (DeepGauge KMNC); score: the share of the k sections hit"));

}  // namespace expctl::coverage
