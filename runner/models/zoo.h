// The graphs of torchvision's classification CNNs, with torchvision's module paths, so that torchvision's state
// dicts (and pretrained files) load as they are; GraphNet (runner/models/graph_net.h) runs every one of them. Each adapts to a data set: `num_classes`
// logits, `in_channels` image channels, and a small-input variant for 28×28 / 32×32 images (`small_input`):
//
// | model        | torchvision                                  | small_input                                  |
// |--------------|----------------------------------------------|----------------------------------------------|
// | resnet18/34  | 7×7/2 conv1 + max-pool, BasicBlock           | 3×3/1 conv1, no max-pool (Stem::Cifar)       |
// | vgg11_bn/16  | features, avgpool 7×7, classifier (3 linear) | no last max-pool, global avg pool, one linear |
// |              |                                              | "classifier" (512 → classes)                 |
// | mobilenet_v2 | 3×3/2 stem, 17 inverted residuals, 1280 head | stem and features.2 at stride 1              |
// | densenet121  | 7×7/2 conv0 + max-pool, 4 dense blocks       | 3×3/1 conv0, no pool0                        |
// | resnet50     | 7×7/2 conv1 + max-pool, Bottleneck [3,4,6,3] | 3×3/1 conv1, no max-pool                     |
//
// Activation nodes are named by their torchvision module paths ("features.0.2", "classifier.1"); where torchvision
// calls a functional ReLU (DenseNet's last, ResNet's shared `relu` module) they are named by their place:
// "layer1.0.relu1", "layer1.0.relu2", block output "layer1.0" (after the residual add "layer1.0.add"), DenseNet's
// last "relu".
//
// ResNet-18/34 may be pruned to any widths, so they are described by a ResNetSpec:
//
//     models::ResNetSpec spec;                               // ResNet-18, torchvision's widths
//     spec.num_classes = 10;
//     models::GraphNet net = models::make_resnet(spec);
//     models::ResNetSpec now = models::resnet_spec(*net);    // widths read back from the weights (after pruning)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runner/models/graph.h"
#include "runner/models/graph_net.h"

namespace expctl::models {

/// A ResNet's entry: `ImageNet` = 7×7 stride-2 conv1 + 3×3 stride-2 max-pool (torchvision);
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

/// The network `spec` describes (validated; throws expctl::Error when invalid), initialised like torchvision's
/// ResNet: kaiming-normal (fan-out) convs, BN weight 1 / bias 0, fc LibTorch's default.
GraphNet make_resnet(const ResNetSpec& spec);

/// make_resnet(spec) with the adapted `pretrained` weights loaded (see adapt_pretrained()).
GraphNet make_pretrained_resnet(const ResNetSpec& spec, const StateDict& pretrained,
                                const std::string& source = "pretrained weights");

/// The architecture a torchvision-style ResNet state dict describes (depth from the block keys, widths from the
/// shapes, stem from conv1's kernel). Throws expctl::DataError "<source>: ..." when it is not a BasicBlock ResNet.
ResNetSpec infer_spec(const StateDict& sd, const std::string& source = "state dict");

/// The architecture of `net`, a (possibly pruned) ResNet-18/34, at its current widths; throws expctl::DataError
/// when it is another model.
ResNetSpec resnet_spec(const NetworkImpl& net);

}  // namespace expctl::models

namespace expctl::models::zoo {

/// torchvision's resnet18 / resnet34 (BasicBlock) at the widths of `spec` (validated).
Graph resnet_basic(const ResNetSpec& spec);

/// VGG-11 (depth 11) or VGG-16 (depth 16) with batch norm: torchvision's vgg11_bn / vgg16_bn.
Graph vgg_bn(int depth, int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's mobilenet_v2 (width 1.0).
Graph mobilenet_v2(int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's densenet121 (growth 32, blocks 6-12-24-16, bottleneck 4×).
Graph densenet121(int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's resnet50 (Bottleneck, stride in the 3×3 conv: "V1.5").
Graph resnet50(int64_t num_classes, int64_t in_channels, bool small_input);

}  // namespace expctl::models::zoo
