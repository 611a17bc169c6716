// CIFAR-10, binary version: the registry entry and the reader. Files are read straight into tensors and
// reshaped, so there is no per-sample loop; every check names the file so that a broken download is easy to find.
#include "runner/core/error.h"
#include "runner/data/file_checks.h"
#include "runner/data/registry.h"

namespace expctl::data {
namespace fs = std::filesystem;
using detail::check_labels;
using detail::fail;
using detail::require_dir;
using detail::require_file;

namespace {

constexpr int64_t kCifarPixels = 3 * 32 * 32;
constexpr int64_t kCifarRecord = 1 + kCifarPixels;

std::vector<std::string> read_cifar_names(const fs::path& dir) {
  const fs::path file = dir / "batches.meta.txt";
  if (!fs::exists(file)) return cifar10_info().class_names;
  return detail::read_name_lines(file, 10);
}

}  // namespace


// The statistics are the commonly published ones for each training split; compute_normalization() reproduces them
// (a test checks Fashion-MNIST's against the real files).
const DatasetInfo& cifar10_info() {
  static const DatasetInfo info{
      /*name=*/"CIFAR-10",
      /*channels=*/3,
      /*height=*/32,
      /*width=*/32,
      /*num_classes=*/10,
      {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"},
      {/*mean=*/{0.4914f, 0.4822f, 0.4465f}, /*std=*/{0.2470f, 0.2435f, 0.2616f}}};
  return info;
}

namespace {

// The batch files of a split; every one is checked to exist before any is read, so a half-unpacked folder
// fails fast with the missing name.
std::vector<fs::path> cifar_files(const fs::path& batches_dir, bool train) {
  require_dir(batches_dir, "the CIFAR-10 binary folder cifar-10-batches-bin/");
  std::vector<fs::path> files;
  if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back(batches_dir / ("data_batch_" + std::to_string(i) + ".bin"));
  } else {
    files.push_back(batches_dir / "test_batch.bin");
  }
  for (const auto& f : files) require_file(f);
  return files;
}

// One batch file, checked: whole records, labels in range. Returns {images [N, 3, 32, 32], labels [N]}.
std::pair<torch::Tensor, torch::Tensor> read_cifar_batch(const fs::path& file) {
  auto records = detail::read_records(file, kCifarRecord, "CIFAR-10 binary");
  auto labels = records.select(1, 0).to(torch::kLong);
  check_labels(labels, cifar10_info().num_classes, file);
  // The 3072 bytes are already the R, G, B planes in row-major order, i.e. [C, H, W].
  return {records.narrow(1, 1, kCifarPixels).reshape({-1, 3, 32, 32}), labels};
}

}  // namespace

void check_cifar10(const fs::path& batches_dir) {
  // The release holds 10,000 records in each of its six batch files. Smaller batches of equal size are accepted
  // (synthetic stand-ins of the same layout, the tests' fixtures); a larger or uneven one is not CIFAR-10.
  constexpr int64_t kRecordsPerBatch = 10000;
  int64_t first = -1;
  fs::path first_file;
  for (bool train : {true, false})
    for (const auto& f : cifar_files(batches_dir, train)) {
      const int64_t n = read_cifar_batch(f).second.numel();
      if (n > kRecordsPerBatch)
        fail(f, std::to_string(n) + " records; a CIFAR-10 batch file holds " + std::to_string(kRecordsPerBatch));
      if (first >= 0 && n != first)
        fail(f, std::to_string(n) + " records, but " + first_file.filename().string() + " holds " +
                    std::to_string(first) + "; the batch files of CIFAR-10 hold equally many");
      if (first < 0) first = n, first_file = f;
    }
  // The reader falls back to the built-in names without it; the release always has it.
  require_file(batches_dir / "batches.meta.txt");
  read_cifar_names(batches_dir);
}

Split read_cifar10(const fs::path& batches_dir, bool train) {
  const auto& info = cifar10_info();
  std::vector<torch::Tensor> images, labels;
  for (const auto& f : cifar_files(batches_dir, train)) {
    auto [i, l] = read_cifar_batch(f);
    images.push_back(i);
    labels.push_back(l);
  }
  Split split;
  split.images = torch::cat(images).contiguous();
  split.labels = torch::cat(labels);
  split.num_classes = info.num_classes;
  split.class_names = read_cifar_names(batches_dir);
  split.norm = info.norm;
  split.source = "CIFAR-10 " + std::string(train ? "train" : "test") + " split (" + batches_dir.string() + ")";
  return split;
}

namespace {

struct Cifar10Options {
  std::string url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
  std::string md5 = "c32a1d4ab5d03f1284b67883e8d87530";
};

const OptionBinder<Cifar10Options>& binder() {
  static const OptionBinder<Cifar10Options> b = [] {
    OptionBinder<Cifar10Options> b;
    b.add_url(&Cifar10Options::url, "url", "the binary tarball");
    b.add(&Cifar10Options::md5, "md5", "expected MD5 of the tarball ('' = do not check)");
    return b;
  }();
  return b;
}

DatasetEntry cifar10() {
  DatasetEntry e;
  e.info.name = "CIFAR10";
  e.info.summary = "CIFAR-10, binary version: 50,000 train / 10,000 test 32x32 colour images, 10 classes";
  e.info.params = binder().table();
  e.info.params.append(common_binder(4, true).table());
  e.describe = [](const Params&, const fs::path&) { return cifar10_info(); };
  e.train_size = 50000;
  e.test_size = 10000;
  e.files = [](const Params& p, const fs::path& dir) {
    const Cifar10Options o = binder().read(p, "dataset");
    return std::vector<io::RemoteFile>{{o.url, dir / io::url_basename(o.url), "", o.md5, dir / "CIFAR10",
                                        "CIFAR-10 binary tarball", "dataset.url",
                                        [](const fs::path& root) { check_cifar10(root / "cifar-10-batches-bin"); }}};
  };
  e.read = [](const Params&, const fs::path& dir, bool train) {
    fs::path batches = dir / "CIFAR10" / "cifar-10-batches-bin";
    require_downloaded(batches, "CIFAR-10");
    return read_cifar10(batches, train);
  };
  return e;
}

}  // namespace

EXPCTL_REGISTER(DatasetRegistry, cifar10());

}  // namespace expctl::data
