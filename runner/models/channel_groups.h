// Channel groups: the sets of (tensor, dim) that must lose the same channel indices, and the one surgery
// routine that removes channels from all of them.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runner/models/resnet.h"

namespace expctl::models {

/// One tensor of a group and the dimension that indexes the group's channels.
struct GroupMember {
  std::string tensor;  ///< state-dict name, e.g. "layer1.0.bn1.running_mean"
  int64_t dim = 0;     ///< 0 = output channels / BN features, 1 = input channels / fc in-features
};

/// Channels that must be kept or removed together.
struct ChannelGroup {
  std::string name;  ///< "layer1".."layer4" = a stage's residual stream; "layer1.0.conv1" = a block's inner width
  int64_t size = 0;  ///< number of channels when the groups were listed
  std::vector<GroupMember> members;            ///< every tensor that loses the channels
  std::vector<std::string> activation_points;  ///< ForwardObserver::on_activation points carrying these channels
  std::vector<std::string> producers;          ///< conv layers whose output channels these are
  std::vector<std::string> consumers;          ///< conv/linear layers whose input channels these are
};

/// The model's groups in forward order: "layer1" (stem conv1/bn1 + every block output of stage 1 + the inputs
/// of the blocks reading it + layer2.0's conv1/downsample inputs), "layer1.0.conv1", "layer1.1.conv1", "layer2",
/// ... "layer4" (whose consumer is fc). Every prunable channel is in exactly one group.
std::vector<ChannelGroup> channel_groups(const ResNet& model);

/// Keeps only channels `keep` (int64 indices, any order, no duplicates, within range, at least one) of every
/// member of `group`, in place (`set_data`), slicing BN running statistics too, and updates the layers' options
/// and model->spec(). Gradients of touched tensors are dropped: build a NEW optimizer afterwards.
/// Throws expctl::Error naming the group when `keep` or the model does not fit.
void prune_group(ResNet& model, const ChannelGroup& group, const torch::Tensor& keep);

/// prune_group() for several groups at once: group name → channels to keep. Unknown names are errors.
void prune_groups(ResNet& model, const std::map<std::string, torch::Tensor>& keep_by_group);

}  // namespace expctl::models
