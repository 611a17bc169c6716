#include "runner/models/network.h"

#include <map>
#include <set>
#include <sstream>

#include "runner/core/error.h"

namespace expctl::models {
namespace {

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

std::string join(const std::vector<std::string>& names, size_t max_shown = 12) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < max_shown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > max_shown) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

}  // namespace

torch::Device NetworkImpl::device() const {
  for (const auto& p : parameters()) return p.device();
  return torch::kCPU;
}

Network copy_network(const Network& model) {
  Network copy(model->same_architecture());
  const auto params = model->parameters();
  if (!params.empty()) copy->to(params.front().device(), params.front().scalar_type());
  load_state_dict(*copy, state_dict(*model), "copy_model");
  copy->train(model->is_training());
  return copy;
}

// ---- state dicts -------------------------------------------------------------------------------

StateDict state_dict(const torch::nn::Module& module) {
  StateDict sd;
  // Python's Module.state_dict() walks modules depth-first and lists each one's own parameters and then its
  // own buffers; named_parameters() would group all parameters before all buffers instead.
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) sd.insert(prefix + p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) sd.insert(prefix + b.key(), b.value());
  }
  return sd;
}

void load_state_dict(torch::nn::Module& module, const StateDict& sd, const std::string& source,
                     const LoadOptions& options) {
  const StateDict own = state_dict(module);
  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& item : own) {
    if (sd.contains(item.key())) continue;
    const bool counter =
        item.key().size() >= 20 && item.key().compare(item.key().size() - 20, 20, ".num_batches_tracked") == 0;
    if (!(counter && options.allow_missing_num_batches_tracked)) missing.push_back(item.key());
  }
  for (const auto& item : sd) {
    const auto* mine = own.find(item.key());
    if (!mine) {
      unexpected.push_back(item.key());
    } else if (!item.value().defined() || item.value().sizes() != mine->sizes()) {
      mismatched.push_back(item.key() + ": file has " +
                           (item.value().defined() ? shape_str(item.value()) : std::string("no tensor")) +
                           ", model has " + shape_str(*mine));
    }
  }
  std::string problems;
  if (!missing.empty()) problems += "\n  missing keys: " + join(missing);
  if (!unexpected.empty()) problems += "\n  unexpected keys: " + join(unexpected);
  if (!mismatched.empty()) problems += "\n  shape mismatch: " + join(mismatched, 6);
  if (!problems.empty()) throw DataError(source + ": state dict does not fit the model:" + problems);

  torch::NoGradGuard no_grad;
  for (const auto& item : sd) {
    torch::Tensor dst = own[item.key()];
    dst.copy_(item.value());
  }
}

// ---- pretrained weights ----------------------------------------------------------------------------

StateDict adapt_pretrained(const StateDict& pretrained, const Network& fresh) {
  const Graph graph = fresh->graph();
  const auto& nodes = graph.nodes();
  const int64_t in_channels = fresh->in_channels();
  std::map<std::string, const Node*> first_convs;  // "<conv>.weight" of the convs reading the image
  std::set<std::string> head;                      // tensors of the layer producing the logits
  for (const Node& n : nodes) {
    if (n.op == Op::Conv && n.groups == 1 && !n.inputs.empty() && nodes[size_t(n.inputs[0])].op == Op::Input)
      first_convs[n.name + ".weight"] = &n;
    if (n.op == Op::Output && !n.inputs.empty()) {
      const Node& last = nodes[size_t(n.inputs[0])];
      head = {last.name + ".weight", last.name + ".bias"};
    }
  }
  const StateDict own = state_dict(*fresh);
  StateDict out;
  for (const auto& item : pretrained) {
    torch::Tensor t = item.value();
    if (first_convs.count(item.key()) && t.dim() == 4) {
      const Node& conv = *first_convs.at(item.key());
      if (in_channels == 1 && t.size(1) == 3) {
        // A gray image is an RGB image with R = G = B, and conv(w, [g, g, g]) = conv(w_r + w_g + w_b, g):
        // summing over the input channels gives exactly the response the RGB filter had to the gray image.
        t = t.sum(1, /*keepdim=*/true);
      }
      const int64_t k = conv.kernel;
      if (k < t.size(2) && k < t.size(3) && (t.size(2) - k) % 2 == 0 && (t.size(3) - k) % 2 == 0) {
        // A small-input stem (`stem: cifar`) runs a k×k first conv at stride 1 where ImageNet had a larger kernel
        // at stride 2. ImageNet's stem filters are smooth, roughly centred edge/colour detectors with most of their
        // weight in the middle; their centre k×k is the part that looks at a pixel's immediate neighbourhood, the
        // same kind of feature at the scale a small image has without the stem's down-sampling. Resizing the
        // whole kernel would change its frequency response instead. Everything after it keeps its weights.
        const int64_t top = (t.size(2) - k) / 2, left = (t.size(3) - k) / 2;
        t = t.slice(2, top, top + k).slice(3, left, left + k);
      }
      t = t.contiguous();
    } else if (head.count(item.key()) && own.contains(item.key()) && own[item.key()].sizes() != t.sizes()) {
      // A different class count: the ImageNet classifier means nothing for the new classes; start fresh.
      t = own[item.key()].detach().clone();
    }
    out.insert(item.key(), t);
  }
  return out;
}

}  // namespace expctl::models
