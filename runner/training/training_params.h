// The training parameters shared by the finetune and recover stages (declared once, here).
#pragma once
#include <cstdint>

#include "runner/core/params.h"

namespace expctl {

/// Adds epochs, batch sizes, optimizer, schedule, label smoothing, checkpointing and precision parameters.
void add_training_params(ParamTable& t, int64_t default_epochs);

}  // namespace expctl
