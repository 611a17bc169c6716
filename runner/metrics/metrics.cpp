// Accuracy, parameter counts, size, MACs and latency (see metrics.h for the definitions).
#include "runner/metrics/metrics.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <future>
#include <map>
#include <memory>
#include <numeric>

#include "runner/core/compat.h"
#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/io/torch_file.h"
#include "runner/models/mode_guard.h"

namespace expctl::metrics {
namespace {


// The device of the model's first parameter (CPU for a model without parameters).
torch::Device model_device(const torch::nn::Module& module) {
  for (const auto& p : module.parameters()) return p.device();
  return torch::kCPU;
}

// "cuda" (no index) accepts any CUDA device; an explicit index must match.
void require_on_device(const torch::nn::Module& module, const torch::Device& device, const std::string& what) {
  const torch::Device actual = model_device(module);
  const bool same = actual.type() == device.type() && (!device.has_index() || device.index() == actual.index());
  if (!same)
    throw Error(what + ": the model is on " + actual.str() + " but was asked to run on " + device.str() +
                "; move it first (model->to(device))");
}

std::vector<int64_t> to_vector(c10::IntArrayRef a) { return std::vector<int64_t>(a.begin(), a.end()); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t product(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{1}, std::multiplies<int64_t>());
}

// Records the input shape of every Conv2d/Linear, in forward order.
struct ShapeRecorder : models::ForwardObserver {
  std::vector<std::pair<std::string, std::vector<int64_t>>> inputs;
  void on_layer_input(const std::string& layer, const torch::Tensor& x) override {
    inputs.emplace_back(layer, to_vector(x.sizes()));
  }
};

// torch's output-size formula for one spatial dimension.
int64_t conv_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

LayerMacs conv_macs(const std::string& name, const torch::nn::Conv2dImpl& conv, const std::vector<int64_t>& in) {
  const auto& o = conv.options;
  const auto w = to_vector(conv.weight.sizes());  // [out, in / groups, kh, kw]
  int64_t pad[2] = {0, 0};
  if (const auto* explicit_pad = compat::variant_get_if<torch::ExpandingArray<2>>(o.padding())) {
    pad[0] = (**explicit_pad)[0];
    pad[1] = (**explicit_pad)[1];
  } else if (compat::variant_get_if<torch::enumtype::kSame>(o.padding())) {
    // "same" keeps H×W (torch allows it with stride 1 only): total padding dilation·(k−1), split over both sides.
    for (int d = 0; d < 2; ++d) pad[d] = -1;
  }
  std::vector<int64_t> out{in[0], w[0], 0, 0};
  for (int d = 0; d < 2; ++d) {
    out[2 + d] = pad[d] < 0 ? in[2 + d] : conv_out(in[2 + d], w[2 + d], (*o.stride())[d], pad[d], (*o.dilation())[d]);
    if (out[2 + d] < 1)
      throw Error("count_macs: layer " + name + ": input " + shape_text(in) +
                  " is too small for its kernel; use a larger image");
  }
  LayerMacs l;
  l.name = name;
  l.kind = "conv";
  l.input_shape = in;
  l.output_shape = out;
  l.weight_shape = w;
  l.weights = product(w);
  // Each output element is a dot product over (in_channels / groups) × kh × kw = w[1]·w[2]·w[3] inputs.
  l.macs = product(out) * w[1] * w[2] * w[3];
  return l;
}

LayerMacs linear_macs(const std::string& name, const torch::nn::LinearImpl& linear, const std::vector<int64_t>& in) {
  const auto w = to_vector(linear.weight.sizes());  // [out, in]
  LayerMacs l;
  l.name = name;
  l.kind = "linear";
  l.input_shape = in;
  l.output_shape = in;
  l.output_shape.back() = w[0];
  l.weight_shape = w;
  l.weights = product(w);
  l.macs = product(in) / w[1] * w[0] * w[1];  // rows × in × out
  return l;
}

}  // namespace

// ---- accuracy ------------------------------------------------------------------------------------

namespace {
// "evaluate(<split>)": how the evaluation's errors name themselves.
std::string evaluation_of(const data::Split& split) {
  return "evaluate(" + (split.source.empty() ? std::string("split") : split.source) + ")";
}
}  // namespace

EvalResult evaluate(models::Network model, const data::Split& split, int64_t batch_size, torch::Device device) {
  require_on_device(*model, device, evaluation_of(split));
  models::EvalModeGuard mode(*model);
  return evaluate_forward([&model](const torch::Tensor& images) { return model->forward(images); }, split, batch_size,
                          device);
}

EvalResult evaluate_forward(const Forward& forward, const data::Split& split, int64_t batch_size,
                            torch::Device device) {
  const std::string what = evaluation_of(split);
  if (split.size() == 0) throw Error(what + ": the split is empty; there is nothing to evaluate");
  if (batch_size < 1) throw Error(what + ": batch_size must be at least 1, got " + std::to_string(batch_size));

  torch::InferenceMode inference;
  // Sums stay on the device and are read once at the end: one synchronisation instead of two per batch.
  auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  auto correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
  const int64_t n = split.size();
  // A streamed split decodes the next batch on its worker threads while the model runs on this one. The
  // decoding threads take no InferenceMode with them: they only read files and write uint8 pixels.
  std::future<torch::Tensor> next;
  auto decode = [&split, n, batch_size](int64_t begin) { return split.pixels(begin, std::min(n, begin + batch_size)); };
  if (split.streamed()) next = std::async(std::launch::async, decode, int64_t(0));
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    torch::Tensor pixels = split.streamed() ? next.get() : split.pixels(begin, end);
    if (split.streamed() && end < n) next = std::async(std::launch::async, decode, end);
    // uint8 travels to the device (4× less than float), and is converted there.
    auto images = data::normalize(pixels.to(device), split.norm);
    auto labels = split.labels.slice(0, begin, end).to(device);
    auto logits = forward(images).to(torch::kFloat);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kDouble);
    correct += logits.argmax(1).eq(labels).sum();
  }
  EvalResult r;
  r.count = n;
  r.correct = correct.item<int64_t>();
  r.accuracy = 100.0 * double(r.correct) / double(n);
  r.loss = loss_sum.item<double>() / double(n);
  return r;
}

// ---- parameters and size -------------------------------------------------------------------------

ParamCount count_parameters(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  ParamCount c;
  for (const auto& p : model.parameters()) {
    c.total += p.numel();
    c.nonzero += p.count_nonzero().item<int64_t>();
  }
  return c;
}

ModelSize model_size(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const models::StateDict sd = models::state_dict(model);
  // Serialising is the definition: the same writer as checkpoints, so the figure is the file a user would get.
  auto dict = io::PickleValue::dict();
  for (const auto& item : sd) dict.set(item.key(), io::PickleValue::from(item.value().detach()));
  ModelSize s;
  s.dense_bytes = static_cast<int64_t>(io::serialize_torch_file(dict).size());

  s.compact_bytes = s.dense_bytes;
  for (const auto& p : model.named_parameters()) {
    const auto& t = p.value();
    if (t.dim() < 2 || !t.is_floating_point()) continue;
    const int64_t numel = t.numel();
    s.compact_bytes += -numel * int64_t(t.element_size()) + 4 * t.count_nonzero().item<int64_t>() + (numel + 7) / 8;
  }
  return s;
}

// ---- MACs ------------------------------------------------------------------------------------------

MacsReport count_macs(models::Network model, int64_t height, int64_t width) {
  if (height < 1 || width < 1)
    throw Error("count_macs: the image size must be positive, got " + std::to_string(height) + "x" +
                std::to_string(width));
  std::map<std::string, std::shared_ptr<torch::nn::Module>> by_name;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) by_name[item.key()] = item.value();

  const int64_t channels = model->in_channels();
  ShapeRecorder recorder;
  {
    models::EvalModeGuard mode(*model);
    torch::InferenceMode inference;
    auto x = torch::zeros({1, channels, height, width}, torch::TensorOptions().device(model_device(*model)));
    try {
      model->forward(x, &recorder);
    } catch (const c10::Error& e) {
      throw Error("count_macs: a " + std::to_string(height) + "x" + std::to_string(width) +
                  " image does not fit the network: " + e.what_without_backtrace());
    }
  }

  torch::NoGradGuard no_grad;
  MacsReport report;
  for (const auto& [name, in] : recorder.inputs) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw Error("count_macs: the model has no module named '" + name + "'");
    LayerMacs l;
    torch::Tensor weight;
    if (const auto* conv = it->second->as<torch::nn::Conv2dImpl>()) {
      l = conv_macs(name, *conv, in);
      weight = conv->weight;
    } else if (const auto* linear = it->second->as<torch::nn::LinearImpl>()) {
      l = linear_macs(name, *linear, in);
      weight = linear->weight;
    } else {
      throw Error("count_macs: layer '" + name + "' is neither Conv2d nor Linear");
    }
    l.nonzero_weights = weight.count_nonzero().item<int64_t>();
    // Every weight element takes part in the same number of products (macs / weights, an integer: output
    // positions for a conv, rows for a linear), so the non-zero share is exact, not an estimate.
    l.nonzero_macs = l.weights > 0 ? l.macs / l.weights * l.nonzero_weights : 0;
    report.macs += l.macs;
    report.nonzero_macs += l.nonzero_macs;
    report.layers.push_back(std::move(l));
  }
  return report;
}

// ---- latency ---------------------------------------------------------------------------------------

LatencyStats latency_stats(std::vector<double> times_ms, int64_t batch) {
  if (times_ms.empty()) throw Error("latency_stats: no times given");
  std::sort(times_ms.begin(), times_ms.end());
  const size_t n = times_ms.size();
  LatencyStats s;
  s.batch = batch;
  s.repeats = static_cast<int>(n);
  s.min_ms = times_ms.front();
  s.max_ms = times_ms.back();
  s.median_ms = n % 2 ? times_ms[n / 2] : 0.5 * (times_ms[n / 2 - 1] + times_ms[n / 2]);
  s.p95_ms = times_ms[static_cast<size_t>(std::ceil(0.95 * double(n))) - 1];
  s.mean_ms = std::accumulate(times_ms.begin(), times_ms.end(), 0.0) / double(n);
  double ss = 0;
  for (double t : times_ms) ss += (t - s.mean_ms) * (t - s.mean_ms);
  s.std_ms = n > 1 ? std::sqrt(ss / double(n - 1)) : 0.0;
  return s;
}

std::vector<LatencyStats> measure_interleaved(const std::vector<Forward>& forwards, int64_t in_channels,
                                              const LatencyOptions& options, torch::Device device, int rounds) {
  const std::string what = "measure_latency";
  if (options.batch < 1 || options.height < 1 || options.width < 1)
    throw Error(what + ": batch, height and width must be at least 1, got " + std::to_string(options.batch) + ", " +
                std::to_string(options.height) + ", " + std::to_string(options.width));
  if (options.repeats < 1) throw Error(what + ": repeats must be at least 1, got " + std::to_string(options.repeats));
  if (options.warmup < 0) throw Error(what + ": warmup must not be negative, got " + std::to_string(options.warmup));
  if (rounds < 1) throw Error(what + ": rounds must be at least 1, got " + std::to_string(rounds));
  rounds = std::min(rounds, options.repeats);

  // Denormal arithmetic is up to 100× slower on x86 and appears in trained weights' tails: flush it.
  at::globalContext().setFlushDenormal(true);
  torch::InferenceMode inference;
  // Drawn on the CPU with its own generator: the same input on every device, global RNG untouched.
  auto gen = at::detail::createCPUGenerator(options.seed);
  const auto input = torch::randn({options.batch, in_channels, options.height, options.width}, gen).to(device);
  const bool cuda = device.is_cuda();
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
  };

  compat::WarningCollector warnings;  // said once below, not once per forward
  compat::WarningCollector::Guard quiet(&warnings);
  for (const Forward& f : forwards) {
    for (int i = 0; i < options.warmup; ++i) f(input);
    sync();
  }
  std::vector<std::vector<double>> times(forwards.size());
  for (int r = 0; r < rounds; ++r) {
    const int share = options.repeats / rounds + (r < options.repeats % rounds ? 1 : 0);
    for (size_t k = 0; k < forwards.size(); ++k)
      for (int i = 0; i < share; ++i) {
        const auto start = std::chrono::steady_clock::now();
        auto out = forwards[k](input);
        sync();
        const auto stop = std::chrono::steady_clock::now();
        times[k].push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      }
  }
  // The same warning about other shapes is one warning: said once, with the number of shapes.
  std::vector<std::pair<std::string, int>> kinds;
  for (const auto& m : warnings.messages()) {
    std::string kind = m.substr(0, m.find('\n'));
    kind.erase(std::remove_if(kind.begin(), kind.end(), [](unsigned char c) { return std::isdigit(c); }), kind.end());
    auto it = std::find_if(kinds.begin(), kinds.end(), [&](const auto& k) { return k.first == kind; });
    if (it == kinds.end())
      kinds.emplace_back(kind, 1);
    else
      ++it->second;
  }
  for (const auto& [kind, count] : kinds)
    spdlog::warn("LibTorch warned while timing ({} variant{}, said once here, not once per forward): {}", count,
                 count == 1 ? "" : "s", kind);
  std::vector<LatencyStats> out;
  for (auto& t : times) out.push_back(latency_stats(std::move(t), options.batch));
  return out;
}

LatencyStats measure_latency(models::Network model, const LatencyOptions& options, torch::Device device) {
  require_on_device(*model, device, "measure_latency");
  models::EvalModeGuard mode(*model);
  const Forward forward = [&](const torch::Tensor& x) { return model->forward(x); };
  return measure_interleaved({forward}, model->in_channels(), options, device, 1).front();
}

}  // namespace expctl::metrics
