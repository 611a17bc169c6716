// What every model is to the rest of expctl: a torch module with torchvision's parameter names that runs forward
// with an observer, describes itself as a graph (runner/models/graph.h) and can be run segment by segment.
// The stages, pruners, metrics and checkpoints take a models::Network; every model is a GraphNet
// (runner/models/graph_net.h), the one executor, built from a graph:
//
//     models::Network net = models::build_model(cfg);       // whichever model the YAML names
//     auto groups = models::channel_groups(net);            // derived from net->graph()
//     torch::Tensor logits = net->forward(images);
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "runner/io/state_dict.h"
#include "runner/models/graph.h"

namespace expctl::models {

/// An ordered name → tensor map, in torchvision's `state_dict()` order (per module: parameters, then buffers).
using io::StateDict;  // runner/io/state_dict.h

/// Receives the tensors flowing through a forward pass (C++ modules have no forward hooks).
/// Names are torchvision's module paths: layer inputs use the layer's parameter prefix ("conv1",
/// "layer1.0.conv2", "features.0.0", "fc"); activations use the names of the graph's activation nodes (ResNet:
/// "relu" for the stem, "layer1.0.relu1" inside a block, "layer1.0" for a block's output after add + ReLU).
/// The tensors are the live ones: copy what you keep; never modify them.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  /// Called with the input of every Conv2d / Linear right before it runs.
  virtual void on_layer_input(const std::string& layer, const torch::Tensor& x) {}
  /// Called with the output of every activation (ReLU, ReLU6, ...).
  virtual void on_activation(const std::string& point, const torch::Tensor& y) {}
};

/// A network expctl can train, prune, measure, save and export.
class NetworkImpl : public torch::nn::Module {
 public:
  /// Logits [N, classes]; reports to `observer` when it is not null (no cost otherwise).
  virtual torch::Tensor forward(const torch::Tensor& x, ForwardObserver* observer = nullptr) = 0;

  /// The network as a chain of segments, for work that goes layer by layer and keeps the activations between
  /// them (Wanda's sequential calibration); running the segments in order is forward().
  virtual int64_t num_segments() const = 0;
  /// Runs segment `i` on its input (the previous segment's output); reports to `observer` as forward() does.
  virtual torch::Tensor forward_segment(int64_t i, const torch::Tensor& x, ForwardObserver* observer = nullptr) = 0;
  /// The Conv2d/Linear names of segment `i` in forward order; all segments together give layer_names().
  virtual std::vector<std::string> segment_layers(int64_t i) const = 0;

  /// Names of every Conv2d/Linear in forward order.
  virtual std::vector<std::string> layer_names() const = 0;
  /// Names of every activation point (what ForwardObserver::on_activation sees) in forward order.
  virtual std::vector<std::string> activation_points() const = 0;
  /// The network as a graph, with the current (possibly pruned) widths.
  virtual Graph graph() const = 0;
  /// Re-reads the architecture's widths from the weights after in-place surgery (prune_channels()).
  virtual void sync_spec() = 0;
  /// The architecture's name: "resnet18", "vgg16_bn", "mobilenet_v2", ...
  virtual std::string arch_name() const = 0;
  /// Image channels the network reads (3 RGB, 1 gray).
  virtual int64_t in_channels() const = 0;
  /// A freshly initialised network of the same architecture and widths (weights not copied): see copy_model().
  virtual std::shared_ptr<NetworkImpl> same_architecture() const = 0;

  /// Where the parameters are.
  torch::Device device() const;
};

/// A shared handle to any NetworkImpl; a GraphNet converts to it implicitly.
class Network : public torch::nn::ModuleHolder<NetworkImpl> {
 public:
  // No forwarding constructor (NetworkImpl is abstract): `Network(net)` converts as `Network n = net` does.
  Network(std::nullptr_t) : ModuleHolder(nullptr) {}                             // NOLINT
  Network(std::shared_ptr<NetworkImpl> impl) : ModuleHolder(std::move(impl)) {}  // NOLINT
  template <typename T, typename = std::enable_if_t<std::is_base_of_v<NetworkImpl, T>>>
  Network(const torch::nn::ModuleHolder<T>& holder)  // NOLINT: implicit on purpose
      : ModuleHolder(std::static_pointer_cast<NetworkImpl>(holder.ptr())) {}
};

/// The module's state dict in torchvision's order. Tensors alias the module's: clone them to keep a snapshot.
StateDict state_dict(const torch::nn::Module& module);

/// Options of load_state_dict().
struct LoadOptions {
  bool allow_missing_num_batches_tracked = true;  ///< older files lack BN `num_batches_tracked`
};

/// Copies `sd` into the module's parameters and buffers, key by key. Throws expctl::DataError
/// "<source>: ..." naming every missing and unexpected key, or the key and both shapes on a shape mismatch;
/// nothing is modified when it throws.
void load_state_dict(torch::nn::Module& module, const StateDict& sd, const std::string& source = "state dict",
                     const LoadOptions& options = LoadOptions{});

/// Adapts a pretrained torchvision state dict (ImageNet: RGB, 1000 classes, large stem) to `fresh`, a freshly
/// initialised network of the same family: the first conv (the one reading the image) summed over its input
/// channels for a gray input, cut to its centre k×k for a small-input stem with a k×k kernel; a different class
/// count → the logits layer taken from `fresh` (a new classifier). Everything else is reused as it is. The result
/// loads into `fresh` with load_state_dict().
StateDict adapt_pretrained(const StateDict& pretrained, const Network& fresh);

/// A deep copy (same architecture, weights, buffers, device, dtype and train/eval mode) sharing no storage with
/// `model`.
Network copy_network(const Network& model);

/// copy_model() for a typed holder (GraphNet) or a Network: the copy has the same type.
template <typename Holder>
Holder copy_model(const Holder& model) {
  Network copy = copy_network(Network(model));
  if constexpr (std::is_same_v<Holder, Network>)
    return copy;
  else
    return Holder(std::static_pointer_cast<typename Holder::ContainedType>(copy.ptr()));
}

}  // namespace expctl::models
