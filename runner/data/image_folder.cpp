// ImageFolder: a user's images in torchvision's layout (ROOT/<class>/**/*.{jpg,jpeg,png}), from a local folder
// or an archive URL; the registry entry, the folder scan and the decoding source.
//
//     dataset:
//       name: ImageFolder
//       path: /data/imagenette2-160      # holds train/<class>/... and val/<class>/...
//       image_size: 128                  # RandomResizedCrop(128) for training, Resize(146) + CenterCrop(128) else
//
// Classes are the sub-folders' names in sorted order and files are listed as torchvision's make_dataset does
// (sorted os.walk with followlinks=True, sorted names, extension check), so labels equal torchvision's.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/hash.h"
#include "runner/core/json_file.h"
#include "runner/data/image.h"
#include "runner/data/registry.h"

namespace expctl::data {
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kExtensions{".jpg", ".jpeg", ".png"};

bool has_image_extension(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  for (const auto& ext : kExtensions)
    if (lower.size() >= ext.size() && lower.compare(lower.size() - ext.size(), ext.size(), ext) == 0) return true;
  return false;
}

int64_t default_resize(int64_t image_size) { return int64_t(std::lround(double(image_size) * 256.0 / 224.0)); }

// What the scenario's keys say about the folder.
struct FolderOptions {
  fs::path root;  // the folder holding the split folders (or the class folders with split: fraction)
  bool by_folders = true;
  std::string train_dir, test_dir;
  double test_fraction = 0.2;
  uint64_t split_seed = 0;
  int64_t channels = 3, image_size = 224, resize = 256;
  bool skip_bad = false, verify_decode = false;
  std::string load = "auto";
  int64_t memory_limit_mb = 2048, workers = 2;
  int64_t max_pixels = kDefaultMaxPixels;
};

// The keys of an image folder block, as written.
struct FolderKeys {
  std::string path, url, md5, subdir;
  bool by_folders = true;  ///< split: folders | fraction
  std::string train_dir = "train", test_dir = "val";
  double test_fraction = 0.2;
  int64_t split_seed = 0;
  int64_t channels = 3, image_size = 224, resize = 0;
  bool random_resized_crop = true;
  std::vector<std::string> scale{"0.08", "1.0"}, ratio{"0.75", "1.3333333333333333"};
  bool skip_bad = false;  ///< on_bad_image: fail | skip
  int64_t max_pixels = kDefaultMaxPixels;
  bool verify_decode = false;  ///< verify: header | decode
  std::string load = "auto";
  int64_t memory_limit_mb = 2048, workers = 2, prefetch = 2;
};

// The keys the image folder adds to the common ones, in the order `expctl describe` lists them: those before the
// common keys, then those after.
void bind_before_common(OptionBinder<FolderKeys>& b) {
  using K = FolderKeys;
  b.add_path(&K::path, "path", "the local folder (relative to the working directory); or give url");
  b.add_url(&K::url, "url",
            "a .tar(.gz/.xz/.bz2) or .zip archive of the folder, fetched and unpacked by the download "
            "stage into <paths.datasets>/ImageFolder/<archive name>/");
  b.add(&K::md5, "md5", "expected MD5 of the archive ('' = do not check)");
  b.add(&K::subdir, "subdir", "the folder inside `path` or the archive that holds the splits ('' = the top)");
  b.add_enum<bool>(&K::by_folders, "split", {{"folders", true}, {"fraction", false}},
                   "folders: train_dir and test_dir hold the classes; fraction: the top folder holds the classes and "
                   "a seeded test_fraction of each class is the test split");
  b.add(&K::train_dir, "train_dir", "training split folder (split: folders)");
  b.add(&K::test_dir, "test_dir", "test split folder (split: folders)");
  b.add(&K::test_fraction, "test_fraction", "share of each class in the test split (split: fraction)")
      .min(0.0)
      .max(1.0);
  b.add(&K::split_seed, "split_seed",
        "seed of the fraction split (kept apart from runtime.seed so the split never moves)")
      .min(0);
  b.add(&K::channels, "channels", "3: RGB (PIL's convert('RGB')), 1: grey (convert('L'))").min(1).max(3);
  b.add(&K::image_size, "image_size", "side of the square network input (CenterCrop / RandomResizedCrop size)")
      .min(8)
      .max(4096);
  b.add(&K::resize, "resize", "Resize(resize) of the shorter side before the centre crop (0: image_size x 256/224)")
      .min(0)
      .max(8192);
}

void bind_after_common(OptionBinder<FolderKeys>& b) {
  using K = FolderKeys;
  b.add(&K::random_resized_crop, "augment.random_resized_crop",
        "RandomResizedCrop(image_size, scale, ratio) for training");
  b.add(&K::scale, "augment.scale", "RandomResizedCrop area range [lo, hi]");
  b.add(&K::ratio, "augment.ratio", "RandomResizedCrop aspect-ratio range [lo, hi]");
  b.add_enum<bool>(&K::skip_bad, "on_bad_image", {{"fail", false}, {"skip", true}},
                   "an unreadable image (damaged, over max_pixels, not a regular file: a FIFO, a device) or a symlink "
                   "loop: stop naming it, or leave it out and count it");
  b.add(&K::max_pixels, "max_pixels",
        "largest image decoded, in pixels (width x height), checked from the header before decoding: a few bytes "
        "can declare gigabytes (decompression bombs). Default PIL's MAX_IMAGE_PIXELS; a decoded image takes 3 "
        "bytes a pixel on each of `workers` threads. A larger one is a bad image (on_bad_image)")
      .min(1);
  b.add_enum<bool>(&K::verify_decode, "verify", {{"header", false}, {"decode", true}},
                   "check every image when the split is read: its header only (fast), or a full decode");
  b.add_choice(&K::load, "load", {"auto", "memory", "stream"},
               "memory: decode once and hold the split (random crops then come from the held centre crop); stream: "
               "decode each batch on worker threads; auto: memory when it fits memory_limit_mb");
  b.add(&K::memory_limit_mb, "memory_limit_mb", "largest split held in memory under load: auto").min(0);
  b.add(&K::workers, "workers", "decoding threads").min(1).max(256);
  b.add(&K::prefetch, "prefetch", "batches decoded ahead while the model trains (streamed splits)").min(0).max(64);
}

const OptionBinder<FolderKeys>& binder() {
  static const OptionBinder<FolderKeys> b = [] {
    OptionBinder<FolderKeys> b;
    bind_before_common(b);
    bind_after_common(b);
    return b;
  }();
  return b;
}

FolderKeys keys_of(const Params& p) { return binder().read(p, "dataset"); }

// The entry's table: the folder's keys with the common ones in between (as `expctl describe` has always listed them).
ParamTable folder_table() {
  OptionBinder<FolderKeys> before, after;
  bind_before_common(before);
  bind_after_common(after);
  ParamTable t = before.table();
  t.append(common_binder(0, true).table());
  t.append(after.table());
  return t;
}

fs::path archive_folder(const FolderKeys& k, const fs::path& datasets_dir) {
  std::string name = io::url_basename(k.url);
  for (const std::string ext : {".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar", ".zip"})
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      name.resize(name.size() - ext.size());
      break;
    }
  return datasets_dir / "ImageFolder" / name;
}

FolderOptions folder_options(const Params& p, const fs::path& datasets_dir) {
  const FolderKeys k = keys_of(p);
  FolderOptions o;
  o.root = k.url.empty() ? fs::path(k.path) : archive_folder(k, datasets_dir);
  if (!k.subdir.empty()) o.root /= k.subdir;
  o.by_folders = k.by_folders;
  o.train_dir = k.train_dir;
  o.test_dir = k.test_dir;
  o.test_fraction = k.test_fraction;
  o.split_seed = uint64_t(k.split_seed);
  o.channels = k.channels;
  o.image_size = k.image_size;
  o.resize = k.resize > 0 ? k.resize : default_resize(o.image_size);
  o.skip_bad = k.skip_bad;
  o.verify_decode = k.verify_decode;
  o.load = k.load;
  o.memory_limit_mb = k.memory_limit_mb;
  o.workers = k.workers;
  o.max_pixels = k.max_pixels;
  return o;
}

// The folder whose sub-folders are the classes of a split.
fs::path class_root(const FolderOptions& o, bool train) {
  if (!o.by_folders) return o.root;
  return o.root / (train ? o.train_dir : o.test_dir);
}

// Sorted names of the class folders (directories, symlinks to directories included, as os.scandir's is_dir()).
std::vector<std::string> list_classes(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw DataError(dir.string() + ": image folder not found (expected one sub-folder per class)");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory(ec)) names.push_back(entry.path().filename().string());
  if (ec) throw DataError(dir.string() + ": cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  if (names.empty()) throw DataError(dir.string() + ": no class folders (expected one sub-folder per class)");
  return names;
}

struct ScanResult {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  int64_t ignored = 0;                  // files without an image extension
  std::vector<std::string> bad;         // unreadable images (skipped under on_bad_image: skip)
  std::vector<std::string> loops;       // symlinks that lead back to a folder above them
  std::map<std::string, int64_t> folders;  // every folder walked → its modification time (for the scan cache)
  std::string cached_from;              // the cache file the result was read from ("" = scanned now)
};

int64_t mtime_of(const fs::path& dir) {
  std::error_code ec;
  const auto t = fs::last_write_time(dir, ec);
  return ec ? -1 : int64_t(t.time_since_epoch().count());
}

void record_bad(ScanResult& r, const FolderOptions& o, const std::string& what) {
  if (!o.skip_bad) throw DataError(what + " (on_bad_image: skip leaves such files out)");
  r.bad.push_back(what);
}

// Every folder under `dir` as os.walk(followlinks=True) visits it; a symlink back to one of its own ancestors
// (a loop, which os.walk would follow forever) is recorded instead of entered.
void walk(const fs::path& dir, std::vector<fs::path>& ancestors, std::map<std::string, std::vector<std::string>>& files,
          ScanResult& r, const FolderOptions& o) {
  std::error_code ec;
  const fs::path real = fs::canonical(dir, ec);
  if (ec) throw DataError(dir.string() + ": cannot resolve: " + ec.message());
  if (std::find(ancestors.begin(), ancestors.end(), real) != ancestors.end()) {
    record_bad(r, o, dir.string() + ": symlink loop (leads back to " + real.string() + ")");
    r.loops.push_back(dir.string());
    return;
  }
  ancestors.push_back(real);
  r.folders[dir.string()] = mtime_of(dir);
  auto& here = files[dir.string()];
  std::vector<fs::path> subdirs;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory(ec))
      subdirs.push_back(entry.path());
    else if (has_image_extension(entry.path().filename().string()))
      here.push_back(entry.path().filename().string());
    else
      ++r.ignored;
  }
  if (ec) throw DataError(dir.string() + ": cannot list: " + ec.message());
  std::sort(here.begin(), here.end());
  for (const auto& sub : subdirs) walk(sub, ancestors, files, r, o);
  ancestors.pop_back();
}

// Checks one file as `verify` asks; returns the problem ("" when fine).
std::string check_image(const std::string& path, const FolderOptions& o) {
  try {
    if (o.verify_decode)
      read_image(path, o.channels, o.max_pixels);
    else
      read_image_header(path, o.max_pixels);
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::bad_alloc&) {
    // Below max_pixels but still more than this machine has: a bad image like any other, so skip can skip it.
    return path + ": out of memory while decoding (lower dataset.max_pixels or dataset.workers)";
  }
  return "";
}

ScanResult scan(const fs::path& dir, const std::vector<std::string>& classes, const FolderOptions& o) {
  ScanResult r;
  std::vector<std::string> candidates;
  std::vector<int64_t> candidate_labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::map<std::string, std::vector<std::string>> files;  // folder path → its image names (sorted)
    std::vector<fs::path> ancestors;
    walk(dir / classes[c], ancestors, files, r, o);
    int64_t found = 0;
    for (const auto& [folder, names] : files)  // std::map: folders in sorted path order, as sorted(os.walk(...))
      for (const auto& name : names) {
        candidates.push_back((fs::path(folder) / name).string());
        candidate_labels.push_back(int64_t(c));
        ++found;
      }
    if (found == 0)
      throw DataError((dir / classes[c]).string() + ": class folder '" + classes[c] +
                      "' holds no .jpg, .jpeg or .png image (torchvision's ImageFolder refuses it too)");
  }
  // The checks read files: spread them over the worker threads.
  std::vector<std::string> problems(candidates.size());
  parallel_for_each(int64_t(candidates.size()), o.workers,
                    [&](int64_t i) { problems[size_t(i)] = check_image(candidates[size_t(i)], o); });
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (!problems[i].empty()) {
      record_bad(r, o, problems[i]);
      continue;
    }
    r.paths.push_back(candidates[i]);
    r.labels.push_back(candidate_labels[i]);
  }
  return r;
}

// ---- scan cache ----
// Listing and checking every file of a large folder (ImageNet: 1.3 M files) takes minutes, and every stage reads
// both splits. The result is kept in <paths.datasets>/ImageFolder/.scans/<key>.json and reused while no folder
// that was walked has changed (adding, removing or renaming a file or folder changes its folder's time). A file
// rewritten in place is not noticed by this check; decoding it then names it.

fs::path cache_file(const fs::path& datasets_dir, const fs::path& dir, const std::vector<std::string>& classes,
                    const FolderOptions& o) {
  std::string key = fs::absolute(dir).lexically_normal().string() + "\n" + (o.verify_decode ? "decode" : "header") +
                    "\n" + (o.skip_bad ? "skip" : "fail") + "\n" + std::to_string(o.max_pixels);
  for (const auto& c : classes) key += "\n" + c;
  return datasets_dir / "ImageFolder" / ".scans" / (sha256_hex(key).substr(0, 24) + ".json");
}

std::optional<ScanResult> load_cached_scan(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  const std::optional<nlohmann::json> cached = read_sidecar(file);
  if (!cached) return std::nullopt;
  try {
    const nlohmann::json& j = *cached;
    if (j.value("version", 0) != 1) return std::nullopt;
    ScanResult r;
    for (const auto& [folder, time] : j.at("folders").items()) {
      if (mtime_of(folder) != time.get<int64_t>()) return std::nullopt;
      r.folders[folder] = time.get<int64_t>();
    }
    r.paths = j.at("paths").get<std::vector<std::string>>();
    r.labels = j.at("labels").get<std::vector<int64_t>>();
    r.bad = j.at("bad").get<std::vector<std::string>>();
    r.ignored = j.at("ignored").get<int64_t>();
    if (r.paths.size() != r.labels.size()) return std::nullopt;
    r.cached_from = file.string();
    return r;
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged cache is only a slower read: scan again
  }
}

void save_scan(const fs::path& file, const ScanResult& r) {
  nlohmann::json j = {{"version", 1},     {"folders", r.folders}, {"paths", r.paths},
                      {"labels", r.labels}, {"bad", r.bad},       {"ignored", r.ignored}};
  try {
    fs::create_directories(file.parent_path());
    write_file_atomic(file, j.dump(), "image folder scan");
  } catch (const std::exception&) {
    // A read-only data-set folder: every read scans.
  }
}

// Decodes the folder's files on demand: the evaluation transforms (Resize(resize) + CenterCrop(image_size)), or a
// RandomResizedCrop(image_size) of the whole image for training.
class FolderSource : public ImageSource {
 public:
  FolderSource(std::vector<std::string> paths, const FolderOptions& o)
      : paths_(std::move(paths)),
        channels_(o.channels),
        size_(o.image_size),
        resize_(o.resize),
        workers_(o.workers),
        max_pixels_(o.max_pixels) {}
  int64_t size() const override { return int64_t(paths_.size()); }
  int64_t channels() const override { return channels_; }
  int64_t height() const override { return size_; }
  int64_t width() const override { return size_; }
  int64_t workers() const override { return workers_; }
  std::string path(int64_t i) const override { return paths_.at(size_t(i)); }

  void load(int64_t i, uint8_t* out, const RandomResizedCrop* rrc, uint64_t seed) const override {
    Image img = read_image(paths_.at(size_t(i)), channels_, max_pixels_);
    if (rrc && rrc->enabled) {
      const CropWindow win = random_resized_crop_window(img.height, img.width, rrc->scale_lo, rrc->scale_hi,
                                                        rrc->ratio_lo, rrc->ratio_hi, seed);
      img = resize(crop(img, win.top, win.left, win.height, win.width), size_, size_);
    } else {
      const auto [h, w] = resized_shape(img.height, img.width, resize_);
      img = center_crop(resize(img, h, w), size_, size_);
    }
    to_planes(img, out);
  }

 private:
  std::vector<std::string> paths_;
  int64_t channels_, size_, resize_, workers_, max_pixels_;
};

// A seeded stratified split of one folder: per class, round(fraction × count) samples go to the test split.
std::vector<int64_t> fraction_split(const std::vector<int64_t>& labels, int64_t classes, double fraction, uint64_t seed,
                                    bool train) {
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  for (size_t i = 0; i < labels.size(); ++i) by_class[size_t(labels[i])].push_back(int64_t(i));
  std::vector<int64_t> out;
  for (int64_t c = 0; c < classes; ++c) {
    auto& members = by_class[size_t(c)];
    auto gen = at::detail::createCPUGenerator(seed * 1000003u + uint64_t(c));
    auto perm = torch::randperm(int64_t(members.size()), gen, torch::kLong);
    const auto n_test = int64_t(std::lround(fraction * double(members.size())));
    for (int64_t k = 0; k < int64_t(members.size()); ++k)
      if ((k < n_test) != train) out.push_back(members[size_t(perm[k].item<int64_t>())]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Split read_folder(const Params& p, const fs::path& datasets_dir, bool train) {
  const FolderOptions o = folder_options(p, datasets_dir);
  if (!keys_of(p).url.empty()) require_downloaded(o.root, "image folder");
  // Labels always follow the training folder's classes, so that both splits agree.
  const std::vector<std::string> classes = list_classes(class_root(o, true));
  const fs::path dir = class_root(o, train);
  if (o.by_folders && !train) {
    const std::vector<std::string> here = list_classes(dir);
    for (const auto& name : here)
      if (!std::binary_search(classes.begin(), classes.end(), name))
        throw DataError((dir / name).string() + ": class '" + name + "' is not a class of the training folder " +
                        class_root(o, true).string());
    for (const auto& name : classes)
      if (!std::binary_search(here.begin(), here.end(), name))
        throw DataError(dir.string() + ": class folder '" + name + "' of the training folder is missing");
  }
  const fs::path cache = cache_file(datasets_dir, dir, classes, o);
  std::optional<ScanResult> cached = load_cached_scan(cache);
  ScanResult r = cached ? std::move(*cached) : scan(dir, classes, o);
  if (!cached) save_scan(cache, r);
  std::vector<int64_t> keep(r.paths.size());
  for (size_t i = 0; i < keep.size(); ++i) keep[i] = int64_t(i);
  if (!o.by_folders) keep = fraction_split(r.labels, int64_t(classes.size()), o.test_fraction, o.split_seed, train);

  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  for (int64_t i : keep) {
    paths.push_back(r.paths[size_t(i)]);
    labels.push_back(r.labels[size_t(i)]);
  }
  if (paths.empty()) throw DataError(dir.string() + ": no image in the " + (train ? "train" : "test") + " split");

  Split split;
  split.labels = torch::tensor(labels, torch::kLong);
  split.num_classes = int64_t(classes.size());
  split.class_names = classes;
  split.norm = imagenet_normalization(o.channels);
  auto source = std::make_shared<FolderSource>(paths, o);
  std::ostringstream what;
  what << "ImageFolder " << (train ? "train" : "test") << " split (" << dir.string();
  if (!o.by_folders)
    what << ", " << (train ? "all but " : "") << "a seeded " << o.test_fraction << " of each class";
  what << "): " << paths.size() << " images, " << classes.size() << " classes";
  if (!r.bad.empty()) what << ", " << r.bad.size() << " unreadable skipped (first: " << r.bad.front() << ")";
  if (r.ignored) what << ", " << r.ignored << " non-image files ignored";
  if (!r.cached_from.empty()) what << ", file list from " << r.cached_from;

  const double bytes = double(paths.size()) * double(o.channels * o.image_size * o.image_size);
  const bool memory = o.load == "memory" || (o.load == "auto" && bytes <= double(o.memory_limit_mb) * 1048576.0);
  if (memory) {
    std::vector<int64_t> all(paths.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    split.images = decode_images(*source, all);
    what << ", held in memory";
  } else {
    split.stream = source;
    split.stream_index = torch::arange(int64_t(paths.size()), torch::kLong);
    what << ", decoded on " << o.workers << " threads as needed";
  }
  split.source = what.str();
  return split;
}

// The rules across keys: exactly one of path and url, two ordered positive numbers for scale and ratio, and 1 or 3
// channels.
void check_folder_keys(const Params& p, const std::string& prefix, std::vector<Diagnostic>& diags) {
  const auto& b = binder();
  const FolderKeys k = b.read(p, prefix);
  const bool has_path = !k.path.empty(), has_url = !k.url.empty();
  if (has_path == has_url) {
    // Neither given has no position of its own: point at the first key the block does give.
    Mark where = has_path ? b.value(p, &FolderKeys::path).mark : b.value(p, &FolderKeys::url).mark;
    for (const auto& [key, value] : p.items())
      if (!where.file && value.mark.file) where = value.mark;
    diags.push_back(
        {where, prefix + "." + b.key(&FolderKeys::path), "give exactly one of path (a local folder) and url"});
  }
  for (auto field : {&FolderKeys::scale, &FolderKeys::ratio}) {
    const auto& v = k.*field;
    std::string why;
    try {
      if (v.size() != 2)
        why = "expected two numbers [lo, hi]";
      else if (!(std::stod(v[0]) > 0) || std::stod(v[0]) > std::stod(v[1]))
        why = "expected 0 < lo <= hi";
    } catch (const std::exception&) {
      why = "expected two numbers [lo, hi]";
    }
    if (!why.empty()) diags.push_back({b.value(p, field).mark, prefix + "." + b.key(field), why});
  }
  if (k.channels == 2)
    diags.push_back({b.value(p, &FolderKeys::channels).mark, prefix + "." + b.key(&FolderKeys::channels),
                     "expected 1 (grey) or 3 (RGB), got 2"});
}

DatasetEntry image_folder() {
  DatasetEntry e;
  e.info.name = "ImageFolder";
  e.info.summary =
      "your own images as torchvision's ImageFolder reads them: ROOT/train/<class>/*.jpg|png and ROOT/val/<class>/..., "
      "from a local folder or a tar/zip URL";
  e.info.params = folder_table();
  e.info.check = check_folder_keys;
  e.augment = [](const Params& p, Augmentation& a) {
    const FolderKeys k = keys_of(p);
    auto& c = a.resized_crop;
    c.enabled = k.random_resized_crop;
    c.scale_lo = std::stod(k.scale.at(0));
    c.scale_hi = std::stod(k.scale.at(1));
    c.ratio_lo = std::stod(k.ratio.at(0));
    c.ratio_hi = std::stod(k.ratio.at(1));
  };
  e.prefetch = [](const Params& p) { return keys_of(p).prefetch; };
  e.describe = [](const Params& p, const fs::path& datasets_dir) {
    const FolderOptions o = folder_options(p, datasets_dir);
    DatasetInfo info;
    info.name = "ImageFolder " + o.root.string();
    info.channels = o.channels;
    info.height = info.width = o.image_size;
    info.class_names = list_classes(class_root(o, true));
    info.num_classes = int64_t(info.class_names.size());
    info.norm = imagenet_normalization(o.channels);
    return info;
  };
  e.files = [](const Params& p, const fs::path& dir) {
    std::vector<io::RemoteFile> out;
    const FolderKeys k = keys_of(p);
    if (k.url.empty()) return out;
    const FolderOptions o = folder_options(p, dir);
    io::RemoteFile f;
    f.url = k.url;
    f.destination = dir / "ImageFolder" / io::url_basename(k.url);
    f.md5 = k.md5;
    f.extract_to = archive_folder(k, dir);
    f.what = "image folder archive";
    f.config_key = "dataset.url";
    const std::string subdir = k.subdir;
    f.check_content = [subdir, o](const fs::path& root) {
      FolderOptions here = o;
      here.root = subdir.empty() ? root : root / subdir;
      list_classes(class_root(here, true));
      if (here.by_folders) list_classes(class_root(here, false));
    };
    out.push_back(f);
    return out;
  };
  e.read = [](const Params& p, const fs::path& dir, bool train) { return read_folder(p, dir, train); };
  return e;
}

}  // namespace

EXPCTL_REGISTER(DatasetRegistry, image_folder());

}  // namespace expctl::data
