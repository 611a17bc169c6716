// The numbers every scenario is judged by, with one definition each (DESIGN.md "Metrics"): accuracy and loss
// on a split, parameter counts, size of the saved weights, MACs/FLOPs from shapes, and inference latency.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runner/data/split.h"
#include "runner/metrics/environment.h"  // configure_threads, environment_info: one include for every metric
#include "runner/models/network.h"

namespace expctl::metrics {

// ---- accuracy ------------------------------------------------------------------------------------

/// Top-1 accuracy and mean cross-entropy over a whole split.
struct EvalResult {
  double accuracy = 0.0;  ///< top-1, in percent (0..100)
  double loss = 0.0;      ///< mean cross-entropy per sample (natural log)
  int64_t count = 0;      ///< samples evaluated (= split.size())
  int64_t correct = 0;    ///< samples whose arg-max logit is their label
};

/// Evaluates `model` on every sample of `split`: eval mode and inference mode, batches of `batch_size` in the
/// split's order, images moved to `device` and normalised with data::normalize(images, split.norm). The model
/// must already be on `device`; its train/eval mode is restored afterwards (also when this throws). Ties in the
/// logits go to the lowest class index (torch's argmax). Throws expctl::Error for an empty split, a batch size
/// below 1, or a model on another device.
///
///     EvalResult r = evaluate(model, test_split, 256, torch::kCPU);  // r.accuracy == 93.1, r.loss == 0.24
EvalResult evaluate(models::Network model, const data::Split& split, int64_t batch_size, torch::Device device);

/// One form of a model to evaluate or time: a call of its forward on a batch (the eager network's, or a TorchScript
/// module's, such as models::make_deployable()'s).
using Forward = std::function<torch::Tensor(const torch::Tensor&)>;

/// evaluate() of any form of a model: `forward` gets the normalised images of each batch on `device` and returns
/// their logits (in any floating type: they are converted to fp32 before the loss and the arg-max). The caller
/// puts the model in its evaluation mode.
EvalResult evaluate_forward(const Forward& forward, const data::Split& split, int64_t batch_size, torch::Device device);

// ---- parameters and size -------------------------------------------------------------------------

/// Parameter counts (parameters only, not BN running statistics).
struct ParamCount {
  int64_t total = 0;    ///< elements of every parameter
  int64_t nonzero = 0;  ///< elements that are not exactly 0
};

/// Counts the elements of every parameter of `model` and how many are not exactly zero.
///
///     ParamCount p = count_parameters(*model);  // ResNet-18, 1000 classes: p.total == 11'689'512
ParamCount count_parameters(const torch::nn::Module& model);

/// Bytes in one MiB; sizes in MB are bytes / 2^20 (torchvision's "44.7 MB" for ResNet-18).
constexpr double kBytesPerMB = 1024.0 * 1024.0;

/// The size of a model's weights.
///
/// dense_bytes: the exact length of the file expctl writes for the weights alone, i.e. of
/// io::serialize_torch_file() of a dict {state-dict name: tensor} holding every parameter and buffer
/// (torch.save's zip format: data.pkl, one 64-byte-aligned record per tensor, zip headers). ResNet-18 with 1000
/// classes: 46,840,268 bytes = 44.67 MB; Python's torch.save of torchvision's resnet18().state_dict() is
/// 46,834,317 bytes, and torchvision's resnet18-f37072fd.pth (no `num_batches_tracked`) 46,830,571 bytes.
///
/// compact_bytes: the same file with every weight stored sparsely: for each floating-point parameter with two or
/// more dimensions (conv and linear weights: the tensors unstructured pruners mask), its dense payload
/// numel × element_size is replaced by nonzero × 4 (the non-zero values as fp32) + ceil(numel / 8) (a 1-bit
/// mask per element); every other tensor and the container overhead stay as they are:
///
///     compact_bytes = dense_bytes − Σ_w numel(w)·element_size(w) + Σ_w (4·nonzero(w) + ⌈numel(w)/8⌉)
///
/// For a dense model compact_bytes is larger than dense_bytes (by the masks); it is meant for masked models.
struct ModelSize {
  int64_t dense_bytes = 0;
  int64_t compact_bytes = 0;
  double dense_mb() const { return double(dense_bytes) / kBytesPerMB; }      ///< dense_bytes / 2^20
  double compact_mb() const { return double(compact_bytes) / kBytesPerMB; }  ///< compact_bytes / 2^20
};

/// Measures `model`'s size as ModelSize defines it (serialises the state dict in memory; nothing is written).
///
///     ModelSize s = model_size(*model);  // s.dense_mb() == 44.67 for a 1000-class ResNet-18
ModelSize model_size(const torch::nn::Module& model);

// ---- MACs ------------------------------------------------------------------------------------------

/// One Conv2d / Linear layer's share of a forward pass of one image.
struct LayerMacs {
  std::string name;                   ///< torchvision module path, e.g. "layer2.0.downsample.0"
  std::string kind;                   ///< "conv" or "linear"
  std::vector<int64_t> input_shape;   ///< e.g. {1, 64, 56, 56}
  std::vector<int64_t> output_shape;  ///< computed from the input shape, kernel, stride, padding, dilation
  std::vector<int64_t> weight_shape;  ///< e.g. {128, 64, 3, 3}
  int64_t weights = 0;                ///< weight elements (bias excluded)
  int64_t nonzero_weights = 0;        ///< weight elements that are not exactly 0
  int64_t macs = 0;          ///< output elements × (in_channels / groups × kh × kw); linear: rows × in × out
  int64_t nonzero_macs = 0;  ///< macs / weights × nonzero_weights (each weight is used equally often)
};

/// Multiply-accumulates of a forward pass of one image: conv + linear only (no bias adds, BN, ReLU, pooling
/// or residual adds), analytic from shapes. FLOPs = 2 × MACs.
struct MacsReport {
  std::vector<LayerMacs> layers;  ///< in forward order
  int64_t macs = 0;               ///< Σ layers' macs
  int64_t nonzero_macs = 0;       ///< Σ layers' nonzero_macs: what a sparse kernel skipping zero weights would do
  int64_t flops() const { return 2 * macs; }
  int64_t nonzero_flops() const { return 2 * nonzero_macs; }
};

/// Counts MACs of `model` for one `height`×`width` image: one forward of a zero batch of 1 (eval mode, inference
/// mode, on the model's device; the train/eval mode is restored) in which a ForwardObserver records each layer's
/// input shape; the layer's weight shape, stride, padding, dilation and groups come from the module of that name.
/// Throws expctl::Error when the image is too small for the network or a layer is of an unknown type.
///
///     MacsReport m = count_macs(model, 224, 224);  // torchvision ResNet-18: m.macs == 1'814'073'344
MacsReport count_macs(models::Network model, int64_t height, int64_t width);

// ---- latency ---------------------------------------------------------------------------------------

/// What measure_latency() runs.
struct LatencyOptions {
  int64_t batch = 1;    ///< images per forward
  int64_t height = 32;  ///< input H
  int64_t width = 32;   ///< input W
  int warmup = 10;      ///< untimed forwards first (allocator, oneDNN primitive caches, CPU frequency)
  int repeats = 50;     ///< timed forwards
  uint64_t seed = 0;    ///< seeds the fixed random input (standard normal)
};

/// Wall-clock times of single forwards, in milliseconds.
struct LatencyStats {
  int64_t batch = 0;
  int repeats = 0;
  double median_ms = 0, mean_ms = 0;
  double p95_ms = 0;  ///< nearest rank: the ⌈0.95·repeats⌉-th smallest time
  double min_ms = 0, max_ms = 0;
  double std_ms = 0;  ///< sample standard deviation (n − 1); 0 for one repeat
  /// median_ms / batch.
  double per_image_median_ms() const { return batch > 0 ? median_ms / double(batch) : 0.0; }
};

/// Times several forwards on one fixed random input [batch, in_channels, height, width] on `device`, interleaved so
/// that their ratio is fair on a noisy host: each first runs options.warmup untimed passes, then `rounds` rounds
/// follow in which every forward in turn runs its share of options.repeats timed passes (a slow minute of the host
/// falls on all of them alike). One LatencyStats per forward, in order; inference mode, denormals flushed, CUDA
/// synchronised after each pass. The forwards must expect inputs on `device`.
std::vector<LatencyStats> measure_interleaved(const std::vector<Forward>& forwards, int64_t in_channels,
                                              const LatencyOptions& options, torch::Device device, int rounds);

/// Times `model` on one fixed random input [batch, in_channels, height, width] on `device` (the model must be
/// there): eval mode and inference mode, denormals flushed (at::globalContext().setFlushDenormal(true), left on
/// for the process), `warmup` untimed forwards, then `repeats` forwards each timed with std::chrono::steady_clock;
/// on CUDA the device is synchronised before each clock reading. The train/eval mode is restored afterwards.
/// Set the thread count first (configure_threads() in runner/metrics/environment.h). Throws expctl::Error for
/// batch/height/width/repeats < 1, warmup < 0, or a model on another device.
///
///     LatencyOptions o;
///     o.batch = 1, o.height = o.width = 32, o.repeats = 100;
///     LatencyStats t = measure_latency(model, o, torch::kCPU);  // t.median_ms, t.p95_ms, ...
LatencyStats measure_latency(models::Network model, const LatencyOptions& options, torch::Device device);

/// The statistics of `times_ms` (not empty) as LatencyStats defines them; `batch` is copied through.
LatencyStats latency_stats(std::vector<double> times_ms, int64_t batch);

}  // namespace expctl::metrics
