#include "runner/models/graph_net.h"

#include <algorithm>
#include <map>

#include "runner/core/error.h"
#include "runner/core/params.h"

namespace expctl::models {
namespace {

bool is_layer(const Node& n) { return n.op == Op::Conv || n.op == Op::Linear; }

}  // namespace

GraphNetImpl::GraphNetImpl(Graph graph, std::string name, Init init)
    : graph_(std::move(graph)), name_(std::move(name)), init_(init) {
  const auto& nodes = graph_.nodes();
  derive_channel_groups(graph_);  // checks widths and wiring, naming the first bad node
  if (nodes.empty() || nodes.front().op != Op::Input)
    throw Error("model graph '" + name_ + "': the first node must be the input");
  if (nodes.back().op != Op::Output) throw Error("model graph '" + name_ + "': the last node must be the output");
  build_layers();
  torch::NoGradGuard no_grad;
  if (init_ == Init::ResNet)
    for (auto& m : modules(/*include_self=*/false))
      if (auto* conv = m->as<torch::nn::Conv2dImpl>())
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
  find_segments();
}

std::shared_ptr<torch::nn::Module> GraphNetImpl::make_layer(size_t i, int64_t c_in) {
  const Node& n = graph_.nodes()[i];
  switch (n.op) {
    case Op::Conv: {
      auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(n.in_channels, n.out_channels, n.kernel)
                                        .stride(n.stride)
                                        .padding(n.padding)
                                        .dilation(n.dilation)
                                        .groups(n.groups)
                                        .bias(n.bias));
      if (init_ == Init::Layerwise) {
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
        if (n.bias) conv->bias.zero_();
      }
      convs_[i] = conv;
      return conv.ptr();
    }
    case Op::BatchNorm: {
      auto bn = torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c_in).eps(n.eps));
      bn->weight.fill_(1.0);
      bn->bias.zero_();
      bns_[i] = bn;
      return bn.ptr();
    }
    case Op::Linear: {
      auto linear = torch::nn::Linear(torch::nn::LinearOptions(n.in_channels, n.out_channels).bias(n.bias));
      if (init_ == Init::Layerwise) {
        linear->weight.normal_(0.0, 0.01);
        if (n.bias) linear->bias.zero_();
      }
      linears_[i] = linear;
      return linear.ptr();
    }
    default:
      return nullptr;
  }
}

int64_t GraphNetImpl::check_node(size_t i, int64_t c_in, const std::vector<int64_t>& channels) const {
  const auto& nodes = graph_.nodes();
  const Node& n = nodes[i];
  switch (n.op) {
    case Op::Input:
    case Op::Conv:
    case Op::Linear:
      return n.out_channels;
    case Op::Activation: {
      const auto& kinds = activation_kinds();
      if (std::find(kinds.begin(), kinds.end(), n.kind) == kinds.end())
        throw Error("model graph '" + name_ + "': node '" + n.name + "': activation '" + n.kind +
                    "' is not supported (" + join(kinds) + ")");
      return c_in;
    }
    case Op::Pool:
      if (n.kind != "max" && n.kind != "avg" && n.kind != "adaptive_avg" && n.kind != "adaptive_max")
        throw Error("model graph '" + name_ + "': node '" + n.name + "': pool '" + n.kind +
                    "' is not supported (max, avg, adaptive_avg, adaptive_max)");
      return c_in;
    case Op::Concat: {
      int64_t sum = 0;
      for (int in : n.inputs) sum += channels[size_t(in)];
      return sum;
    }
    case Op::Output:
      if (i + 1 != nodes.size()) throw Error("model graph '" + name_ + "': a second output");
      return 0;
    default:
      return c_in;
  }
}

void GraphNetImpl::build_layers() {
  const auto& nodes = graph_.nodes();
  std::vector<int64_t> channels(nodes.size(), 0);  // channels reaching each node, for the batch norms' sizes
  convs_.assign(nodes.size(), nullptr);
  bns_.assign(nodes.size(), nullptr);
  linears_.assign(nodes.size(), nullptr);
  last_use_.assign(nodes.size(), 0);
  // Containers of the module paths ("features" → "1" → "conv"), made the first time a layer needs them.
  std::map<std::string, std::shared_ptr<torch::nn::Module>> containers;
  auto parent_of = [&](const std::vector<std::string>& parts) -> torch::nn::Module& {
    torch::nn::Module* m = this;
    std::string path;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      path += (i ? "." : "") + parts[i];
      auto it = containers.find(path);
      if (it == containers.end()) {
        if (m->named_children().contains(parts[i]))
          throw Error("model graph '" + name_ + "': '" + path + "' is a layer and a module path at once");
        it = containers.emplace(path, m->register_module(parts[i], std::make_shared<torch::nn::Module>())).first;
      }
      m = it->second.get();
    }
    return *m;
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    for (int in : n.inputs) last_use_[size_t(in)] = i;
    const int64_t c_in = n.inputs.empty() ? 0 : channels[size_t(n.inputs[0])];
    channels[i] = check_node(i, c_in, channels);
    if (auto module = make_layer(i, c_in)) {
      const auto parts = split_dotted(n.name);
      if (parts.empty()) throw Error("model graph '" + name_ + "': a layer without a name");
      parent_of(parts).register_module(parts.back(), module);
    }
  }
}

void GraphNetImpl::find_segments() {
  // A segment may end after node i when nothing after i reads a node before i; it ends there once it holds a
  // layer and more layers follow.
  const auto& nodes = graph_.nodes();
  std::vector<bool> layers_after(nodes.size() + 1, false);
  for (size_t i = nodes.size(); i-- > 0;) layers_after[i] = layers_after[i + 1] || is_layer(nodes[i]);
  size_t begin = 0, reach = 0;
  bool has_layer = false;
  for (size_t i = 0; i + 1 < nodes.size(); ++i) {
    has_layer = has_layer || is_layer(nodes[i]);
    if (reach <= i && has_layer && layers_after[i + 1]) {
      segments_.emplace_back(begin, i + 1);
      begin = i + 1;
      has_layer = false;
    }
    reach = std::max(reach, last_use_[i]);
  }
  segments_.emplace_back(begin, nodes.size());
}

torch::Tensor GraphNetImpl::run(size_t begin, size_t end, const torch::Tensor& x, ForwardObserver* observer) {
  const auto& nodes = graph_.nodes();
  std::vector<torch::Tensor> v(nodes.size());
  if (begin > 0) v[begin - 1] = x;
  torch::Tensor result;
  for (size_t i = begin; i < end; ++i) {
    const Node& n = nodes[i];
    auto in = [&](size_t k) -> const torch::Tensor& { return v[size_t(n.inputs[k])]; };
    // An input read by this node only and computed inside this call can be overwritten (ReLU in place), unless
    // it is a view (flatten) or an activation's output, which autograd may keep for its backward (sigmoid).
    auto owned = [&](size_t k) {
      const size_t id = size_t(n.inputs[k]);
      const Op op = nodes[id].op;
      return last_use_[id] == i && id >= begin && op != Op::Input && op != Op::Flatten && op != Op::Activation;
    };
    torch::Tensor y;
    switch (n.op) {
      case Op::Input:
        y = x;
        break;
      case Op::Conv:
        if (observer) observer->on_layer_input(n.name, in(0));
        y = convs_[i]->forward(in(0));
        break;
      case Op::BatchNorm:
        y = bns_[i]->forward(in(0));
        break;
      case Op::Linear:
        if (observer) observer->on_layer_input(n.name, in(0));
        y = linears_[i]->forward(in(0));
        break;
      case Op::Activation:
        if (n.kind == "sigmoid") y = torch::sigmoid(in(0));
        else if (n.kind == "relu6") y = torch::clamp(in(0), 0.0, 6.0);  // hardtanh has no bf16 backward on CPU
        else if (n.kind == "hardswish") y = torch::hardswish(in(0));
        else if (n.kind == "silu") y = torch::silu(in(0));
        else if (n.kind == "hardsigmoid") y = torch::hardsigmoid(in(0));
        else y = owned(0) ? torch::relu_(v[size_t(n.inputs[0])]) : torch::relu(in(0));
        if (observer) observer->on_activation(n.name, y);
        break;
      case Op::Pool:
        if (n.kind == "max") y = torch::max_pool2d(in(0), n.kernel, n.stride, n.padding);
        else if (n.kind == "avg") y = torch::avg_pool2d(in(0), n.kernel, n.stride, n.padding);
        else if (n.kind == "adaptive_max") y = std::get<0>(torch::adaptive_max_pool2d(in(0), {n.out_h, n.out_w}));
        else y = torch::adaptive_avg_pool2d(in(0), {n.out_h, n.out_w});
        break;
      case Op::Dropout:
        y = torch::dropout(in(0), n.rate, is_training());
        break;
      case Op::Add:
        y = in(0) + in(1);
        for (size_t k = 2; k < n.inputs.size(); ++k) y = y + in(k);
        break;
      case Op::Mul:
        y = in(0) * in(1);
        break;
      case Op::Concat: {
        std::vector<torch::Tensor> parts;
        for (size_t k = 0; k < n.inputs.size(); ++k) parts.push_back(in(k));
        y = torch::cat(parts, 1);
        break;
      }
      case Op::Flatten:
        y = torch::flatten(in(0), 1);
        break;
      case Op::Output:
        result = in(0);
        break;
    }
    for (int id : n.inputs)
      if (last_use_[size_t(id)] == i && size_t(id) >= begin) v[size_t(id)] = torch::Tensor();
    if (n.op != Op::Output) v[i] = std::move(y);
  }
  return result.defined() ? result : v[end - 1];
}

torch::Tensor GraphNetImpl::forward(const torch::Tensor& x, ForwardObserver* observer) {
  return run(0, graph_.nodes().size(), x, observer);
}

torch::Tensor GraphNetImpl::forward_segment(int64_t i, const torch::Tensor& x, ForwardObserver* observer) {
  if (i < 0 || i >= num_segments())
    throw Error(name_ + "::forward_segment: segment " + std::to_string(i) + " of " + std::to_string(num_segments()));
  return run(segments_[size_t(i)].first, segments_[size_t(i)].second, x, observer);
}

std::vector<std::string> GraphNetImpl::segment_layers(int64_t i) const {
  if (i < 0 || i >= num_segments())
    throw Error(name_ + "::segment_layers: segment " + std::to_string(i) + " of " + std::to_string(num_segments()));
  std::vector<std::string> out;
  for (size_t k = segments_[size_t(i)].first; k < segments_[size_t(i)].second; ++k)
    if (is_layer(graph_.nodes()[k])) out.push_back(graph_.nodes()[k].name);
  return out;
}

std::vector<std::string> GraphNetImpl::layer_names() const {
  std::vector<std::string> out;
  for (const Node& n : graph_.nodes())
    if (is_layer(n)) out.push_back(n.name);
  return out;
}

std::vector<std::string> GraphNetImpl::activation_points() const {
  std::vector<std::string> out;
  for (const Node& n : graph_.nodes())
    if (n.op == Op::Activation) out.push_back(n.name);
  return out;
}

void GraphNetImpl::sync_spec() {
  auto& nodes = graph_.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node& n = nodes[i];
    if (n.op == Op::Conv) {
      const auto& o = convs_[i]->options;
      n.in_channels = o.in_channels();
      n.out_channels = o.out_channels();
      n.groups = o.groups();
    } else if (n.op == Op::Linear) {
      const auto& w = linears_[i]->weight;
      n.in_channels = w.size(1);
      n.out_channels = w.size(0);
    }
  }
}

int64_t GraphNetImpl::in_channels() const { return graph_.nodes().front().out_channels; }

std::shared_ptr<NetworkImpl> GraphNetImpl::same_architecture() const {
  return std::make_shared<GraphNetImpl>(graph_, name_, init_);
}

GraphNet::GraphNet(const Network& network) : ModuleHolder(std::dynamic_pointer_cast<GraphNetImpl>(network.ptr())) {
  if (network && !ptr()) throw Error("the model is a " + network->arch_name() + ", not a graph network");
}

}  // namespace expctl::models
