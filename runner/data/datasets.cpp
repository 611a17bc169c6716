// Built-in data sets: CIFAR-10 (binary tarball) and Fashion-MNIST (four gz IDX files).
#include "runner/data/datasets.h"

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/io/archive.h"
#include "runner/io/checksum.h"

namespace expctl::data {
namespace fs = std::filesystem;

namespace {

void add_common(ParamTable& t, int64_t crop_padding, bool hflip) {
  t.add_int("train_subset", 0, "use only this many training images (class-balanced; 0: all)").min(0);
  t.add_int("test_subset", 0, "use only this many test images (class-balanced; 0: all)").min(0);
  t.add_int("augment.crop_padding", crop_padding, "random crop after zero padding by this many pixels (0: off)")
      .min(0)
      .max(64);
  t.add_bool("augment.hflip", hflip, "random horizontal flip");
}

// What the reader needs is missing: say which command fetches it.
void require_dir(const fs::path& dir, const std::string& what) {
  if (!fs::is_directory(dir))
    throw DataError(dir.string() + ": " + what +
                    " not found; the download stage fetches it (expctl run SCENARIO.yaml --only download)");
}

DatasetEntry cifar10() {
  DatasetEntry e;
  e.info.name = "CIFAR10";
  e.info.summary = "CIFAR-10, binary version: 50,000 train / 10,000 test 32x32 colour images, 10 classes";
  ParamTable& t = e.info.params;
  t.add_url("url", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "the binary tarball");
  t.add_string("md5", "c32a1d4ab5d03f1284b67883e8d87530", "expected MD5 of the tarball ('' = do not check)");
  add_common(t, 4, true);
  e.describe = cifar10_info;
  e.train_size = 50000;
  e.test_size = 10000;
  e.files = [](const Params& p, const fs::path& dir) {
    const std::string& url = p.get_string("url");
    return std::vector<io::RemoteFile>{{url, dir / io::url_basename(url), "", p.get_string("md5"), dir / "CIFAR10",
                                        "CIFAR-10 binary tarball", "dataset.url",
                                        [](const fs::path& root) { check_cifar10(root / "cifar-10-batches-bin"); }}};
  };
  e.read = [](const Params&, const fs::path& dir, bool train) {
    fs::path batches = dir / "CIFAR10" / "cifar-10-batches-bin";
    require_dir(batches, "CIFAR-10");
    return read_cifar10(batches, train);
  };
  return e;
}

const std::vector<std::string> kFashionFiles{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

DatasetEntry fashion_mnist() {
  DatasetEntry e;
  e.info.name = "FashionMNIST";
  e.info.summary = "Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes (gz IDX files)";
  ParamTable& t = e.info.params;
  t.add_url("url", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "folder URL of the four .gz IDX files (Debian's copy: file:///usr/share/datasets/fashion-mnist/)");
  // The official MD5s of the .gz files; Debian recompressed its copy, so its files have other MD5s.
  t.add_list("md5",
             {"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
              "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"},
             "MD5 of train-images, train-labels, t10k-images, t10k-labels (.gz); [] = do not check");
  add_common(t, 2, false);
  e.info.check = [](const Params& p, const std::string& prefix, std::vector<Diagnostic>& diags) {
    const auto& md5 = p.get_list("md5");
    if (!md5.empty() && md5.size() != kFashionFiles.size())
      diags.push_back({p.at("md5").mark, prefix + ".md5",
                       "expected 4 checksums (train-images, train-labels, t10k-images, t10k-labels) or [], got " +
                           std::to_string(md5.size())});
  };
  e.describe = fashion_mnist_info;
  e.train_size = 60000;
  e.test_size = 10000;
  e.files = [](const Params& p, const fs::path& dir) {
    std::string base = p.get_string("url");
    if (!base.empty() && base.back() != '/') base += '/';
    const auto& md5 = p.get_list("md5");
    std::vector<io::RemoteFile> out;
    for (size_t i = 0; i < kFashionFiles.size(); ++i)
      out.push_back({base + kFashionFiles[i], dir / "FashionMNIST" / kFashionFiles[i], "", md5.empty() ? "" : md5[i],
                     "", "Fashion-MNIST " + kFashionFiles[i], "dataset.url"});
    return out;
  };
  e.read = [](const Params&, const fs::path& dir, bool train) {
    require_dir(dir / "FashionMNIST", "Fashion-MNIST");
    return read_fashion_mnist(dir / "FashionMNIST", train);
  };
  return e;
}

}  // namespace

const DatasetEntry& dataset_entry(const ScenarioConfig& cfg) { return *DatasetRegistry::find(cfg.dataset_name()); }

int64_t expected_split_size(const ScenarioConfig& cfg, bool train) {
  const DatasetEntry& e = dataset_entry(cfg);
  const int64_t published = train ? e.train_size : e.test_size;
  const int64_t subset = cfg.dataset.get_int(train ? "train_subset" : "test_subset");
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
  int64_t n = cfg.dataset.get_int(train ? "train_subset" : "test_subset");
  if (n > 0 && n < split.size()) split = subset(split, n, static_cast<uint64_t>(cfg.runtime.get_int("seed")));
  return split;
}

EXPCTL_REGISTER(DatasetRegistry, cifar10());
EXPCTL_REGISTER(DatasetRegistry, fashion_mnist());

}  // namespace expctl::data
