// The model registry: what a model downloads, and how it is built for a data set.
//
//     model: {name: ResNet18, pretrained: true, stem: cifar}
//     models::ResNet net = models::build_model(cfg);   // adapted to the data set, weights loaded
#pragma once
#include <filesystem>
#include <functional>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/registry.h"
#include "runner/io/download.h"
#include "runner/models/resnet.h"

namespace expctl::models {

struct ModelEntry {
  static constexpr const char* kKind = "model";
  PluginInfo info;
  /// Files the download stage fetches into `models_dir` (pretrained weights), from the model's parameters.
  std::function<std::vector<io::RemoteFile>(const Params&, const std::filesystem::path& models_dir)> files;
  /// The architecture for a data set with `num_classes` classes and `in_channels` input channels.
  std::function<ResNetSpec(const Params&, int64_t num_classes, int64_t in_channels)> spec;
};
using ModelRegistry = TypedRegistry<ModelEntry>;

/// The scenario's model, adapted to its data set (classes, stem, input channels), with the pretrained weights
/// loaded when `model.pretrained` is true (they must have been downloaded: the error says how). Random
/// initialisation is seeded by runtime.seed.
ResNet build_model(const ScenarioConfig& cfg);

}  // namespace expctl::models
