#include "runner/training/training_params.h"

namespace expctl {

void add_training_params(ParamTable& t, int64_t default_epochs) {
  t.add_int("epochs", default_epochs, "training epochs").min(1).max(100000);
  t.add_int("batch_size", 128, "training batch size (global, over all processes)").min(1).max(65536);
  t.add_int("eval_batch_size", 512, "batch size for evaluation").min(1).max(65536);
  t.add_float("optimizer.lr", 0.05, "peak learning rate of SGD").above(0).max(10);
  t.add_float("optimizer.momentum", 0.9, "SGD momentum").min(0).below(1);
  t.add_bool("optimizer.nesterov", true, "Nesterov momentum");
  t.add_float("optimizer.weight_decay", 5e-4, "L2 weight decay (not applied to BN and biases)").min(0).below(1);
  t.add_float("label_smoothing", 0.1, "label smoothing of the cross-entropy loss").min(0).below(1);
  t.add_enum("schedule", "cosine", {"cosine", "onecycle", "constant"}, "learning-rate schedule after warm-up");
  t.add_float("warmup_epochs", 1.0, "linear warm-up length in epochs").min(0).max(1000);
  t.add_int("save_every", 5, "save a checkpoint every N epochs (and always at the last epoch); 0: last only")
      .min(0)
      .max(100000);
  t.add_enum("precision", "auto", {"auto", "fp32", "bf16"},
             "training forward: auto = bf16 autocast on CUDA and on CPUs with native bf16 (AVX512_BF16, AMX-BF16, "
             "Arm BF16), fp32 elsewhere; weights, optimizer state, BN statistics, checkpoints and evaluation stay "
             "fp32");
  t.add_bool("channels_last", true,
             "train with weights and inputs in channels_last (NHWC): faster convolutions with oneDNN (CPU) and "
             "cuDNN (GPU)");
  t.add_bool("freeze_bn", false,
             "keep BatchNorm in eval mode while training (running statistics fixed, affine weights still learn); "
             "useful with small per-process batches");
}

}  // namespace expctl
