// The data-set registry's shared part: common keys, normalisation choice, and reading a scenario's split.
// Each data set has one file of its own (cifar10.cpp, fashion_mnist.cpp, ...) with its entry and reader.
#include "runner/data/registry.h"

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/io/archive.h"
#include "runner/io/checksum.h"

namespace expctl::data {
namespace fs = std::filesystem;

OptionBinder<CommonOptions> common_binder(int64_t crop_padding, bool hflip) {
  CommonOptions defaults;
  defaults.crop_padding = crop_padding;
  defaults.hflip = hflip;
  OptionBinder<CommonOptions> b(defaults);
  b.add(&CommonOptions::train_subset, "train_subset", "use only this many training images (class-balanced; 0: all)")
      .min(0);
  b.add(&CommonOptions::test_subset, "test_subset", "use only this many test images (class-balanced; 0: all)").min(0);
  b.add(&CommonOptions::crop_padding, "augment.crop_padding",
        "random crop after zero padding by this many pixels (0: off)")
      .min(0)
      .max(64);
  b.add(&CommonOptions::hflip, "augment.hflip", "random horizontal flip (torchvision's RandomHorizontalFlip)");
  b.add_choice(&CommonOptions::normalize, "normalize", {"auto", "dataset", "imagenet", "none"},
               "per-channel normalisation: the data set's statistics, ImageNet's, none (x / 255), or auto (ImageNet's "
               "when the model starts from pretrained weights, else the data set's)");
  return b;
}

const OptionBinder<CommonOptions>& common_reader() {
  static const OptionBinder<CommonOptions> b = common_binder(0, true);
  return b;
}

CommonOptions common_options(const Params& dataset) { return common_reader().read(dataset, "dataset"); }

void require_downloaded(const fs::path& dir, const std::string& what) {
  if (!fs::is_directory(dir))
    throw DataError(dir.string() + ": " + what +
                    " not found; the download stage fetches it (expctl run SCENARIO.yaml --only download)");
}

Normalization imagenet_normalization(int64_t channels) {
  if (channels == 1) return {{0.449f}, {0.226f}};
  return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
}

namespace {

// The statistics `normalize` chooses for a data set whose own are `own`.
Normalization chosen_normalization(const ScenarioConfig& cfg, const Normalization& own, int64_t channels) {
  const std::string how = common_options(cfg.dataset).normalize;
  if (how == "none") return {};
  if (how == "imagenet") return imagenet_normalization(channels);
  if (how == "dataset") return own;
  return cfg.model_pretrained ? imagenet_normalization(channels) : own;
}

}  // namespace

const DatasetEntry& dataset_entry(const ScenarioConfig& cfg) { return *DatasetRegistry::find(cfg.dataset_name()); }

Augmentation augmentation_of(const ScenarioConfig& cfg) {
  const CommonOptions o = common_options(cfg.dataset);
  Augmentation a;
  a.crop_padding = o.crop_padding;
  a.horizontal_flip = o.hflip;
  if (const DatasetEntry& e = dataset_entry(cfg); e.augment) e.augment(cfg.dataset, a);
  return a;
}

int64_t prefetch_of(const ScenarioConfig& cfg) {
  const DatasetEntry& e = dataset_entry(cfg);
  return e.prefetch ? e.prefetch(cfg.dataset) : 0;
}

DatasetInfo dataset_info(const ScenarioConfig& cfg) {
  DatasetInfo info = dataset_entry(cfg).describe(cfg.dataset, Naming(cfg).datasets_dir());
  info.norm = chosen_normalization(cfg, info.norm, info.channels);
  return info;
}

int64_t expected_split_size(const ScenarioConfig& cfg, bool train) {
  const DatasetEntry& e = dataset_entry(cfg);
  const int64_t published = train ? e.train_size : e.test_size;
  const CommonOptions o = common_options(cfg.dataset);
  const int64_t subset = train ? o.train_subset : o.test_subset;
  if (subset > 0 && (published == 0 || subset < published)) return subset;
  return published;
}

Split load_dataset(const ScenarioConfig& cfg, bool train) {
  const DatasetEntry& e = dataset_entry(cfg);
  const fs::path dir = Naming(cfg).datasets_dir();
  // The download stage verified these files, possibly long ago (a rerun skips it): were they changed since?
  for (const auto& f : e.files(cfg.dataset, dir)) {
    if (f.extract_to.empty())
      io::check_verified(f.destination);
    else
      io::check_extracted(f.extract_to);
  }
  Split split = e.read(cfg.dataset, dir, train);
  split.norm = chosen_normalization(cfg, split.norm, split.channels());
  const CommonOptions o = common_options(cfg.dataset);
  const int64_t n = train ? o.train_subset : o.test_subset;
  if (n > 0 && n < split.size()) split = subset(split, n, static_cast<uint64_t>(cfg.run.seed));
  return split;
}

}  // namespace expctl::data
