#include "runner/models/torchscript_export.h"

#include <torch/script.h>

#include <map>
#include <set>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/params.h"

namespace expctl::models {
namespace {

/// `self.<a>.<b>.<tensor>` for any names, digits included ("layer1.0.conv1.weight"): TorchScript accepts
/// getattr with a string literal, which plain attribute syntax cannot spell for "0".
std::string attr(const std::string& tensor) {
  std::string expr = "self";
  for (const auto& part : split_dotted(tensor)) expr = "getattr(" + expr + ", \"" + part + "\")";
  return expr;
}

std::string ints(int64_t v) { return "[" + std::to_string(v) + ", " + std::to_string(v) + "]"; }

std::string real(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::string torchscript_source(const Graph& graph) {
  std::ostringstream src;
  src << "def forward(self, x: Tensor) -> Tensor:\n";
  auto v = [](int id) { return "v" + std::to_string(id); };
  bool returned = false;
  const auto& nodes = graph.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    auto fail = [&](const std::string& why) -> std::string {
      throw Error("TorchScript export: node '" + n.name + "': " + why);
    };
    auto in = [&](size_t k) {
      if (k >= n.inputs.size() || n.inputs[k] < 0 || size_t(n.inputs[k]) >= i) fail("reads an unknown node");
      return v(n.inputs[k]);
    };
    const std::string out = "    " + v(int(i)) + " = ";
    switch (n.op) {
      case Op::Input:
        src << out << "x\n";
        break;
      case Op::Conv:
        src << out << "torch.conv2d(" << in(0) << ", " << attr(n.name + ".weight") << ", "
            << (n.bias ? attr(n.name + ".bias") : "None") << ", " << ints(n.stride) << ", " << ints(n.padding) << ", "
            << ints(n.dilation) << ", " << n.groups << ")\n";
        break;
      case Op::BatchNorm:
        src << out << "torch.batch_norm(" << in(0) << ", " << attr(n.name + ".weight") << ", "
            << attr(n.name + ".bias") << ", " << attr(n.name + ".running_mean") << ", "
            << attr(n.name + ".running_var") << ", False, 0.1, " << real(n.eps) << ", True)\n";
        break;
      case Op::Activation:
        if (n.kind == "relu" || n.kind.empty()) src << out << "torch.relu(" << in(0) << ")\n";
        else if (n.kind == "relu6") src << out << "torch.clamp(" << in(0) << ", 0.0, 6.0)\n";
        else if (n.kind == "sigmoid" || n.kind == "hardswish" || n.kind == "silu" || n.kind == "hardsigmoid")
          src << out << "torch." << n.kind << "(" << in(0) << ")\n";
        else fail("activation '" + n.kind + "' is not supported (" + join(activation_kinds()) + ")");
        break;
      case Op::Pool:
        if (n.kind == "max")
          src << out << "torch.max_pool2d(" << in(0) << ", " << ints(n.kernel) << ", " << ints(n.stride) << ", "
              << ints(n.padding) << ", [1, 1], False)\n";
        else if (n.kind == "avg")
          src << out << "torch.avg_pool2d(" << in(0) << ", " << ints(n.kernel) << ", " << ints(n.stride) << ", "
              << ints(n.padding) << ", False, True, None)\n";
        else if (n.kind == "adaptive_avg")
          src << out << "torch.adaptive_avg_pool2d(" << in(0) << ", [" << n.out_h << ", " << n.out_w << "])\n";
        else if (n.kind == "adaptive_max")
          src << out << "torch.adaptive_max_pool2d(" << in(0) << ", [" << n.out_h << ", " << n.out_w << "])[0]\n";
        else fail("pool '" + n.kind + "' is not supported (max, avg, adaptive_avg, adaptive_max)");
        break;
      case Op::Dropout:
        src << out << in(0) << "\n";  // inference: dropout is the identity
        break;
      case Op::Add:
      case Op::Mul: {
        std::string e = in(0);
        for (size_t k = 1; k < n.inputs.size(); ++k)
          e = std::string(n.op == Op::Add ? "torch.add(" : "torch.mul(") + e + ", " + in(k) + ")";
        src << out << e << "\n";
        break;
      }
      case Op::Concat: {
        src << out << "torch.cat([";
        for (size_t k = 0; k < n.inputs.size(); ++k) src << (k ? ", " : "") << in(k);
        src << "], 1)\n";
        break;
      }
      case Op::Flatten:
        src << out << "torch.flatten(" << in(0) << ", 1)\n";
        break;
      case Op::Linear: {
        const std::string w = attr(n.name + ".weight");
        if (n.bias) src << out << "torch.addmm(" << attr(n.name + ".bias") << ", " << in(0) << ", " << w << ".t())\n";
        else src << out << "torch.matmul(" << in(0) << ", " << w << ".t())\n";
        break;
      }
      case Op::Output:
        if (returned) fail("a second output");
        src << "    return " << in(0) << "\n";
        returned = true;
        break;
    }
  }
  if (!returned) throw Error("TorchScript export: the graph has no output");
  return src.str();
}

torch::jit::Module to_torchscript(const torch::nn::Module& module, const Graph& graph) {
  const std::string source = torchscript_source(graph);
  // Every module of the file gets a class of its own in one compilation unit; names are unique per export.
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  int classes = 0;
  auto new_module = [&](const std::string& what) {
    return torch::jit::Module(c10::QualifiedName("__torch__.expctl." + what + "_" + std::to_string(classes++)), cu);
  };
  torch::jit::Module root = new_module("Model");
  std::map<std::string, torch::jit::Module> submodules;  // module path → its module
  auto module_at = [&](const std::vector<std::string>& parts, size_t depth) {
    torch::jit::Module m = root;
    std::string path;
    for (size_t i = 0; i < depth; ++i) {
      path += (i ? "." : "") + parts[i];
      auto it = submodules.find(path);
      if (it == submodules.end()) {
        torch::jit::Module child = new_module("Module");
        m.register_module(parts[i], child);
        it = submodules.emplace(path, child).first;
      }
      m = it->second;
    }
    return m;
  };
  torch::NoGradGuard no_grad;
  std::set<std::string> have;
  for (const auto& p : module.named_parameters(true)) have.insert(p.key());
  for (const auto& b : module.named_buffers(true)) have.insert(b.key());
  for (const Node& n : graph.nodes()) {
    std::vector<std::string> needs;
    if (n.op == Op::Conv || n.op == Op::Linear) {
      needs = {".weight"};
      if (n.bias) needs.push_back(".bias");
    } else if (n.op == Op::BatchNorm) {
      needs = {".weight", ".bias", ".running_mean", ".running_var"};
    }
    for (const auto& suffix : needs)
      if (!have.count(n.name + suffix))
        throw Error("TorchScript export: node '" + n.name + "' needs tensor '" + n.name + suffix +
                    "', which the model lacks");
  }
  auto add = [&](const std::string& key, const torch::Tensor& t, bool buffer) {
    const auto parts = split_dotted(key);
    if (parts.empty()) throw Error("TorchScript export: the model has a tensor with an empty name part: '" + key + "'");
    module_at(parts, parts.size() - 1).register_parameter(parts.back(), t.detach().to(torch::kCPU).clone(), buffer);
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) add(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) add(b.key(), b.value(), true);
  try {
    root.define(source);
  } catch (const c10::Error& e) {
    throw Error("TorchScript export: the generated forward does not compile (" +
                std::string(e.what_without_backtrace()) + ")");
  }
  root.eval();
  return root;
}

void export_torchscript(const torch::nn::Module& module, const Graph& graph, const std::filesystem::path& path) {
  std::ostringstream bytes;
  to_torchscript(module, graph).save(bytes);
  write_file_atomic(path, bytes.str(), "TorchScript model");
}

}  // namespace expctl::models
