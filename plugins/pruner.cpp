// Parameters every pruner shares.
#include "plugins/pruner.h"

namespace expctl {

void set_calibration_defaults(PluginInfo& info, int64_t samples, int64_t batch_size, const std::string& use) {
  info.overrides.push_back({"calibration.samples", Value{samples, {}, true}, use});
  info.overrides.push_back({"calibration.batch_size", Value{batch_size, {}, true}, "batch size of its forward passes"});
}

}  // namespace expctl
