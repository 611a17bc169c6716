// CIFAR-100, binary version: the registry entry and the reader. One file per split (train.bin, test.bin) of
// 3074-byte records: coarse label, fine label, then the R, G, B planes of 32×32. Fine labels (100 classes) by
// default, the 20 superclasses with `labels: coarse`.
#include "runner/core/error.h"
#include "runner/data/file_checks.h"
#include "runner/data/registry.h"

namespace expctl::data {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kPixels = 3 * 32 * 32;
constexpr int64_t kRecord = 2 + kPixels;

const std::vector<std::string>& fine_names() {
  static const std::vector<std::string> names{
      "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
      "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
      "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
      "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
      "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
      "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
      "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
      "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
      "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
      "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"};
  return names;
}

const std::vector<std::string>& coarse_names() {
  static const std::vector<std::string> names{"aquatic_mammals",
                                              "fish",
                                              "flowers",
                                              "food_containers",
                                              "fruit_and_vegetables",
                                              "household_electrical_devices",
                                              "household_furniture",
                                              "insects",
                                              "large_carnivores",
                                              "large_man-made_outdoor_things",
                                              "large_natural_outdoor_scenes",
                                              "large_omnivores_and_herbivores",
                                              "medium_mammals",
                                              "non-insect_invertebrates",
                                              "people",
                                              "reptiles",
                                              "small_mammals",
                                              "trees",
                                              "vehicles_1",
                                              "vehicles_2"};
  return names;
}

// Names from the archive's label-name file when present (it must then hold them all), else the published ones.
std::vector<std::string> class_names(const fs::path& dir, bool coarse) {
  const fs::path file = dir / (coarse ? "coarse_label_names.txt" : "fine_label_names.txt");
  const auto& defaults = coarse ? coarse_names() : fine_names();
  if (!fs::exists(file)) return defaults;
  return detail::read_name_lines(file, defaults.size());
}

}  // namespace

DatasetInfo cifar100_info(bool coarse) {
  DatasetInfo info;
  info.name = coarse ? "CIFAR-100 (20 superclasses)" : "CIFAR-100";
  info.channels = 3;
  info.height = info.width = 32;
  info.class_names = coarse ? coarse_names() : fine_names();
  info.num_classes = int64_t(info.class_names.size());
  info.norm = {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  return info;
}

Split read_cifar100(const fs::path& dir, bool train, bool coarse) {
  detail::require_dir(dir, "the CIFAR-100 binary folder cifar-100-binary/");
  const fs::path file = dir / (train ? "train.bin" : "test.bin");
  auto records = detail::read_records(file, kRecord, "CIFAR-100 binary");
  const DatasetInfo info = cifar100_info(coarse);
  // Both labels are checked, whichever is used: a wrong one means a broken file.
  detail::check_labels(records.select(1, 0).to(torch::kLong), 20, file);
  detail::check_labels(records.select(1, 1).to(torch::kLong), 100, file);
  Split split;
  split.images = records.narrow(1, 2, kPixels).reshape({-1, 3, 32, 32}).contiguous();
  split.labels = records.select(1, coarse ? 0 : 1).to(torch::kLong);
  split.num_classes = info.num_classes;
  split.class_names = class_names(dir, coarse);
  split.norm = info.norm;
  split.source = std::string("CIFAR-100 ") + (train ? "train" : "test") + " split, " + (coarse ? "coarse" : "fine") +
                 " labels (" + dir.string() + ")";
  return split;
}

namespace {

struct Cifar100Options {
  std::string url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
  std::string md5 = "03b5dce01913d631647c71ecec9e9cb8";
  bool coarse = false;  ///< labels: the 20 superclasses
};

const OptionBinder<Cifar100Options>& binder() {
  static const OptionBinder<Cifar100Options> b = [] {
    OptionBinder<Cifar100Options> b;
    b.add_url(&Cifar100Options::url, "url", "the binary tarball");
    b.add(&Cifar100Options::md5, "md5", "expected MD5 of the tarball ('' = do not check)");
    b.add_enum<bool>(&Cifar100Options::coarse, "labels", {{"fine", false}, {"coarse", true}},
                     "fine: the 100 classes; coarse: the 20 superclasses");
    return b;
  }();
  return b;
}

Cifar100Options options_of(const Params& p) { return binder().read(p, "dataset"); }

DatasetEntry cifar100() {
  DatasetEntry e;
  e.info.name = "CIFAR100";
  e.info.summary = "CIFAR-100, binary version: 50,000 train / 10,000 test 32x32 colour images, 100 classes "
                   "(or 20 superclasses)";
  e.info.params = binder().table();
  e.info.params.append(common_binder(4, true).table());
  e.describe = [](const Params& p, const fs::path&) { return cifar100_info(options_of(p).coarse); };
  e.train_size = 50000;
  e.test_size = 10000;
  e.files = [](const Params& p, const fs::path& dir) {
    const Cifar100Options o = options_of(p);
    return std::vector<io::RemoteFile>{{o.url, dir / io::url_basename(o.url), "", o.md5, dir / "CIFAR100",
                                        "CIFAR-100 binary tarball", "dataset.url", [](const fs::path& root) {
                                          for (bool train : {true, false})
                                            read_cifar100(root / "cifar-100-binary", train, false);
                                          class_names(root / "cifar-100-binary", true);
                                        }}};
  };
  e.read = [](const Params& p, const fs::path& dir, bool train) {
    const fs::path folder = dir / "CIFAR100" / "cifar-100-binary";
    require_downloaded(folder, "CIFAR-100");
    return read_cifar100(folder, train, options_of(p).coarse);
  };
  return e;
}

}  // namespace

EXPCTL_REGISTER(DatasetRegistry, cifar100());

}  // namespace expctl::data
