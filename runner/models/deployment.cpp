#include "runner/models/deployment.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <tuple>

#include "runner/core/compat.h"
#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/models/mode_guard.h"
#include "runner/models/torchscript_export.h"

namespace expctl::models {
namespace {

// The largest |a - b|, and the largest |b|.
std::pair<double, double> difference(const torch::Tensor& a, const torch::Tensor& b) {
  return {(a - b).abs().max().item<double>(), b.abs().max().item<double>()};
}

// The model's TorchScript module on `device`, frozen: a module (and compilation unit) of its own on every call.
torch::jit::Module frozen_module(NetworkImpl& net, torch::Device device) {
  torch::jit::Module scripted = to_torchscript(net, net.graph());
  scripted.to(device);
  scripted.eval();
  return torch::jit::freeze(scripted);
}

// The eager model's logits on one fixed batch of 4 (drawn with its own generator: the global RNG is left alone),
// and the check of a TorchScript form against them.
struct LogitCheck {
  LogitCheck(NetworkImpl& net, int64_t height, int64_t width, torch::Device device) : arch(net.arch_name()) {
    if (height < 1 || width < 1)
      throw Error("deployable model: height and width must be at least 1, got " + std::to_string(height) + "x" +
                  std::to_string(width));
    auto gen = at::detail::createCPUGenerator(20261207);
    x = torch::randn({4, net.in_channels(), height, width}, gen).to(device);
    torch::NoGradGuard no_grad;
    EvalModeGuard mode(net);
    eager = net.forward(x);
  }
  // {largest |logit difference|, largest |logit|} of `m`; throws expctl::Error naming `form` beyond 1e-3 of the
  // logits' scale.
  std::pair<double, double> operator()(torch::jit::Module& m, const char* form) const {
    torch::NoGradGuard no_grad;
    const auto [diff, scale] = difference(m.forward({x}).toTensor(), eager);
    if (!(diff <= 1e-3 * std::max(scale, 1.0)))
      throw Error("deployable model of " + arch + ": its logits differ from the model's by " + std::to_string(diff) +
                  " (logits up to " + std::to_string(scale) + ") " + form);
    return {diff, scale};
  }
  std::string arch;
  torch::Tensor x, eager;
};

}  // namespace

int64_t batch_norm_count(const torch::jit::Module& module) {
  int64_t n = 0;
  const auto graph = module.get_method("forward").graph();
  std::vector<const torch::jit::Block*> blocks{graph->block()};
  while (!blocks.empty()) {
    const torch::jit::Block* b = blocks.back();
    blocks.pop_back();
    for (const torch::jit::Node* node : b->nodes()) {
      if (node->kind() == c10::Symbol::fromQualString("aten::batch_norm")) ++n;
      for (const torch::jit::Block* inner : node->blocks()) blocks.push_back(inner);
    }
  }
  return n;
}

Deployable make_deployable(NetworkImpl& net, int64_t height, int64_t width, torch::Device device) {
  const LogitCheck check(net, height, width, device);
  Deployable d;
  d.frozen = frozen_module(net, device);
  d.batch_norms_left = batch_norm_count(d.frozen);
  // optimize_for_inference rewrites the module it is given, graph included (oneDNN constants and ops, which a saved
  // file cannot hold): it gets a module of its own, scripted apart, so that the frozen one stays as it is.
  torch::jit::Module to_optimize = frozen_module(net, device);
  d.optimized = torch::jit::optimize_for_inference(to_optimize);

  compat::WarningCollector warnings;  // oneDNN's per-forward warnings: the timing says them once
  compat::WarningCollector::Guard quiet(&warnings);
  std::tie(d.max_difference, d.logit_scale) = check(d.frozen, "after freezing");
  // optimize_for_inference may refuse a shape oneDNN does not support, or change the logits of a model beyond
  // float rounding (seen on a user's traced CNN): then the frozen module is the deployed form, and d says why.
  try {
    std::tie(d.max_difference, d.logit_scale) = check(d.optimized, "after optimize_for_inference");
  } catch (const Error& e) {
    d.not_optimized = e.what();
  } catch (const std::exception& e) {  // c10::Error, or the interpreter's JITException around it
    const auto* c10 = dynamic_cast<const c10::Error*>(&e);
    const std::string why = c10 ? c10->what_without_backtrace() : e.what();
    const auto line = why.find("RuntimeError: ");
    d.not_optimized = line == std::string::npos ? why.substr(0, why.find('\n'))
                                                : why.substr(line + 14, why.find('\n', line) - line - 14);
  }
  if (!d.not_optimized.empty()) d.optimized = d.frozen;
  return d;
}

void write_deployable(NetworkImpl& net, int64_t height, int64_t width, const std::filesystem::path& path) {
  // Only the frozen form goes into the file: it is checked, and no optimizing pass is run for it.
  const LogitCheck check(net, height, width, torch::kCPU);
  torch::jit::Module frozen = frozen_module(net, torch::kCPU);
  check(frozen, "after freezing");
  std::ostringstream bytes;
  frozen.save(bytes);
  write_file_atomic(path, bytes.str(), "deployed model");
}

}  // namespace expctl::models
