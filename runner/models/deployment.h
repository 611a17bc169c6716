// The model as it is deployed, not as it trains: its TorchScript form (torchscript_export.h) frozen, so that
// parameters become constants and every batch norm that follows a convolution is folded into it, then optimized for
// inference on this machine by LibTorch's own passes (oneDNN layouts and fused ops on the CPU).
//
//     const Deployable d = models::make_deployable(*net, 32, 32);   // checks the logits against net's
//     models::write_deployable(*net, 32, 32, "model.deployed.pt");  // Python: torch.jit.load(...)
//     torch::Tensor logits = d.optimized.forward({images}).toTensor();
//
// The file holds the frozen module: optimize_for_inference's oneDNN constants cannot be saved (PyTorch 1.13 writes
// a file it cannot load), so a reader applies that pass itself (`torch.jit.optimize_for_inference(m)` in Python).
#pragma once
#include <torch/script.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "runner/models/network.h"

namespace expctl::models {

/// The number type a deployable form computes in. bf16: the frozen module's weights (batch norms already folded in
/// fp32) rounded to bf16, its input cast to bf16 and its logits back to fp32 inside its graph, so that it takes and
/// gives fp32 tensors like the fp32 form.
enum class DeployPrecision { Fp32, Bf16 };

struct Deployable {
  DeployPrecision precision = DeployPrecision::Fp32;
  torch::jit::Module frozen;     ///< BN folded, parameters constant: what the file holds
  torch::jit::Module optimized;  ///< frozen + optimize_for_inference: what the latency of the deployed form times
  double max_difference = 0;     ///< largest |logit| difference of `optimized` against the eager fp32 model
  double logit_scale = 0;        ///< largest |logit| of the eager model on the check batch
  int64_t batch_norms_left = 0;  ///< aten::batch_norm nodes left in the frozen graph (0: all folded)
  /// Why `optimized` is the frozen module itself, or "": optimize_for_inference's oneDNN kernels refuse some
  /// shapes eager LibTorch computes (an adaptive pooling whose input size is not a multiple of its output size:
  /// VGG's 7x7 pool on a 32x32 image), or its logits differ from the model's beyond float rounding; then the frozen
  /// module is the deployed form.
  std::string not_optimized;
};

/// The deployable form of `net` for [N, in_channels, height, width] inputs on `device` (where `net` is): its
/// TorchScript module moved there, frozen and optimized (LibTorch's passes pick that device's kernels: oneDNN on
/// the CPU, cuDNN fusions on CUDA). Checks both forms' logits against the eager model's (run in eval mode, then left
/// in the mode it was in) on a fixed random batch of 4: a frozen fp32 form more than 1e-3 of the logits' scale away
/// throws expctl::Error naming both values; an optimized one falls back to the frozen form (not_optimized says
/// why). In bf16 the frozen form's logits differ by bf16's rounding, which max_difference records (the report
/// measures its accuracy): only non-finite logits throw, and the optimized form falls back when it moves the
/// logits further than twice the frozen bf16 form did (or 1e-3 of their scale, if more). A form LibTorch cannot
/// build or run (an op without a kernel for that precision) throws expctl::Error with LibTorch's reason in one line.
Deployable make_deployable(NetworkImpl& net, int64_t height, int64_t width, torch::Device device = torch::kCPU,
                           DeployPrecision precision = DeployPrecision::Fp32);

/// Rewrites the frozen module `frozen` (whose forward takes one fp32 image batch and returns fp32 logits) to
/// compute in bf16: every fp32 tensor constant of its graph (the weights, batch norms folded in fp32) is rounded to
/// bf16, the input is cast to bf16 at the start and the logits to fp32 at the end. Returns `frozen`.
torch::jit::Module& to_bf16(torch::jit::Module& frozen);

/// Writes make_deployable(net, height, width)'s frozen module to `path`, through a temporary file and a rename. `net`
/// must be on the CPU: the file then loads on any machine.
void write_deployable(NetworkImpl& net, int64_t height, int64_t width, const std::filesystem::path& path);

/// The number of aten::batch_norm nodes in `module`'s forward graph.
int64_t batch_norm_count(const torch::jit::Module& module);

}  // namespace expctl::models
