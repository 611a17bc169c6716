// tknc: top-k neuron coverage (DeepGauge, Ma et al. 2018) as a pruning score. For each calibration image, the k
// channels of an activation point with the highest values are its top k (equal values: the lower index first); a
// channel's score is the share of images that put it in the top k (deepgauge.h). It needs no profile. The
// channels least often in the top k are removed.
#include "plugins/coverage/deepgauge_pruner.h"
#include "runner/core/registry.h"

namespace expctl::coverage {

EXPCTL_REGISTER(
    PrunerRegistry,
    deepgauge_entry(
        Criterion::TKNC, "TKNC",
        "structured: remove the channels least often among the k most active of their activation point "
        "on calibration images (DeepGauge TKNC); score: the share of images that rank the channel in the top k"));

}  // namespace expctl::coverage
