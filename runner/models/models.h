// The model registry: what a model downloads, and how it is built for a data set.
//
//     model: {name: MobileNetV2, pretrained: true, stem: cifar}
//     models::Network net = models::build_model(cfg);   // adapted to the data set, weights loaded
#pragma once
#include <filesystem>
#include <functional>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/registry.h"
#include "runner/io/download.h"
#include "runner/models/network.h"

namespace expctl::models {

struct ModelEntry {
  static constexpr const char* kKind = "model";
  PluginInfo info;
  /// Files the download stage fetches into `models_dir` (pretrained weights), from the model's parameters.
  std::function<std::vector<io::RemoteFile>(const Params&, const std::filesystem::path& models_dir)> files;
  /// A freshly initialised network for a data set with `num_classes` classes and `in_channels` input channels.
  std::function<Network(const Params&, int64_t num_classes, int64_t in_channels)> create;
  /// Optional: renames or replaces tensors of the pretrained file before adapt_pretrained() (old key names, a
  /// head the small-input variant replaces).
  std::function<StateDict(const Params&, const StateDict& pretrained, const Network& fresh)> prepare_pretrained;
};
using ModelRegistry = TypedRegistry<ModelEntry>;

/// The user's own TorchScript file the scenario's model is read from ("" for a built-in model).
std::filesystem::path model_file(const ScenarioConfig& cfg);

/// The scenario's model, adapted to its data set (classes, stem, input channels), with the pretrained weights
/// loaded when `model.pretrained` is true (they must have been downloaded: the error says how). Random
/// initialisation is seeded by runtime.seed.
Network build_model(const ScenarioConfig& cfg);

/// What build_model() does once the pretrained file is read: entry `e`'s network for `params` (a model block),
/// `num_classes` and `in_channels`, with `pretrained` (a torchvision state dict; nullptr = random initialisation)
/// prepared by the entry and adapted (adapt_pretrained()). `source` names the weights in errors.
Network make_model(const ModelEntry& e, const Params& params, int64_t num_classes, int64_t in_channels,
                   const StateDict* pretrained, const std::string& source = "pretrained weights");

}  // namespace expctl::models
