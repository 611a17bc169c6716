// Wanda pruner (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"): the score
// of weight W_ij is |W_ij| * ||X_j||_2, X_j being input feature j over every calibration token; the lowest scores
// of each output row are zeroed. Extended here to convolutions: the input features of a Conv2d are its
// (in_channel, kh, kw) patch elements, and the tokens are all samples and output positions.
//
// Its keys (sparsity, mode, n, m, score, exclude, the calibration defaults) are declared once, in the binder in
// wanda.cpp: `expctl describe wanda` lists them with their defaults, ranges and meaning.
//
//     prune: {pruner: wanda, sparsity: 0.5, mode: unstructured}
//     prune: {pruner: wanda, mode: "n:m", n: 2, m: 4, exclude: [first, last]}
//     prune: {pruner: wanda, mode: structured, sparsity: 0.3}
//
// Modes:
// - unstructured / n:m: layers are pruned one after another in forward order (model->layer_names()); each is
//   calibrated on the activations of the model whose earlier layers are already zeroed, and zeroed in place.
//   The plan holds a bool mask (true = keep) for every pruned weight.
// - structured: one channel score per channel of each channel group (sum of the Wanda scores of all consumer
//   weights reading the channel), all computed in one calibration pass on the unpruned model; the plan lists the
//   channels to keep (PrunePlan::keep), and the model is left untouched (the prune stage applies the plan).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugins/pruner.h"
#include "runner/core/params.h"
#include "runner/core/registry.h"

namespace expctl::wanda {

/// The shape of the sliding window of a Conv2d (dilation 1, groups 1, zero padding).
///
///     ConvGeometry g{3, 3, 2, 2, 1, 1};  // 3×3 kernel, stride 2, padding 1
struct ConvGeometry {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t groups = 1;  ///< a grouped conv's groups (a depthwise conv: one per channel)
};

/// Squared L2 norms of a Conv2d's input features over one batch: for every patch element (c, kh, kw), the sum over
/// samples n and output positions (oh, ow) of xpad[n, c, oh*stride_h + kh, ow*stride_w + kw]², xpad being `x`
/// [N, C, H, W] zero-padded by (pad_h, pad_w). Equals unfold(x)² summed over samples and positions, without
/// materialising the unfolded input. Returns float64 [C*KH*KW] in the order of weight.view({O, -1})'s columns.
/// Throws expctl::Error when `x` is not 4-D or the window does not fit.
///
///     torch::Tensor sq = conv_input_sq_norms(x, ConvGeometry{3, 3, 1, 1, 1, 1});  // [C*9]
torch::Tensor conv_input_sq_norms(const torch::Tensor& x, const ConvGeometry& geometry);

/// Squared L2 norms of a Linear layer's input features over one batch: x [..., F] → float64 [F], summed over
/// every leading (token) dimension.
///
///     torch::Tensor sq = linear_input_sq_norms(features);  // features [N, 512] → [512]
torch::Tensor linear_input_sq_norms(const torch::Tensor& x);

/// Wanda scores |W| * sqrt(sq_norms) in float64, of `weight`'s shape; `sq_norms` has one entry per column of
/// weight.view({O, -1}). Without `sq_norms` (undefined tensor): |W| (the magnitude baseline).
///
///     torch::Tensor s = wanda_scores(conv->weight, conv_input_sq_norms(x, g));
/// A grouped conv (`groups` > 1, weight [O, C/groups, KH, KW]) takes `sq_norms` of all C input channels: row o
/// reads the slice of its group, o / (O / groups).
torch::Tensor wanda_scores(const torch::Tensor& weight, const torch::Tensor& sq_norms = {}, int64_t groups = 1);

/// The most bytes of calibration activations the sequential (unstructured, n:m) pass keeps between segments
/// (default 1 GiB); above it every layer's norms come from a forward pass from the images (same result, slower).
/// Returns the previous limit. For tests and benchmarks.
int64_t set_calibration_cache_limit(int64_t bytes);

/// How many of `count` items a `fraction` removes: round half up, floor(fraction * count + 0.5), within [0, count].
int64_t count_to_remove(double fraction, int64_t count);

/// Unstructured mask of `scores` [O, ...] (true = keep): within each output row (the flattened trailing dims), the
/// count_to_remove(sparsity, row length) lowest scores are removed. Ties: among equal scores the one with the lower
/// flat index is removed first (a stable ascending sort).
///
///     torch::Tensor mask = row_mask(wanda_scores(w, sq), 0.5);  // bool, w's shape
torch::Tensor row_mask(const torch::Tensor& scores, double sparsity);

/// N:M mask of `scores` (true = keep): the input dimension (dim 1) is cut into groups of `m` consecutive
/// entries at every other fixed index (for a conv [O, C, KH, KW]: along in_channels at each (o, kh, kw), as
/// NVIDIA's ASP does); in each group the `n` lowest scores are removed (ties: lower index first). Requires
/// scores.size(1) % m == 0 and 0 <= n <= m; throws expctl::Error otherwise.
///
///     torch::Tensor mask = nm_mask(wanda_scores(w, sq), 2, 4);  // exactly 2 false in every group of 4
torch::Tensor nm_mask(const torch::Tensor& scores, int64_t n, int64_t m);

/// The pruner's settings, read from the prune block.
struct Options {
  enum class Mode { Unstructured, NM, Structured };
  double sparsity = 0.5;
  Mode mode = Mode::Unstructured;
  int64_t n = 2, m = 4;
  bool magnitude = false;  ///< score: magnitude
  std::vector<std::string> exclude{"first"};

  /// The options of a prune block: each key of the table is bound to its field (key, default and range are
  /// declared once); absent keys keep the defaults. Throws expctl::Error "wanda: <key>: ..." for a value out of
  /// range, an unknown name, or n >= m in n:m mode.
  static Options from_params(const Params& params);
  /// "unstructured", "n:m" or "structured".
  std::string mode_name() const;
};

/// The Wanda pruner. prune() zeroes weights in place in unstructured and n:m mode and returns their masks; in
/// structured mode it returns PrunePlan::keep and does not touch the model. Statistics (PrunePlan::stats):
/// "settings", "layers" (per layer: mode, weights, zeros or weights kept, sparsity; or "skipped" and why),
/// "groups" (structured: size, kept, or why skipped) and "overall" (over pruned layers and over every
/// conv/linear weight).
///
///     auto pruner = PrunerRegistry::find("wanda")->create();
///     PrunePlan plan = pruner->prune(request);  // request.params holds the prune block
class WandaPruner : public Pruner {
 public:
  PrunePlan prune(PruneRequest& request) override;
};

/// The registry entry: code "W", the parameter table above (with the n < m check in n:m mode), and a factory.
PrunerEntry entry();

}  // namespace expctl::wanda
