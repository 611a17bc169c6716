// The training parameters shared by the finetune and recover stages, declared once: each key bound to a field of
// TrainingOptions (its default the field's initializer, except `epochs`, which each stage chooses).
#pragma once
#include <cstdint>
#include <string>

#include "runner/core/options_binder.h"

namespace expctl {

struct TrainingOptions {
  int64_t epochs = 30;
  int64_t batch_size = 128;  ///< global, over all processes
  int64_t eval_batch_size = 512;
  double lr = 0.05;  ///< optimizer.lr: the peak learning rate
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;  ///< on conv and linear weights only
  double label_smoothing = 0.1;
  std::string schedule = "cosine";  ///< cosine | onecycle | constant, after warm-up
  double warmup_epochs = 1.0;
  int64_t save_every = 5;          ///< 0: the last epoch only
  std::string precision = "auto";  ///< auto | fp32 | bf16
  bool channels_last = true;
  bool freeze_bn = false;
};

/// The binder of a training stage whose `epochs` default is `default_epochs`: its table() goes into the stage's
/// parameters, its read() gives the options.
OptionBinder<TrainingOptions> training_binder(int64_t default_epochs);

/// The training options of a validated stage block (every key present).
TrainingOptions training_options(const Params& block);

}  // namespace expctl
