#include "runner/models/deployment.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
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
  // {largest |logit difference|, largest |logit|} of `m`; throws expctl::Error naming `form` when the difference is
  // not within `bound` (by default 1e-3 of the logits' scale; non-finite logits are never within it).
  std::pair<double, double> operator()(torch::jit::Module& m, const char* form, double bound = -1) const {
    torch::NoGradGuard no_grad;
    const auto [diff, scale] = difference(m.forward({x}).toTensor(), eager);
    if (bound < 0) bound = 1e-3 * std::max(scale, 1.0);
    if (!(diff <= bound))
      throw Error("deployable model of " + arch + ": its logits differ from the model's by " + std::to_string(diff) +
                  " (logits up to " + std::to_string(scale) + ") " + form);
    return {diff, scale};
  }
  std::string arch;
  torch::Tensor x, eager;
};

// What went wrong, in one line: an expctl::Error's message, a c10::Error's without its backtrace, or the
// "RuntimeError: ..." line of the interpreter's exception around a c10::Error.
std::string exception_text(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  const std::string why = c10 ? c10->what_without_backtrace() : e.what();
  const auto line = why.find("RuntimeError: ");
  return line == std::string::npos ? why.substr(0, why.find('\n'))
                                   : why.substr(line + 14, why.find('\n', line) - line - 14);
}

// Calls f on every node of `graph`, those in the blocks of an if or a loop too.
template <class F>
void for_each_node(torch::jit::Graph& graph, F f) {
  std::vector<torch::jit::Block*> blocks{graph.block()};
  while (!blocks.empty()) {
    torch::jit::Block* b = blocks.back();
    blocks.pop_back();
    for (torch::jit::Node* node : b->nodes()) {
      f(node);
      for (torch::jit::Block* inner : node->blocks()) blocks.push_back(inner);
    }
  }
}

}  // namespace

int64_t batch_norm_count(const torch::jit::Module& module) {
  int64_t n = 0;
  for_each_node(*module.get_method("forward").graph(), [&n](const torch::jit::Node* node) {
    n += node->kind() == c10::Symbol::fromQualString("aten::batch_norm");
  });
  return n;
}

torch::jit::Module& to_bf16(torch::jit::Module& frozen) {
  const std::shared_ptr<torch::jit::Graph> graph = frozen.get_method("forward").graph();
  if (graph->inputs().size() != 2 || graph->outputs().size() != 1)
    throw Error("to_bf16: the frozen forward must take one input batch and return one tensor");
  std::vector<torch::jit::Node*> constants;
  for_each_node(*graph, [&](torch::jit::Node* node) {
    if (node->kind() == c10::prim::Constant && node->output()->type()->kind() == c10::TypeKind::TensorType)
      constants.push_back(node);
  });
  for (torch::jit::Node* node : constants) {
    const at::Tensor t = torch::jit::toIValue(node->output())->toTensor();
    if (t.scalar_type() != torch::kFloat) continue;
    torch::jit::WithInsertPoint here(node);
    node->output()->replaceAllUsesWith(graph->insertConstant(t.to(torch::kBFloat16)));
    node->destroy();
  }
  torch::jit::Value* images = graph->inputs()[1];
  {
    torch::jit::WithInsertPoint first(*graph->nodes().begin());
    torch::jit::Value* cast = graph->insert(c10::aten::to, {images, c10::kBFloat16});
    images->replaceAllUsesWith(cast);
    cast->node()->replaceInput(0, images);
  }
  torch::jit::WithInsertPoint last(graph->return_node());
  graph->return_node()->replaceInput(0, graph->insert(c10::aten::to, {graph->outputs()[0], c10::kFloat}));
  return frozen;
}

Deployable make_deployable(NetworkImpl& net, int64_t height, int64_t width, torch::Device device,
                           DeployPrecision precision) {
  const LogitCheck check(net, height, width, device);
  const bool bf16 = precision == DeployPrecision::Bf16;
  auto deployable_module = [&] {
    torch::jit::Module m = frozen_module(net, device);
    return bf16 ? to_bf16(m) : m;
  };
  Deployable d;
  d.precision = precision;
  compat::WarningCollector warnings;  // oneDNN's per-forward warnings: the timing says them once
  compat::WarningCollector::Guard quiet(&warnings);
  try {
    d.frozen = deployable_module();
    d.batch_norms_left = batch_norm_count(d.frozen);
    // optimize_for_inference rewrites the module it is given, graph included (oneDNN constants and ops, which a
    // saved file cannot hold): it gets a module of its own, scripted apart, so that the frozen one stays as it is.
    torch::jit::Module to_optimize = deployable_module();
    d.optimized = torch::jit::optimize_for_inference(to_optimize);
    // bf16 rounds the logits: the frozen form's difference is recorded, not bounded (its accuracy is measured).
    std::tie(d.max_difference, d.logit_scale) =
        check(d.frozen, "after freezing", bf16 ? std::numeric_limits<double>::max() : -1.0);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // LibTorch cannot build or run this form (an op without a bf16 kernel)
    throw Error("deployable model of " + check.arch + (bf16 ? " in bf16" : "") + ": " + exception_text(e));
  }
  const double optimized_bound = bf16 ? std::max(2 * d.max_difference, 1e-3 * std::max(d.logit_scale, 1.0)) : -1.0;
  // optimize_for_inference may refuse a shape oneDNN does not support, or change the logits of a model beyond
  // float rounding (seen on a user's traced CNN): then the frozen module is the deployed form, and d says why.
  try {
    std::tie(d.max_difference, d.logit_scale) = check(d.optimized, "after optimize_for_inference", optimized_bound);
  } catch (const std::exception& e) {  // expctl::Error, c10::Error, or the interpreter's JITException around it
    d.not_optimized = exception_text(e);
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
