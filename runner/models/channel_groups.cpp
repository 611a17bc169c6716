#include "runner/models/channel_groups.h"

#include <algorithm>
#include <unordered_map>

#include "runner/core/error.h"

namespace expctl::models {

std::vector<ChannelGroup> channel_groups(const Network& model) { return derive_channel_groups(model->graph()); }

torch::Tensor member_rows(const torch::Tensor& t, const GroupMember& m, int64_t size) {
  if (m.dim < 0 || m.dim >= t.dim()) throw Error(m.tensor + ": has no dimension " + std::to_string(m.dim));
  if (t.size(m.dim) < m.offset + size * m.span)
    throw Error(m.tensor + ": has " + std::to_string(t.size(m.dim)) + " entries on dim " + std::to_string(m.dim) +
                ", a group of " + std::to_string(size) + " channels needs [" + std::to_string(m.offset) + ", " +
                std::to_string(m.offset + size * m.span) + ")");
  return t.narrow(m.dim, m.offset, size * m.span).movedim(m.dim, 0).reshape({size, -1});
}

namespace {

/// Checks `keep_indices` against `group` and returns them sorted, int64, on the CPU. Sorted order keeps the
/// surviving channels in their original relative order (a pruned model then looks like the original with rows
/// deleted, which makes checkpoints easy to compare).
torch::Tensor checked_keep(const ChannelGroup& group, const torch::Tensor& keep_indices) {
  const std::string what = "prune group '" + group.name + "'";
  if (!keep_indices.defined() || keep_indices.dim() != 1 || keep_indices.numel() == 0)
    throw Error(what + ": keep indices must be a non-empty 1-D tensor");
  if (keep_indices.is_floating_point() || keep_indices.is_complex() || keep_indices.scalar_type() == torch::kBool)
    throw Error(what + ": keep indices must be integers");
  const torch::Tensor keep = std::get<0>(keep_indices.to(torch::kCPU, torch::kLong).sort());
  if (keep[0].item<int64_t>() < 0 || keep[-1].item<int64_t>() >= group.size)
    throw Error(what + ": keep indices must lie in [0, " + std::to_string(group.size) + ")");
  if (keep.numel() > 1 && (keep.slice(0, 1) == keep.slice(0, 0, -1)).any().item<bool>())
    throw Error(what + ": keep indices contain duplicates");
  return keep;
}

}  // namespace

void prune_channels(torch::nn::Module& module,
                    const std::vector<std::pair<const ChannelGroup*, torch::Tensor>>& plan) {
  std::unordered_map<std::string, torch::Tensor> tensors;
  for (const auto& item : state_dict(module)) tensors.emplace(item.key(), item.value());

  // Resolve and check everything before touching the module: per (tensor, dim), which indices survive.
  std::map<std::pair<std::string, int64_t>, torch::Tensor> survive;  // bool [size of dim]
  for (const auto& [group, keep_indices] : plan) {
    const std::string what = "prune group '" + group->name + "'";
    if (group->members.empty()) throw Error(what + ": group has no members");
    const torch::Tensor keep = checked_keep(*group, keep_indices);
    torch::Tensor removed = torch::ones({group->size}, torch::kBool);
    removed.index_fill_(0, keep, false);
    for (const auto& m : group->members) {
      auto it = tensors.find(m.tensor);
      if (it == tensors.end()) throw Error(what + ": the model has no tensor '" + m.tensor + "'");
      const torch::Tensor& t = it->second;
      if (m.dim >= t.dim()) throw Error(what + ": '" + m.tensor + "' has no dimension " + std::to_string(m.dim));
      const int64_t end = m.offset + group->size * m.span;
      if (t.size(m.dim) < end)
        throw Error(what + ": '" + m.tensor + "' has " + std::to_string(t.size(m.dim)) + " entries on dim " +
                    std::to_string(m.dim) + ", the group needs [" + std::to_string(m.offset) + ", " +
                    std::to_string(end) + ") (groups derived from another model?)");
      // A producer's filters are exactly the group's channels; a mismatch means the groups describe another model.
      const std::string weight_of = m.tensor.size() > 7 ? m.tensor.substr(0, m.tensor.size() - 7) : "";
      const bool producer = m.dim == 0 && m.tensor.compare(weight_of.size(), 7, ".weight") == 0 &&
                            std::count(group->producers.begin(), group->producers.end(), weight_of) > 0;
      if (producer && t.size(0) != group->size)
        throw Error(what + ": '" + m.tensor + "' has " + std::to_string(t.size(0)) + " filters, the group " +
                    std::to_string(group->size) + " channels (groups derived from another model?)");
      auto [slot, fresh] = survive.try_emplace({m.tensor, m.dim});
      if (fresh) slot->second = torch::ones({t.size(m.dim)}, torch::kBool);
      slot->second.slice(0, m.offset, end).view({group->size, m.span}).index_put_({removed}, false);
    }
  }

  {
    torch::NoGradGuard no_grad;
    for (const auto& [key, mask] : survive) {
      torch::Tensor& t = tensors.at(key.first);
      // set_data swaps the tensor's storage while the Parameter object (shared by the module, its parent
      // Sequential and any observer) stays the same one, so forward() sees the new shape. clone() drops the
      // reference to the old, larger storage.
      const torch::Tensor index = mask.nonzero().flatten().to(t.device());
      t.set_data(t.index_select(key.second, index).clone());
      if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
    }
  }
  // Keep module options truthful (printing, cloning, MAC counts from options).
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      auto& o = conv->options;
      const bool depthwise = o.groups() > 1 && o.groups() == o.in_channels() && o.in_channels() == o.out_channels();
      const int64_t out = conv->weight.size(0);
      if (depthwise) o.groups(out).in_channels(out).out_channels(out);
      else o.in_channels(conv->weight.size(1) * o.groups()).out_channels(out);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->options.num_features(bn->weight.size(0));
    } else if (auto* lin = m->as<torch::nn::LinearImpl>()) {
      lin->options.in_features(lin->weight.size(1)).out_features(lin->weight.size(0));
    }
  }
}

void prune_group(Network model, const ChannelGroup& group, const torch::Tensor& keep) {
  prune_channels(*model, {{&group, keep}});
  model->sync_spec();
}

void prune_groups(Network model, const std::map<std::string, torch::Tensor>& keep_by_group) {
  const auto groups = channel_groups(model);
  std::vector<std::pair<const ChannelGroup*, torch::Tensor>> plan;
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
  prune_channels(*model, plan);
  model->sync_spec();
}

}  // namespace expctl::models
