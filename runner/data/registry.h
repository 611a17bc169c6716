// The data-set registry: what each data set downloads, and how a split is read from it.
//
//     dataset: {name: CIFAR10, test_subset: 1000}
//     data::Split test = data::load_dataset(cfg, /*train=*/false);
#pragma once
#include <filesystem>
#include <functional>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/options_binder.h"
#include "runner/core/registry.h"
#include "runner/data/loader.h"
#include "runner/data/split.h"
#include "runner/io/download.h"

namespace expctl::data {

/// The keys every data set has, typed (each data set gives its own augmentation defaults: common_binder()).
struct CommonOptions {
  int64_t train_subset = 0;        ///< 0: all
  int64_t test_subset = 0;         ///< 0: all
  int64_t crop_padding = 0;        ///< augment.crop_padding
  bool hflip = true;               ///< augment.hflip
  std::string normalize = "auto";  ///< auto | dataset | imagenet | none
};

struct DatasetEntry {
  static constexpr const char* kKind = "dataset";
  PluginInfo info;
  /// Shapes, classes and normalisation, known without reading the images (an image folder lists its class
  /// folders under `datasets_dir` or its `path`).
  std::function<DatasetInfo(const Params&, const std::filesystem::path& datasets_dir)> describe;
  /// Images in the published train and test splits (0: unknown), so that a count asked of a split is checked
  /// when the scenario is loaded, before anything is read.
  int64_t train_size = 0, test_size = 0;
  /// The files the download stage fetches (and archives it unpacks) into `datasets_dir`.
  std::function<std::vector<io::RemoteFile>(const Params&, const std::filesystem::path& datasets_dir)> files;
  /// Reads a whole split from what the download stage left in `datasets_dir`.
  std::function<Split(const Params&, const std::filesystem::path& datasets_dir, bool train)> read;
  /// Optional: the training augmentation beyond the common keys (an image folder's RandomResizedCrop).
  std::function<void(const Params&, Augmentation&)> augment;
  /// Optional: batches a loader decodes ahead on a streamed split (unset: 0, the split is held in memory).
  std::function<int64_t(const Params&)> prefetch;
};
using DatasetRegistry = TypedRegistry<DatasetEntry>;

/// The scenario's data set entry.
const DatasetEntry& dataset_entry(const ScenarioConfig& cfg);

/// The scenario's data set as the model and the report see it: the entry's description with the normalisation
/// the `normalize` key chooses (see load_dataset()).
DatasetInfo dataset_info(const ScenarioConfig& cfg);

/// ImageNet's per-channel mean and std (what torchvision's pretrained weights expect); for one channel, the
/// means of the three.
Normalization imagenet_normalization(int64_t channels);

/// The training augmentation the data set's `augment.*` keys ask for.
Augmentation augmentation_of(const ScenarioConfig& cfg);
/// Batches a loader decodes ahead on a streamed split (`prefetch`; 0 for data sets held in memory).
int64_t prefetch_of(const ScenarioConfig& cfg);
/// The common keys of a validated data set block.
CommonOptions common_options(const Params& dataset);
/// The binder that reads them (and names their keys, for diagnostics pointing at a value).
const OptionBinder<CommonOptions>& common_reader();

// ---- for the data-set files -------------------------------------------------------------------------------

/// The keys every data set has (train_subset, test_subset, augment.crop_padding, augment.hflip, normalize), with
/// this data set's augmentation defaults; its table() joins the entry's parameters.
OptionBinder<CommonOptions> common_binder(int64_t crop_padding, bool hflip);
/// Throws DataError "<dir>: <what> not found; the download stage fetches it (...)" unless `dir` is a directory.
void require_downloaded(const std::filesystem::path& dir, const std::string& what);

/// How many images load_dataset(cfg, train) returns as far as is known before reading: the entry's published split
/// size, or `train_subset`/`test_subset` when smaller; 0 when the entry states no size and no subset is asked for.
int64_t expected_split_size(const ScenarioConfig& cfg, bool train);

/// Reads the scenario's train or test split, with `train_subset`/`test_subset` applied (class-balanced,
/// seeded by runtime.seed) and the normalisation `normalize` chooses: `dataset` (the data set's own statistics),
/// `imagenet`, `none` (pixels / 255), or `auto` (ImageNet's when the model starts from pretrained weights, else
/// the data set's). A missing or malformed file is a DataError naming it (and, when the data set
/// was never downloaded, the command that fetches it).
Split load_dataset(const ScenarioConfig& cfg, bool train);

}  // namespace expctl::data
