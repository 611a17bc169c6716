// snac: strong neuron activation coverage (DeepGauge, Ma et al. 2018) as a pruning score. A channel's score is
// the share of calibration images whose value exceeds its highest value on the profile images (deepgauge.h). The
// channels that exceed it least often are removed.
#include "plugins/coverage/deepgauge_pruner.h"
#include "runner/core/registry.h"

namespace expctl::coverage {

EXPCTL_REGISTER(
    PrunerRegistry,
    deepgauge_entry(Criterion::SNAC, "SNAC",
                    "structured: remove the channels whose values on calibration images exceed their profiled high "
                    "least often (DeepGauge SNAC); score: the share of images above high"));

}  // namespace expctl::coverage
