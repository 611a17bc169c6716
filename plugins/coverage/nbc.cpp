// nbc: neuron boundary coverage (DeepGauge, Ma et al. 2018) as a pruning score. A channel's score is the share of
// calibration images whose value lies outside its range [low, high] on the profile images, on either side
// (deepgauge.h). The channels that leave their range least often are removed.
#include "plugins/coverage/deepgauge_pruner.h"
#include "runner/core/registry.h"

namespace expctl::coverage {

EXPCTL_REGISTER(
    PrunerRegistry,
    deepgauge_entry(Criterion::NBC, "NBC",
                    "structured: remove the channels whose values on calibration images leave their profiled range "
                    "[low, high] least often (DeepGauge NBC); score: the share of images below low or above high"));

}  // namespace expctl::coverage
