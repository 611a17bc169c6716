#include "runner/models/torchscript_import.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/params.h"
#include "runner/io/torch_file.h"
#include "runner/models/graph_net.h"

namespace expctl::models {
namespace {

namespace jit = torch::jit;

/// "aten::relu_" → "aten::relu": an in-place op computes what its out-of-place form does, and the graph decides
/// itself where to work in place.
std::string base_kind(const jit::Node* n) {
  std::string k = n->kind().toQualString();
  if (k.size() > 1 && k.back() == '_' && k[k.size() - 2] != '_') k.pop_back();
  return k;
}

// Ops whose first input is the only tensor they read (a cat's first input is its list of tensors).
const std::set<std::string>& unary_ops() {
  // clang-format off
  static const std::set<std::string> ops = {
      "aten::_convolution", "aten::conv2d", "aten::batch_norm", "aten::linear",
      "aten::relu", "aten::relu6", "aten::hardtanh", "aten::sigmoid", "aten::hardswish", "aten::silu",
      "aten::hardsigmoid", "aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d",
      "aten::adaptive_max_pool2d", "aten::mean", "aten::dropout", "aten::flatten", "aten::view", "aten::reshape",
      "aten::contiguous", "aten::clone", "aten::cat"};
  // clang-format on
  return ops;
}
bool binary_op(const std::string& k) { return k == "aten::add" || k == "aten::mul"; }
// What computes shapes or holds values rather than images: never reported as an unsupported op themselves (the op
// reading them is).
bool plumbing(const std::string& k) {
  static const std::set<std::string> kinds = {"prim::ListConstruct", "prim::ListUnpack",    "prim::TupleConstruct",
                                              "prim::TupleUnpack",   "prim::NumToTensor",   "aten::size",
                                              "aten::Int",           "aten::ScalarImplicit"};
  return kinds.count(k) > 0;
}

struct Val {
  int id = -1;
  std::vector<int64_t> shape;  ///< without the batch: {C, H, W} or {features}
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[N";
  for (auto d : s) out += ", " + std::to_string(d);
  return out + "]";
}

class Converter {
 public:
  Converter(jit::Module& module, std::string file, std::vector<int64_t> input)
      : module_(module), file_(std::move(file)), input_(std::move(input)) {
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) tensors_[p.name] = p.value;
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) tensors_[b.name] = b.value;
    for (const auto& m : module_.named_modules()) {
      if (m.name.empty()) continue;
      modules_.insert(m.name);
      const auto dot = m.name.rfind('.');
      if (dot != std::string::npos) parents_.insert(m.name.substr(0, dot));
    }
    // Layers are named by their module paths; nothing else may take such a name.
    for (const auto& t : tensors_) {
      const auto dot = t.first.rfind('.');
      if (dot != std::string::npos) used_.insert(t.first.substr(0, dot));
    }
  }

  Graph convert() {
    auto method = module_.find_method("forward");
    if (!method) fail("the module has no forward method");
    std::shared_ptr<jit::Graph> g = method->graph()->copy();
    jit::Inline(*g);
    if (g->inputs().size() != 2)
      fail("forward takes " + std::to_string(int64_t(g->inputs().size()) - 1) +
           " arguments; expctl passes one image tensor");
    if (g->outputs().size() != 1) fail("forward returns several values; expctl needs one tensor of logits");
    self_ = g->inputs()[0];

    mark_data_path(g->outputs()[0]);
    vals_[g->inputs()[1]] = {graph_.input("input", input_[0]), input_};

    std::vector<std::string> problems;
    std::set<std::string> reported;
    for (const jit::Node* n : g->nodes()) {
      if (!on_path_.count(n)) continue;
      const std::string k = base_kind(n);
      if (k == "prim::ListConstruct") continue;  // a cat's list, read by the cat
      const bool known = unary_ops().count(k) || binary_op(k);
      if (!known) {
        if (!plumbing(k) && reported.insert(k).second)
          problems.push_back(describe(n) + (k == "prim::If" || k == "prim::Loop"
                                                ? ": control flow is not supported (a scripted model? trace it with "
                                                  "torch.jit.trace)"
                                                : ": op not supported"));
        continue;
      }
      if (!problems.empty()) continue;  // later ops may read what could not be converted
      try {
        convert(n, k);
      } catch (const DataError& e) {
        problems.push_back(describe(n) + ": " + e.what());
      }
    }
    const jit::Value* out = g->outputs()[0];
    if (problems.empty()) {
      if (out->node()->kind() == jit::prim::TupleConstruct || out->node()->kind() == jit::prim::ListConstruct)
        problems.push_back("forward returns a tuple or list; expctl needs one tensor of logits");
      else if (!vals_.count(out))
        problems.push_back("forward's result is not computed from its input image");
      else if (vals_.at(out).shape.size() != 1)
        problems.push_back("forward returns " + shape_text(vals_.at(out).shape) +
                           "; expctl needs logits of shape [N, classes]");
    }
    if (!problems.empty())
      throw DataError(
          file_ + ": cannot convert this TorchScript model to expctl's model graph:\n  " + join(problems, "\n  ") +
          "\nSupported: conv2d (also grouped and depthwise), batch_norm, relu, relu6, sigmoid, hardswish, "
          "silu, hardsigmoid, max/avg/adaptive pooling, mean over H and W, add, cat along channels, mul "
          "(squeeze-excitation), flatten/view to [N, features], linear, dropout (see docs/your-own-model.md)");
    graph_.output(vals_.at(out).id);
    return graph_;
  }

  /// The state dict the converted graph's GraphNet needs, from the module's parameters and buffers.
  StateDict weights(const Network& net) const {
    StateDict out;
    for (const auto& item : state_dict(*net)) {
      auto it = tensors_.find(item.key());
      if (it == tensors_.end()) fail("the module has no tensor '" + item.key() + "'");
      out.insert(item.key(), it->second.detach().to(torch::kCPU, torch::kFloat).clone());
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw DataError(file_ + ": " + what); }

  // ---- reading the TorchScript graph ----------------------------------------------------------------------

  void mark_data_path(const jit::Value* out) {
    std::vector<const jit::Value*> todo{out};
    while (!todo.empty()) {
      const jit::Value* v = todo.back();
      todo.pop_back();
      const jit::Node* n = v->node();
      if (n->kind() == jit::prim::Param || n->kind() == jit::prim::Constant || n->kind() == jit::prim::GetAttr)
        continue;
      if (!on_path_.insert(n).second) continue;
      const std::string k = base_kind(n);
      if (unary_ops().count(k)) {
        todo.push_back(n->input(0));
      } else if (binary_op(k)) {
        todo.push_back(n->input(0));
        todo.push_back(n->input(1));
      } else {
        for (const jit::Value* in : n->inputs()) todo.push_back(in);
      }
    }
  }

  /// The module path of the module whose forward ran `n` ("layer1.0.relu"), "" for the top-level forward.
  static std::string module_path(const jit::Node* n) {
    std::string path;
    if (auto cs = n->callstack()) {
      for (const auto& entry : (*cs)->vec()) {
        const auto& info = std::get<2>(entry);
        if (!info) continue;
        const std::string name = info->instance_name();
        if (name == "SELF" || name == "INSTANCE_NAME_UNKNOWN") continue;
        path += (path.empty() ? "" : ".") + name;
      }
    }
    return path;
  }

  static std::string source_line(const jit::Node* n) {
    jit::SourceRange r = n->sourceRange();
    if (auto original = r.findSourceRangeThatGenerated()) r = *original;
    if (auto flc = r.file_line_col()) return std::get<0>(*flc) + ":" + std::to_string(std::get<1>(*flc));
    return "";
  }

  /// "aten::lstm at /usr/lib/python3/dist-packages/torch/nn/modules/rnn.py:774 (module 'lstm')"
  static std::string describe(const jit::Node* n) {
    std::string out = n->kind().toQualString();
    const std::string line = source_line(n), path = module_path(n);
    if (!line.empty()) out += " at " + line;
    if (!path.empty()) out += " (module '" + path + "')";
    return out;
  }

  /// The qualified name of a module attribute ("layer1.0.conv1.weight"), or "" when `v` is computed.
  std::string attr_path(const jit::Value* v) const {
    std::vector<std::string> parts;
    while (v->node()->kind() == jit::prim::GetAttr) {
      parts.push_back(v->node()->s(jit::attr::name));
      v = v->node()->input(0);
    }
    if (v != self_ || parts.empty()) return "";
    std::reverse(parts.begin(), parts.end());
    return join(parts, ".");
  }

  static bool is_none(const jit::Value* v) { return v->type()->kind() == c10::TypeKind::NoneType; }

  static std::optional<c10::IValue> constant(const jit::Value* v) {
    auto iv = jit::toIValue(v);
    if (!iv) return std::nullopt;
    return *iv;
  }
  static int64_t int_arg(const jit::Node* n, size_t k, const char* what) {
    auto iv = constant(n->input(k));
    if (!iv || !iv->isInt()) throw DataError(std::string(what) + " is not a constant integer");
    return iv->toInt();
  }
  static double float_arg(const jit::Node* n, size_t k, const char* what) {
    auto iv = constant(n->input(k));
    if (!iv || !(iv->isDouble() || iv->isInt())) throw DataError(std::string(what) + " is not a constant number");
    return iv->isDouble() ? iv->toDouble() : double(iv->toInt());
  }
  static bool bool_arg(const jit::Node* n, size_t k, const char* what) {
    auto iv = constant(n->input(k));
    if (!iv || !iv->isBool()) throw DataError(std::string(what) + " is not a constant boolean");
    return iv->toBool();
  }
  /// A list of integers; elements computed at run time are std::nullopt.
  static std::vector<std::optional<int64_t>> int_list(const jit::Node* n, size_t k, const char* what) {
    const jit::Value* v = n->input(k);
    std::vector<std::optional<int64_t>> out;
    if (auto iv = constant(v)) {
      if (!iv->isIntList()) throw DataError(std::string(what) + " is not a list of integers");
      for (auto x : iv->toIntVector()) out.emplace_back(x);
      return out;
    }
    if (v->node()->kind() != jit::prim::ListConstruct) throw DataError(std::string(what) + " is computed at run time");
    for (const jit::Value* e : v->node()->inputs()) {
      auto iv = constant(e);
      if (iv && iv->isInt())
        out.emplace_back(iv->toInt());
      else
        out.emplace_back(std::nullopt);
    }
    return out;
  }
  /// A constant list of integers, one value repeated for both spatial dimensions (an empty list gives `empty`).
  static int64_t square(const jit::Node* n, size_t k, const char* what, int64_t empty = -1) {
    const auto list = int_list(n, k, what);
    if (list.empty() && empty >= 0) return empty;
    for (const auto& x : list)
      if (!x) throw DataError(std::string(what) + " is computed at run time");
    if (list.size() == 1) return *list[0];
    if (list.size() != 2) throw DataError(std::string(what) + " must have 2 values");
    if (*list[0] != *list[1])
      throw DataError(std::string(what) + " is " + std::to_string(*list[0]) + "x" + std::to_string(*list[1]) +
                      "; expctl's graph takes square kernels, strides, paddings and dilations");
    return *list[0];
  }

  const Val& val(const jit::Value* v) const {
    auto it = vals_.find(v);
    if (it == vals_.end()) throw DataError("reads a value that is not computed from the input image");
    return it->second;
  }

  std::string unique(const std::string& base) {
    if (used_.insert(base).second) return base;
    for (int i = 2;; ++i)
      if (std::string c = base + "_" + std::to_string(i); used_.insert(c).second) return c;
  }
  /// A leaf module's op takes its path ("layer1.0.relu", "maxpool"); an op in a block's own forward takes the
  /// block's path and a short name ("layer1.0.add"), at the top level the short name alone ("flatten").
  std::string op_name(const jit::Node* n, const std::string& short_name) {
    const std::string path = module_path(n);
    if (!path.empty() && modules_.count(path) && !parents_.count(path)) return unique(path);
    return unique(path.empty() ? short_name : path + "." + short_name);
  }

  /// The module path of a layer from its weight ("layer1.0.conv1" from "layer1.0.conv1.weight").
  std::string layer_name(const jit::Node* n, size_t weight_arg, const std::vector<size_t>& tensor_args,
                         const std::vector<const char*>& suffixes) {
    const std::string w = attr_path(n->input(weight_arg));
    if (w.size() < 8 || w.compare(w.size() - 7, 7, ".weight") != 0)
      throw DataError("its weight is not a module parameter named '<module>.weight' (computed at run time?)");
    const std::string name = w.substr(0, w.size() - 7);
    for (size_t i = 0; i < tensor_args.size(); ++i) {
      const jit::Value* v = n->input(tensor_args[i]);
      if (is_none(v)) continue;
      if (attr_path(v) != name + suffixes[i])
        throw DataError("its tensor '" + attr_path(v) + "' is not '" + name + suffixes[i] + "'");
    }
    if (!layers_.insert(name).second)
      throw DataError("module '" + name + "' runs more than once (shared weights cannot be pruned per use)");
    return name;
  }
  const torch::Tensor& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw DataError("the module has no tensor '" + name + "'");
    return it->second;
  }

  // ---- building expctl's graph --------------------------------------------------------------------------

  void set(const jit::Node* n, int id, std::vector<int64_t> shape) {
    for (auto d : shape)
      if (d <= 0)
        throw DataError("gives an empty output " + shape_text(shape) + " for an input of " + shape_text(input_));
    vals_[n->output(0)] = {id, std::move(shape)};
  }
  const Val& image(const jit::Node* n) const {
    const Val& x = val(n->input(0));
    if (x.shape.size() != 3) throw DataError("expects an image [N, C, H, W], gets " + shape_text(x.shape));
    return x;
  }

  void convert(const jit::Node* n, const std::string& k) {
    if (k == "aten::_convolution" || k == "aten::conv2d") return conv(n, k == "aten::_convolution");
    if (k == "aten::batch_norm") return batch_norm(n);
    if (k == "aten::linear") return linear(n);
    if (k == "aten::relu" || k == "aten::relu6" || k == "aten::sigmoid" || k == "aten::hardswish" ||
        k == "aten::silu" || k == "aten::hardsigmoid")
      return activation(n, k.substr(6));
    if (k == "aten::hardtanh") {
      if (float_arg(n, 1, "min_val") != 0.0 || float_arg(n, 2, "max_val") != 6.0)
        throw DataError("hardtanh is supported as relu6 only (min 0, max 6)");
      return activation(n, "relu6");
    }
    if (k == "aten::max_pool2d" || k == "aten::avg_pool2d") return window_pool(n, k == "aten::max_pool2d");
    if (k == "aten::adaptive_avg_pool2d" || k == "aten::adaptive_max_pool2d")
      return adaptive_pool(n, k == "aten::adaptive_max_pool2d");
    if (k == "aten::mean") return mean(n);
    if (k == "aten::dropout") {
      if (bool_arg(n, 2, "train"))
        throw DataError("dropout was traced in training mode: call model.eval() before torch.jit.trace");
      const Val& x = val(n->input(0));
      return set(n, graph_.dropout(op_name(n, "dropout"), x.id, float_arg(n, 1, "p")), x.shape);
    }
    if (k == "aten::flatten") return flatten(n);
    if (k == "aten::view" || k == "aten::reshape") return view(n);
    if (k == "aten::contiguous" || k == "aten::clone") {
      vals_[n->output(0)] = val(n->input(0));
      return;
    }
    if (k == "aten::cat") return cat(n);
    if (k == "aten::add") return add(n);
    if (k == "aten::mul") return mul(n);
    throw DataError("op not supported");
  }

  void conv(const jit::Node* n, bool underscore) {
    // _convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups, ...)
    // conv2d(input, weight, bias, stride, padding, dilation, groups)
    const Val& x = image(n);
    if (underscore && bool_arg(n, 6, "transposed")) throw DataError("transposed convolutions are not supported");
    const std::string name = layer_name(n, 1, {2}, {".bias"});
    const torch::Tensor& w = tensor(name + ".weight");
    if (w.dim() != 4) throw DataError("'" + name + ".weight' is not 4-dimensional (only 2-d convolutions)");
    if (w.size(2) != w.size(3))
      throw DataError("'" + name + "' has a " + std::to_string(w.size(2)) + "x" + std::to_string(w.size(3)) +
                      " kernel; expctl's graph takes square kernels");
    const int64_t stride = square(n, 3, "stride"), padding = square(n, 4, "padding"),
                  dilation = square(n, 5, "dilation");
    const int64_t groups = int_arg(n, underscore ? 8 : 6, "groups");
    const int64_t kernel = w.size(2), out = w.size(0), in = w.size(1) * groups;
    if (in != x.shape[0])
      throw DataError("'" + name + "' reads " + std::to_string(in) + " channels, gets " + std::to_string(x.shape[0]));
    auto size = [&](int64_t s) { return (s + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1; };
    const int id = graph_.conv(name, x.id, in, out, kernel, stride, padding, groups, !is_none(n->input(2)), dilation);
    set(n, id, {out, size(x.shape[1]), size(x.shape[2])});
  }

  void batch_norm(const jit::Node* n) {
    // batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
    const Val& x = image(n);
    if (is_none(n->input(1)) || is_none(n->input(2)))
      throw DataError("batch norm without affine parameters (affine=False) is not supported");
    if (is_none(n->input(3)) || is_none(n->input(4)))
      throw DataError("batch norm without running statistics (track_running_stats=False) is not supported");
    if (bool_arg(n, 5, "training"))
      throw DataError("batch norm was traced in training mode: call model.eval() before torch.jit.trace");
    const std::string name = layer_name(n, 1, {2, 3, 4}, {".bias", ".running_mean", ".running_var"});
    if (tensor(name + ".weight").numel() != x.shape[0])
      throw DataError("'" + name + "' normalises " + std::to_string(tensor(name + ".weight").numel()) +
                      " channels, gets " + std::to_string(x.shape[0]));
    set(n, graph_.batch_norm(name, x.id, float_arg(n, 7, "eps")), x.shape);
  }

  void linear(const jit::Node* n) {
    const Val& x = val(n->input(0));
    const std::string name = layer_name(n, 1, {2}, {".bias"});
    const torch::Tensor& w = tensor(name + ".weight");
    if (x.shape.size() != 1)
      throw DataError("'" + name + "' reads " + shape_text(x.shape) +
                      "; a linear layer must read [N, features] (flatten first)");
    if (w.dim() != 2 || w.size(1) != x.shape[0])
      throw DataError("'" + name + "' expects " + std::to_string(w.size(-1)) + " features, gets " +
                      std::to_string(x.shape[0]));
    set(n, graph_.linear(name, x.id, w.size(1), w.size(0), !is_none(n->input(2))), {w.size(0)});
  }

  void activation(const jit::Node* n, const std::string& kind) {
    const Val& x = val(n->input(0));
    set(n, graph_.activation(op_name(n, kind), x.id, kind), x.shape);
  }

  void window_pool(const jit::Node* n, bool max) {
    // max_pool2d(input, kernel, stride, padding, dilation, ceil_mode)
    // avg_pool2d(input, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    const Val& x = image(n);
    const int64_t kernel = square(n, 1, "kernel_size");
    const int64_t stride = square(n, 2, "stride", kernel), padding = square(n, 3, "padding");
    if (max && square(n, 4, "dilation") != 1) throw DataError("dilated max pooling is not supported");
    if (bool_arg(n, max ? 5 : 4, "ceil_mode")) throw DataError("ceil_mode=True is not supported");
    if (!max && (!bool_arg(n, 5, "count_include_pad") || !is_none(n->input(6))))
      throw DataError("average pooling is supported with count_include_pad=True and no divisor_override only");
    auto size = [&](int64_t s) { return (s + 2 * padding - kernel) / stride + 1; };
    const std::string name = op_name(n, "pool");
    const int id = max ? graph_.max_pool(name, x.id, kernel, stride, padding)
                       : graph_.avg_pool(name, x.id, kernel, stride, padding);
    set(n, id, {x.shape[0], size(x.shape[1]), size(x.shape[2])});
  }

  void adaptive_pool(const jit::Node* n, bool max) {
    const Val& x = image(n);
    const auto size = int_list(n, 1, "output_size");
    if (size.empty() || size.size() > 2 || !size.front() || !size.back())
      throw DataError("output_size must be one or two constant integers");
    const int64_t h = *size.front(), w = *size.back();
    const std::string name = op_name(n, "pool");
    const int id = max ? graph_.adaptive_max_pool(name, x.id, h, w) : graph_.adaptive_avg_pool(name, x.id, h, w);
    set(n, id, {x.shape[0], h, w});
  }

  void mean(const jit::Node* n) {
    // mean.dim(input, dim, keepdim, dtype): over H and W, it is a global average pool.
    const Val& x = image(n);
    if (n->inputs().size() < 4) throw DataError("a mean over all elements is not supported (give dim=(2, 3))");
    std::set<int64_t> dims;
    for (const auto& d : int_list(n, 1, "dim")) {
      if (!d) throw DataError("dim is computed at run time");
      dims.insert(*d < 0 ? *d + 4 : *d);
    }
    if (dims != std::set<int64_t>{2, 3} || !is_none(n->input(3)))
      throw DataError("a mean is supported over H and W (dim=(2, 3)) without dtype only");
    const std::string name = op_name(n, "pool");
    int id = graph_.adaptive_avg_pool(name, x.id, 1, 1);
    if (bool_arg(n, 2, "keepdim")) return set(n, id, {x.shape[0], 1, 1});
    set(n, graph_.flatten(unique(name + ".flatten"), id, 1), {x.shape[0]});
  }

  void flatten_to_features(const jit::Node* n, const Val& x) {
    if (x.shape.size() == 1) {  // already [N, features]
      vals_[n->output(0)] = x;
      return;
    }
    set(n, graph_.flatten(op_name(n, "flatten"), x.id, x.shape[1] * x.shape[2]),
        {x.shape[0] * x.shape[1] * x.shape[2]});
  }

  void flatten(const jit::Node* n) {
    const Val& x = val(n->input(0));
    const int64_t rank = int64_t(x.shape.size()) + 1;
    int64_t start = int_arg(n, 1, "start_dim"), end = int_arg(n, 2, "end_dim");
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    if (start != 1 || end != rank - 1)
      throw DataError("flatten(" + std::to_string(int_arg(n, 1, "start_dim")) + ", " +
                      std::to_string(int_arg(n, 2, "end_dim")) + ") of " + shape_text(x.shape) +
                      ": only flattening to [N, features] (start_dim=1) is supported");
    flatten_to_features(n, x);
  }

  void view(const jit::Node* n) {
    // x.view(x.size(0), -1), x.view(-1, C*H*W), x.reshape(N, C*H*W): a flatten of the classifier input.
    const Val& x = val(n->input(0));
    int64_t features = 1;
    for (auto d : x.shape) features *= d;
    const auto size = int_list(n, 1, "size");
    const bool batch_first = size.size() == 2 && (!size[0] || *size[0] == -1);
    const bool rest = size.size() == 2 && size[1] && (*size[1] == -1 || *size[1] == features) &&
                      !(size[0] && *size[0] == -1 && *size[1] == -1);
    if (!batch_first || !rest) {
      std::string text;
      for (const auto& s : size) text += (text.empty() ? "" : ", ") + (s ? std::to_string(*s) : std::string("?"));
      throw DataError("view/reshape of " + shape_text(x.shape) + " to [" + text +
                      "]: only flattening to [N, features] (x.view(x.size(0), -1)) is supported");
    }
    flatten_to_features(n, x);
  }

  void cat(const jit::Node* n) {
    const jit::Value* list = n->input(0);
    if (list->node()->kind() != jit::prim::ListConstruct)
      throw DataError("its list of tensors is computed at run time");
    std::vector<int> ids;
    std::vector<int64_t> shape;
    for (const jit::Value* v : list->node()->inputs()) {
      const Val& x = val(v);
      if (x.shape.size() != 3) throw DataError("concatenates " + shape_text(x.shape) + "; images only");
      if (shape.empty()) shape = {0, x.shape[1], x.shape[2]};
      if (x.shape[1] != shape[1] || x.shape[2] != shape[2]) throw DataError("concatenates images of different sizes");
      shape[0] += x.shape[0];
      ids.push_back(x.id);
    }
    const int64_t dim = int_arg(n, 1, "dim");
    if (dim != 1 && dim != -3)
      throw DataError("concatenation along dim " + std::to_string(dim) + "; channels only (dim=1)");
    set(n, graph_.concat(op_name(n, "cat"), ids), shape);
  }

  void add(const jit::Node* n) {
    if (n->input(1)->type()->kind() != c10::TypeKind::TensorType)
      throw DataError("adds a number; only tensor + tensor (a residual connection) is supported");
    if (n->inputs().size() > 2 && float_arg(n, 2, "alpha") != 1.0) throw DataError("add with alpha != 1");
    const Val& a = val(n->input(0));
    const Val& b = val(n->input(1));
    if (a.shape != b.shape)
      throw DataError("adds " + shape_text(a.shape) + " and " + shape_text(b.shape) + "; shapes must be equal");
    set(n, graph_.add(op_name(n, "add"), {a.id, b.id}), a.shape);
  }

  void mul(const jit::Node* n) {
    if (n->input(1)->type()->kind() != c10::TypeKind::TensorType)
      throw DataError("multiplies by a number; only tensor × tensor (squeeze-excitation) is supported");
    const Val& a = val(n->input(0));
    const Val& b = val(n->input(1));
    // Channel c of one scales channel c of the other: equal channel counts, and each spatial size equal or 1.
    bool ok = a.shape.size() == b.shape.size() && a.shape[0] == b.shape[0];
    std::vector<int64_t> shape = a.shape;
    for (size_t d = 1; ok && d < a.shape.size(); ++d) {
      ok = a.shape[d] == b.shape[d] || a.shape[d] == 1 || b.shape[d] == 1;
      shape[d] = std::max(a.shape[d], b.shape[d]);
    }
    if (!ok)
      throw DataError("multiplies " + shape_text(a.shape) + " by " + shape_text(b.shape) +
                      "; channel counts must be equal (squeeze-excitation)");
    set(n, graph_.mul(op_name(n, "mul"), a.id, b.id), shape);
  }

  jit::Module& module_;
  std::string file_;
  std::vector<int64_t> input_;
  std::map<std::string, torch::Tensor> tensors_;
  std::set<std::string> modules_, parents_, used_, layers_;
  const jit::Value* self_ = nullptr;
  std::unordered_set<const jit::Node*> on_path_;
  std::unordered_map<const jit::Value*, Val> vals_;
  Graph graph_;
};

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

ImportedModel import_torchscript(const std::filesystem::path& path, const std::vector<int64_t>& input) {
  const auto start = std::chrono::steady_clock::now();
  const std::string file = path.string();
  if (input.size() != 3 || input[0] <= 0 || input[1] <= 0 || input[2] <= 0)
    throw Error(file + ": the input shape must be [channels, height, width]");
  const std::string not_torchscript =
      ": not a TorchScript file LibTorch can load (save one with torch.jit.trace(model, example).save(path); a state "
      "dict is not enough): ";
  // Read once, as a regular file (a FIFO must not hang the load), and checked before LibTorch allocates what its
  // records declare.
  RegularFile in(path);
  auto bytes = std::make_shared<const std::string>(in.read_all());
  if (bytes->size() < 4 || bytes->compare(0, 4, "PK\x03\x04") != 0)
    throw DataError(file + not_torchscript + "not a zip archive");
  auto reader = io::zip_bytes_reader(bytes, file);
  jit::Module module;
  try {
    module = torch::jit::load(reader, torch::kCPU);
  } catch (const c10::Error& e) {
    throw DataError(file + not_torchscript + first_line(e.what_without_backtrace()));
  }
  module.eval();
  // Before the conversion check, which would otherwise blame NaN logits on the conversion.
  for (const auto& p : module.named_parameters(true)) io::check_finite(p.value, p.name, file);
  for (const auto& b : module.named_buffers(true)) io::check_finite(b.value, b.name, file);

  Converter converter(module, file, input);
  Graph graph = converter.convert();
  ImportedModel m;
  m.network = GraphNet(graph, path.stem().string());
  load_state_dict(*m.network, converter.weights(m.network), file);
  m.network->eval();
  m.in_channels = input[0];
  for (const Node& n : graph.nodes())
    if (n.op == Op::Output) m.num_classes = graph.nodes()[size_t(n.inputs[0])].out_channels;

  // The converted network must compute what the module computes; float64 keeps rounding out of the comparison.
  {
    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(20261203);
    const torch::Tensor x = torch::randn({2, input[0], input[1], input[2]}, gen, torch::kDouble);
    module.to(torch::kDouble);
    torch::Tensor expected;
    try {
      expected = module.forward({x}).toTensor();
    } catch (const c10::Error& e) {
      throw DataError(file + ": the module fails on an input of shape [2, " + std::to_string(input[0]) + ", " +
                      std::to_string(input[1]) + ", " + std::to_string(input[2]) +
                      "] (is model.input right?): " + first_line(e.what_without_backtrace()));
    }
    m.network->to(torch::kDouble);
    const torch::Tensor got = m.network->forward(x);
    m.network->to(torch::kFloat);
    if (got.sizes() != expected.sizes())
      throw DataError(file + ": the converted model gives logits of shape " + c10::str(got.sizes()) + ", the module " +
                      c10::str(expected.sizes()));
    const double scale = std::max(1.0, expected.abs().max().item<double>());
    m.max_difference = (got - expected).abs().max().item<double>() / scale;
    if (!(m.max_difference <= 1e-5))
      throw DataError(file + ": the converted model's logits differ from the module's by " +
                      std::to_string(m.max_difference) +
                      " (relative to the largest logit): the module computes something expctl's graph does not "
                      "express (an in-place op read after it ran, an op hidden in a custom function?)");
  }
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

Network adapt_imported(const ImportedModel& m, int64_t in_channels, int64_t new_classes, const std::string& source) {
  if (in_channels == m.in_channels && new_classes <= 0) return m.network;
  if (in_channels != m.in_channels && !(in_channels == 1 && m.in_channels == 3))
    throw DataError(source + ": the model reads " + std::to_string(m.in_channels) +
                    "-channel images, the data set has " + std::to_string(in_channels) +
                    " channels (only a 3-channel model adapts to 1-channel images)");
  Graph graph = m.network->graph();
  auto& nodes = graph.nodes();
  nodes.front().out_channels = in_channels;
  std::string head;
  for (Node& n : nodes) {
    if (n.op == Op::Conv && !n.inputs.empty() && n.inputs[0] == 0) {
      if (n.groups != 1)
        throw DataError(source + ": '" + n.name + "' reads the image in groups; cannot change its channels");
      n.in_channels = in_channels;
    }
    if (n.op == Op::Output && new_classes > 0) {
      // The layer producing the logits, through what carries its channels unchanged.
      const Node* p = &nodes[size_t(n.inputs[0])];
      while ((p->op == Op::Pool || p->op == Op::Dropout || p->op == Op::Activation ||
              (p->op == Op::Flatten && p->span == 1)) &&
             !p->inputs.empty())
        p = &nodes[size_t(p->inputs[0])];
      if (p->op != Op::Conv && p->op != Op::Linear)
        throw DataError(source + ": the logits do not come straight from a conv or linear layer ('" + p->name +
                        "'), so model.num_classes cannot replace it");
      head = p->name;
    }
  }
  for (Node& n : nodes)
    if (n.name == head && (n.op == Op::Conv || n.op == Op::Linear)) n.out_channels = new_classes;
  Network fresh = GraphNet(graph, m.network->arch_name());
  const StateDict own = state_dict(*fresh);
  StateDict file_weights = state_dict(*m.network);
  StateDict prepared;
  for (const auto& item : file_weights) {
    if (!head.empty() && (item.key() == head + ".weight" || item.key() == head + ".bias"))
      prepared.insert(item.key(), own[item.key()].detach().clone());  // a fresh classifier for the new classes
    else
      prepared.insert(item.key(), item.value().detach().clone());
  }
  load_state_dict(*fresh, adapt_pretrained(prepared, fresh), source);
  return fresh;
}

}  // namespace expctl::models
