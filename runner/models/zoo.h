// The graphs of torchvision's classification CNNs beyond ResNet-18/34, with torchvision's module paths, so that
// torchvision's state dicts (and pretrained files) load as they are. Each adapts to a data set: `num_classes`
// logits, `in_channels` image channels, and a small-input variant for 28×28 / 32×32 images (`small_input`):
//
// | model        | torchvision                                  | small_input                                  |
// |--------------|----------------------------------------------|----------------------------------------------|
// | vgg11_bn/16  | features, avgpool 7×7, classifier (3 linear) | no last max-pool, global avg pool, one linear |
// |              |                                              | "classifier" (512 → classes)                 |
// | mobilenet_v2 | 3×3/2 stem, 17 inverted residuals, 1280 head | stem and features.2 at stride 1              |
// | densenet121  | 7×7/2 conv0 + max-pool, 4 dense blocks       | 3×3/1 conv0, no pool0                        |
// | resnet50     | 7×7/2 conv1 + max-pool, Bottleneck [3,4,6,3] | 3×3/1 conv1, no max-pool                     |
//
// Activation nodes are named by their torchvision module paths ("features.0.2", "classifier.1"); where torchvision
// calls a functional ReLU (DenseNet's last, ResNet's shared `relu` module) they are named like ResNet-18's points:
// "layer1.0.relu1", "layer1.0.relu2", block output "layer1.0", DenseNet's last "relu".
#pragma once
#include <cstdint>

#include "runner/models/graph.h"

namespace expctl::models::zoo {

/// VGG-11 (depth 11) or VGG-16 (depth 16) with batch norm: torchvision's vgg11_bn / vgg16_bn.
Graph vgg_bn(int depth, int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's mobilenet_v2 (width 1.0).
Graph mobilenet_v2(int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's densenet121 (growth 32, blocks 6-12-24-16, bottleneck 4×).
Graph densenet121(int64_t num_classes, int64_t in_channels, bool small_input);
/// torchvision's resnet50 (Bottleneck, stride in the 3×3 conv: "V1.5").
Graph resnet50(int64_t num_classes, int64_t in_channels, bool small_input);

}  // namespace expctl::models::zoo
