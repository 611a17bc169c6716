#include "runner/models/channel_groups.h"

#include <unordered_map>

#include "runner/core/error.h"

namespace expctl::models {
namespace {

const char* const kBnTensors[] = {"weight", "bias", "running_mean", "running_var"};

void add_conv_out(ChannelGroup& g, const std::string& conv, const std::string& bn) {
  g.members.push_back({conv + ".weight", 0});
  for (const char* t : kBnTensors) g.members.push_back({bn + "." + t, 0});
  g.producers.push_back(conv);
}

void add_consumer(ChannelGroup& g, const std::string& layer) {
  g.members.push_back({layer + ".weight", 1});
  g.consumers.push_back(layer);
}

}  // namespace

std::vector<ChannelGroup> channel_groups(const ResNet& model) {
  std::vector<ChannelGroup> groups;
  const auto& spec = model->spec();
  const auto blocks = spec.blocks_per_stage();
  size_t block_index = 0;
  for (size_t s = 0; s < blocks.size(); ++s) {
    const std::string stage = "layer" + std::to_string(s + 1);
    // The residual stream of a stage: every block adds its output to the stream, so the stem (stage 1) or the
    // stage's downsample projection and every conv2/bn2 write the same channels, and every reader of the stream
    // (the next blocks' conv1, the next stage's first conv1 and downsample, fc) reads them.
    ChannelGroup stream;
    stream.name = stage;
    stream.size = spec.stage_widths[s];
    if (s == 0) {
      add_conv_out(stream, "conv1", "bn1");
      stream.activation_points.push_back("relu");
    } else {
      add_conv_out(stream, stage + ".0.downsample.0", stage + ".0.downsample.1");
    }
    std::vector<ChannelGroup> inner;
    for (int b = 0; b < blocks[s]; ++b, ++block_index) {
      const std::string block = stage + "." + std::to_string(b);
      add_conv_out(stream, block + ".conv2", block + ".bn2");
      stream.activation_points.push_back(block);
      if (b > 0 || s == 0) add_consumer(stream, block + ".conv1");

      ChannelGroup g;
      g.name = block + ".conv1";
      g.size = spec.block_widths[block_index];
      add_conv_out(g, block + ".conv1", block + ".bn1");
      add_consumer(g, block + ".conv2");
      g.activation_points.push_back(block + ".relu1");
      inner.push_back(std::move(g));
    }
    if (s + 1 < blocks.size()) {
      const std::string next = "layer" + std::to_string(s + 2) + ".0";
      add_consumer(stream, next + ".conv1");
      add_consumer(stream, next + ".downsample.0");
    } else {
      add_consumer(stream, "fc");
    }
    groups.push_back(std::move(stream));
    for (auto& g : inner) groups.push_back(std::move(g));
  }
  return groups;
}

void prune_group(ResNet& model, const ChannelGroup& group, const torch::Tensor& keep_indices) {
  const std::string what = "prune_group '" + group.name + "'";
  if (!keep_indices.defined() || keep_indices.dim() != 1 || keep_indices.numel() == 0)
    throw Error(what + ": keep indices must be a non-empty 1-D tensor");
  if (keep_indices.is_floating_point() || keep_indices.is_complex() || keep_indices.scalar_type() == torch::kBool)
    throw Error(what + ": keep indices must be integers");
  // Sorted order keeps the surviving channels in their original relative order (a pruned model then looks
  // like the original with rows deleted, which makes checkpoints easy to compare).
  const torch::Tensor keep = std::get<0>(keep_indices.to(torch::kCPU, torch::kLong).sort());

  std::unordered_map<std::string, torch::Tensor> tensors;
  for (const auto& item : state_dict(*model)) tensors.emplace(item.key(), item.value());
  if (group.members.empty()) throw Error(what + ": group has no members");

  int64_t size = -1;
  std::vector<torch::Tensor> targets;
  for (const auto& m : group.members) {
    auto it = tensors.find(m.tensor);
    if (it == tensors.end()) throw Error(what + ": the model has no tensor '" + m.tensor + "'");
    const torch::Tensor& t = it->second;
    if (m.dim >= t.dim()) throw Error(what + ": '" + m.tensor + "' has no dimension " + std::to_string(m.dim));
    if (size < 0) size = t.size(m.dim);
    if (t.size(m.dim) != size)
      throw Error(what + ": '" + m.tensor + "' has " + std::to_string(t.size(m.dim)) + " channels on dim " +
                  std::to_string(m.dim) + " but '" + group.members[0].tensor + "' has " + std::to_string(size));
    targets.push_back(t);
  }
  if (keep[0].item<int64_t>() < 0 || keep[-1].item<int64_t>() >= size)
    throw Error(what + ": keep indices must lie in [0, " + std::to_string(size) + ")");
  if (keep.numel() > 1 && (keep.slice(0, 1) == keep.slice(0, 0, -1)).any().item<bool>())
    throw Error(what + ": keep indices contain duplicates");

  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < targets.size(); ++i) {
      torch::Tensor& t = targets[i];
      // set_data swaps the tensor's storage while the Parameter object (shared by the module, its parent
      // Sequential and any observer) stays the same one, so forward() sees the new shape. clone() drops the
      // reference to the old, larger storage.
      const torch::Tensor sliced = t.index_select(group.members[i].dim, keep.to(t.device())).clone();
      t.set_data(sliced);
      if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
    }
  }
  // Keep module options truthful (printing, cloning, MAC counts from options) and the spec in step.
  for (auto& m : model->modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      conv->options.in_channels(conv->weight.size(1)).out_channels(conv->weight.size(0));
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->options.num_features(bn->weight.size(0));
    } else if (auto* lin = m->as<torch::nn::LinearImpl>()) {
      lin->options.in_features(lin->weight.size(1)).out_features(lin->weight.size(0));
    }
  }
  model->sync_spec();
}

void prune_groups(ResNet& model, const std::map<std::string, torch::Tensor>& keep_by_group) {
  const auto groups = channel_groups(model);
  std::vector<std::pair<const ChannelGroup*, torch::Tensor>> plan;
  // Resolve every name before touching the model, so an unknown name leaves it unchanged.
  for (const auto& [name, keep] : keep_by_group) {
    const ChannelGroup* found = nullptr;
    for (const auto& g : groups)
      if (g.name == name) found = &g;
    if (!found) {
      std::string valid;
      for (const auto& g : groups) valid += (valid.empty() ? "" : ", ") + g.name;
      throw Error("prune_groups: unknown channel group '" + name + "' (valid: " + valid + ")");
    }
    plan.emplace_back(found, keep);
  }
  for (const auto& [group, keep] : plan) prune_group(model, *group, keep);
}

}  // namespace expctl::models
