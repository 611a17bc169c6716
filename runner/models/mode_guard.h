// Eval mode for a scope: pruners and metrics run a model in eval mode and must give it back as they found it,
// also when they throw.
#pragma once
#include <torch/nn/module.h>

namespace expctl::models {

/// Puts `module` in eval mode for the guard's lifetime and restores its previous train/eval mode, also on
/// exceptions.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& module) : module_(module), was_training_(module.is_training()) {
    module_.eval();
  }
  ~EvalModeGuard() { module_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

}  // namespace expctl::models
