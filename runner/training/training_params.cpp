#include "runner/training/training_params.h"

namespace expctl {

OptionBinder<TrainingOptions> training_binder(int64_t default_epochs) {
  TrainingOptions defaults;
  defaults.epochs = default_epochs;
  OptionBinder<TrainingOptions> b(defaults);
  using T = TrainingOptions;
  b.add(&T::epochs, "epochs", "training epochs").min(1).max(100000);
  b.add(&T::batch_size, "batch_size", "training batch size (global, over all processes)").min(1).max(65536);
  b.add(&T::eval_batch_size, "eval_batch_size", "batch size for evaluation").min(1).max(65536);
  b.add(&T::lr, "optimizer.lr", "peak learning rate of SGD").above(0).max(10);
  b.add(&T::momentum, "optimizer.momentum", "SGD momentum").min(0).below(1);
  b.add(&T::nesterov, "optimizer.nesterov", "Nesterov momentum");
  b.add(&T::weight_decay, "optimizer.weight_decay", "L2 weight decay (not applied to BN and biases)").min(0).below(1);
  b.add(&T::label_smoothing, "label_smoothing", "label smoothing of the cross-entropy loss").min(0).below(1);
  b.add_choice(&T::schedule, "schedule", {"cosine", "onecycle", "constant"}, "learning-rate schedule after warm-up");
  b.add(&T::warmup_epochs, "warmup_epochs", "linear warm-up length in epochs").min(0).max(1000);
  b.add(&T::save_every, "save_every", "save a checkpoint every N epochs (and always at the last epoch); 0: last only")
      .min(0)
      .max(100000);
  b.add_choice(&T::precision, "precision", {"auto", "fp32", "bf16"},
               "training forward: auto = bf16 autocast on CUDA and on CPUs with native bf16 (AVX512_BF16, AMX-BF16, "
               "Arm BF16), fp32 elsewhere; weights, optimizer state, BN statistics, checkpoints and evaluation stay "
               "fp32");
  b.add(&T::channels_last, "channels_last",
        "train with weights and inputs in channels_last (NHWC): faster convolutions with oneDNN (CPU) and "
        "cuDNN (GPU)");
  b.add(&T::freeze_bn, "freeze_bn",
        "keep BatchNorm in eval mode while training (running statistics fixed, affine weights still learn); "
        "useful with small per-process batches");
  return b;
}

TrainingOptions training_options(const Params& block) {
  static const OptionBinder<TrainingOptions> b = training_binder(TrainingOptions{}.epochs);
  return b.read(block, "training");
}

}  // namespace expctl
