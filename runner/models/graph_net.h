// A network that runs its graph (runner/models/graph.h): the one executor of every model, built-in (the graphs of
// runner/models/zoo.cpp: ResNet-18/34/50, VGG, MobileNetV2, DenseNet) or imported from TorchScript, with
// torchvision's module paths as parameter names.
//
//     Graph g = zoo::mobilenet_v2(...);
//     models::GraphNet net(g, "mobilenet_v2");   // modules created from the graph, torchvision's initialisation
//     torch::Tensor logits = net->forward(images);
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runner/models/network.h"

namespace expctl::models {

/// Runs a Graph. Conv / BatchNorm / Linear nodes become torch modules registered under their module paths
/// ("features.1.conv.0.0" is module "features" → "1" → "conv" → "0" → "0"), so state-dict keys are the node
/// names plus ".weight", ".running_mean", ...; everything else is functional.
class GraphNetImpl : public NetworkImpl {
 public:
  /// How the layers are initialised (both: convs kaiming-normal, fan-out, ReLU; BN weight 1, bias 0).
  enum class Init {
    Layerwise,  ///< each layer as it is made; linear N(0, 0.01), biases 0 (torchvision's VGG, MobileNetV2)
    ResNet,     ///< torchvision's ResNet: every layer made with LibTorch's defaults, then the convs and BNs
                ///< re-initialised in module order; linear layers keep LibTorch's default
  };
  /// Builds the modules of `graph` (checked with derive_channel_groups(), which names a bad node) and
  /// initialises them as `init` says. `name` is the architecture's ("vgg16_bn").
  GraphNetImpl(Graph graph, std::string name, Init init = Init::Layerwise);

  torch::Tensor forward(const torch::Tensor& x, ForwardObserver* observer = nullptr) override;
  /// Segments end where one tensor carries everything later nodes read (between VGG's layers, after each of
  /// MobileNetV2's blocks and DenseNet's transitions), each holding at least one conv/linear layer.
  int64_t num_segments() const override { return int64_t(segments_.size()); }
  torch::Tensor forward_segment(int64_t i, const torch::Tensor& x, ForwardObserver* observer = nullptr) override;
  std::vector<std::string> segment_layers(int64_t i) const override;
  std::vector<std::string> layer_names() const override;
  std::vector<std::string> activation_points() const override;
  Graph graph() const override { return graph_; }
  /// Re-reads every conv / BN / linear width (and a depthwise conv's groups) from the modules into the graph.
  void sync_spec() override;
  std::string arch_name() const override { return name_; }
  int64_t in_channels() const override;
  std::shared_ptr<NetworkImpl> same_architecture() const override;

 private:
  /// Makes a module for every conv / BN / linear node under its module path; checks every other node's kind.
  void build_layers();
  /// The channels node `i` outputs, `c_in` reaching it (Error for an unsupported activation or pool, or a second
  /// output).
  int64_t check_node(size_t i, int64_t c_in, const std::vector<int64_t>& channels) const;
  /// The module of conv / BN / linear node `i` (`c_in` channels reach it), initialised as init_ says; else null.
  std::shared_ptr<torch::nn::Module> make_layer(size_t i, int64_t c_in);
  /// Cuts the nodes into segments (see num_segments()).
  void find_segments();
  /// Runs nodes [begin, end) with `x` as the value of node begin - 1 (or the input).
  torch::Tensor run(size_t begin, size_t end, const torch::Tensor& x, ForwardObserver* observer);

  Graph graph_;
  std::string name_;
  Init init_;
  // Per node: its module when it is a conv / BN / linear (else empty).
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::BatchNorm2d> bns_;
  std::vector<torch::nn::Linear> linears_;
  std::vector<size_t> last_use_;                             ///< per node: the last node reading it
  std::vector<std::pair<size_t, size_t>> segments_;          ///< node ranges [begin, end)
};

/// A shared handle to a GraphNetImpl; converts from a Network that holds one (throws expctl::Error otherwise).
class GraphNet : public torch::nn::ModuleHolder<GraphNetImpl> {
 public:
  using torch::nn::ModuleHolder<GraphNetImpl>::ModuleHolder;
  GraphNet(const Network& network);  // NOLINT: implicit on purpose
};

}  // namespace expctl::models
