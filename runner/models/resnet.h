// ResNet-18/34 (BasicBlock) with torchvision's parameter and buffer names and observation points.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runner/models/network.h"

namespace expctl::models {

/// The network's entry: `ImageNet` = 7×7 stride-2 conv1 + 3×3 stride-2 max-pool (torchvision);
/// `Cifar` = 3×3 stride-1 conv1 with padding 1 and no max-pool, for 32×32 inputs.
enum class Stem { ImageNet, Cifar };

/// "imagenet" / "cifar".
std::string to_string(Stem stem);
/// Parses "imagenet" / "cifar"; throws expctl::Error naming the valid values otherwise.
Stem parse_stem(const std::string& name);

/// The architecture of a (possibly pruned) BasicBlock ResNet. Empty width vectors mean torchvision's widths.
struct ResNetSpec {
  int depth = 18;                     ///< 18 or 34
  int64_t num_classes = 1000;         ///< fc out-features
  Stem stem = Stem::ImageNet;         ///< see Stem
  int64_t in_channels = 3;            ///< 3 (RGB) or 1 (gray)
  std::vector<int64_t> stage_widths;  ///< 4 entries: residual-stream width per stage (default 64,128,256,512)
  std::vector<int64_t> block_widths;  ///< one per block: width between its conv1 and conv2 (default = stage width)

  /// Blocks per stage: {2,2,2,2} for 18, {3,4,6,3} for 34; throws expctl::Error for other depths.
  std::vector<int> blocks_per_stage() const;
  /// A copy with empty widths filled in; throws expctl::Error naming the field when something is invalid.
  ResNetSpec resolved() const;
  /// "resnet18" / "resnet34".
  std::string name() const;
  /// Field-wise equality after resolving defaults.
  bool operator==(const ResNetSpec& other) const;
  bool operator!=(const ResNetSpec& other) const { return !(*this == other); }
};

/// torchvision's BasicBlock: conv1-bn1-relu-conv2-bn2, + identity or downsample (conv 1×1 + bn), relu.
class BasicBlockImpl : public torch::nn::Module {
 public:
  /// `name` is the block's module path ("layer2.0"); `downsample` adds the 1×1 projection (stride `stride`).
  BasicBlockImpl(std::string name, int64_t in_width, int64_t inner_width, int64_t out_width, int64_t stride,
                 bool downsample);
  /// Runs the block; reports to `observer` when it is not null.
  torch::Tensor forward(const torch::Tensor& x, ForwardObserver* observer = nullptr);
  /// The block's module path, e.g. "layer1.0".
  const std::string& name() const { return name_; }

  torch::nn::Conv2d conv1{nullptr};  ///< 3×3, stride `stride`
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Conv2d conv2{nullptr};  ///< 3×3, stride 1
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};      ///< "downsample.0" conv, "downsample.1" bn; null when identity
  torch::nn::Conv2d downsample_conv{nullptr};     ///< the same module as downsample[0]
  torch::nn::BatchNorm2d downsample_bn{nullptr};  ///< the same module as downsample[1]

 private:
  std::string name_, conv1_name_, relu1_name_, conv2_name_, downsample_name_;
};
TORCH_MODULE(BasicBlock);

/// A BasicBlock ResNet whose state dict keys equal torchvision's resnet18/resnet34.
class ResNetImpl : public NetworkImpl {
 public:
  /// Builds and initialises the network like torchvision (kaiming-normal fan-out convs, BN 1/0, default fc).
  explicit ResNetImpl(const ResNetSpec& spec = ResNetSpec{});
  /// Logits [N, num_classes]; reports to `observer` when it is not null (no cost otherwise).
  torch::Tensor forward(const torch::Tensor& x, ForwardObserver* observer = nullptr) override;

  /// The architecture, widths resolved; kept in step with the weights by prune_group().
  const ResNetSpec& spec() const { return spec_; }
  /// Re-reads every width of spec() from the current weight shapes (after in-place surgery).
  void sync_spec() override;
  /// The network as a graph (runner/models/graph.h), in torchvision's forward order: activations are named like
  /// the ForwardObserver points ("relu", "layer1.0.relu1", "layer1.0"), a block's residual add "layer1.0.add".
  Graph graph() const override;
  /// Names of every Conv2d/Linear in forward order ("conv1", "layer1.0.conv1", ..., "fc").
  std::vector<std::string> layer_names() const override;

  /// The network as a chain of segments, for work that goes layer by layer and keeps the activations between
  /// them (Wanda's sequential calibration): 0 = the stem (conv1, bn1, relu, max-pool), 1..blocks = the blocks,
  /// last = the head (average pool, flatten, fc). forward(x) runs them in order.
  int64_t num_segments() const override { return int64_t(blocks_.size()) + 2; }
  /// Runs segment `i` on its input (the previous segment's output); reports to `observer` as forward() does.
  torch::Tensor forward_segment(int64_t i, const torch::Tensor& x, ForwardObserver* observer = nullptr) override;
  /// The Conv2d/Linear names of segment `i` in forward order; all segments together give layer_names().
  std::vector<std::string> segment_layers(int64_t i) const override;
  /// Names of every activation point in forward order ("relu", "layer1.0.relu1", "layer1.0", ...).
  std::vector<std::string> activation_points() const override;
  std::string arch_name() const override { return spec_.name(); }
  int64_t in_channels() const override { return spec_.in_channels; }
  std::shared_ptr<NetworkImpl> same_architecture() const override;
  /// All blocks in forward order.
  const std::vector<BasicBlock>& blocks() const { return blocks_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::ModuleList> layers;  ///< "layer1" .. "layer4"
  torch::nn::Linear fc{nullptr};

 private:
  ResNetSpec spec_;
  std::vector<BasicBlock> blocks_;
};
/// A shared handle to a ResNetImpl (like TORCH_MODULE(ResNet)), which also converts from a Network that holds a
/// ResNet: `models::ResNet r = models::load_checkpoint(file);` (throws expctl::Error when it holds another model).
class ResNet : public torch::nn::ModuleHolder<ResNetImpl> {
 public:
  using torch::nn::ModuleHolder<ResNetImpl>::ModuleHolder;
  ResNet(const Network& network);  // NOLINT: implicit on purpose
};

/// Builds a ResNet for `spec` (validated; throws expctl::Error when invalid).
ResNet make_resnet(const ResNetSpec& spec);

/// The architecture a torchvision-style ResNet state dict describes (depth from the block keys, widths from the
/// shapes, stem from conv1's kernel). Throws expctl::DataError "<source>: ..." when it is not a BasicBlock ResNet.
ResNetSpec infer_spec(const StateDict& sd, const std::string& source = "state dict");


/// make_resnet(spec) with the adapted `pretrained` weights loaded (see adapt_pretrained()).
ResNet make_pretrained_resnet(const ResNetSpec& spec, const StateDict& pretrained,
                              const std::string& source = "pretrained weights");

}  // namespace expctl::models
