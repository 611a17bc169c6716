// Channel groups of a model (derived from its graph, runner/models/graph.h) and the one surgery routine that
// removes channels from every member of a group.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runner/models/graph.h"
#include "runner/models/network.h"

namespace expctl::models {

/// The model's groups: derive_channel_groups(model->graph()). ResNet: "layer1" (the stem conv1/bn1, every block
/// output of stage 1, the inputs of the blocks reading it, layer2.0's conv1/downsample inputs), "layer1.0.conv1",
/// "layer1.1.conv1", "layer2", ... "layer4" (whose last consumer is fc). Every prunable channel is in exactly one
/// group.
std::vector<ChannelGroup> channel_groups(const Network& model);

/// Member `m`'s part of tensor `t` as rows: [size, everything else], row c = all that channel c of a group of
/// `size` channels owns (its `span` indices on m.dim, every index of the other dims). A view when it can be.
/// Throws expctl::Error "<tensor>: ..." when `t` has no such dimension or is too small for the member.
torch::Tensor member_rows(const torch::Tensor& t, const GroupMember& m, int64_t size);

/// Removes channels from `module` in place: for each (group, keep) of `plan`, keeps only channels `keep` (int64
/// indices, any order, no duplicates, within [0, group.size), at least one) of every member of the group, slicing
/// BN running statistics too; groups that share a tensor (a concatenation's consumers) are cut together, each at
/// its offset. Module options follow the new shapes (Conv2d in/out channels and a depthwise conv's groups, BN
/// features, Linear features). Gradients of touched tensors are dropped: build a NEW optimizer afterwards.
/// Throws expctl::Error naming the group when a `keep` or the module does not fit; nothing is modified then.
void prune_channels(torch::nn::Module& module, const std::vector<std::pair<const ChannelGroup*, torch::Tensor>>& plan);

/// prune_channels() for one group of a network, and its architecture follows the new widths (sync_spec()).
void prune_group(Network model, const ChannelGroup& group, const torch::Tensor& keep);

/// prune_channels() for several groups of a network at once: group name → channels to keep (groups derived from the
/// model as it is). Unknown names are errors.
void prune_groups(Network model, const std::map<std::string, torch::Tensor>& keep_by_group);

}  // namespace expctl::models
