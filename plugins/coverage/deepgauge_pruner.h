// The shared part of the DeepGauge pruners (kmnc, nbc, snac, tknc; one file each): score every channel group by the
// criterion's frequency (deepgauge.h) measured on the calibration images against the profile images' ranges, and
// spend the budget like every structured pruner (baselines::BaselinePruner: group-mean normaliser, scope,
// min_channels, round_to, exclude, unmeasured groups kept whole). Channels of equal score are ordered by their mean
// value on the calibration images (the higher is kept), then by the lower index.
#pragma once
#include <string>

#include "plugins/coverage/deepgauge.h"
#include "plugins/pruner.h"

namespace expctl::coverage {

/// The registry entry of a DeepGauge pruner, with its own keys: `k` (KMNC: sections, default 100; TKNC: the top k,
/// default 10) and `neurons` (channel | position). KMNC, NBC and SNAC profile: their default profile.samples is
/// kProfileSamples, and a block that sets it to 0 is refused when it is validated. TKNC needs no profile.
PrunerEntry deepgauge_entry(Criterion criterion, const std::string& code, const std::string& summary);

/// The default count of profile images of the profiling pruners.
inline constexpr int64_t kProfileSamples = 1024;

}  // namespace expctl::coverage
