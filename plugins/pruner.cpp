// Parameters every pruner shares.
#include "plugins/pruner.h"

namespace expctl {

void add_calibration_params(ParamTable& t, int64_t samples, int64_t batch_size, const std::string& use) {
  t.add_enum("calibration.split", "test", {"test", "train"}, "split the calibration images come from");
  t.add_int("calibration.samples", samples, "number of calibration images (" + use + ")").min(1).max(1000000);
  t.add_int("calibration.batch_size", batch_size, "batch size for calibration forward passes").min(1).max(65536);
}

}  // namespace expctl
