// Fashion-MNIST: the registry entry and the reader of its IDX files (gzip or plain).
#include <zlib.h>

#include <array>
#include <cstring>

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

// ---- IDX (gzip or plain) -----------------------------------------------------------------------------------

// gzopen also reads plain files ("transparent" mode), so one path serves both; for a ".gz" name we insist on
// real gzip data, since a plain file there means a broken download.
class GzFile {
 public:
  explicit GzFile(const fs::path& file) : file_(file) {
    handle_ = gzopen(file.c_str(), "rb");
    if (!handle_) fail(file, std::string("cannot open: ") + std::strerror(errno));
    gzbuffer(handle_, 1 << 17);
  }
  ~GzFile() {
    if (handle_) gzclose(handle_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to `n` bytes; returns how many were read, throwing on a decompression error.
  int64_t read(void* dst, int64_t n) {
    int64_t done = 0;
    auto* out = static_cast<unsigned char*>(dst);
    while (done < n) {
      const auto chunk = static_cast<unsigned>(std::min<int64_t>(n - done, 1 << 30));
      const int got = gzread(handle_, out + done, chunk);
      if (got < 0) error();
      if (got == 0) break;
      done += got;
    }
    // A truncated gzip stream ends without an error from gzread, but leaves one in gzerror.
    int code = Z_OK;
    gzerror(handle_, &code);
    if (code != Z_OK && code != Z_STREAM_END) error();
    return done;
  }
  bool is_plain() { return gzdirect(handle_) != 0; }

 private:
  [[noreturn]] void error() {
    int code = Z_OK;
    const char* raw = gzerror(handle_, &code);
    std::string msg = raw && *raw ? raw : "unknown";
    // zlib prefixes the message with the path, which fail() adds already.
    const std::string prefix = file_.string() + ": ";
    if (msg.compare(0, prefix.size(), prefix) == 0) msg.erase(0, prefix.size());
    fail(file_, "gzip error: " + msg + (code == Z_BUF_ERROR ? " (truncated file)" : ""));
  }
  fs::path file_;
  gzFile handle_ = nullptr;
};

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Reads an IDX file of unsigned bytes with `dims` dimensions; returns the data as uint8 [d0, d1, ...].
torch::Tensor read_idx(const fs::path& file, uint32_t magic, int dims) {
  require_file(file);
  GzFile in(file);
  std::array<unsigned char, 4 + 4 * 3> header{};
  const int64_t header_size = 4 + 4 * dims;
  const int64_t got = in.read(header.data(), header_size);
  if (file.extension() == ".gz" && in.is_plain()) fail(file, "not gzip-compressed data despite the .gz name");
  if (got < 4) fail(file, "truncated: no IDX header");
  const uint32_t found = big_endian(header.data());
  if (found != magic)
    fail(file, "bad magic number " + std::to_string(found) + " (expected " + std::to_string(magic) + ")");
  if (got < header_size) fail(file, "truncated IDX header");
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(big_endian(header.data() + 4 + 4 * d));
    count *= shape.back();
    if (count > (int64_t(1) << 36)) fail(file, "implausible IDX dimensions");
  }
  auto data = torch::empty(shape, torch::kUInt8);
  const int64_t read = in.read(data.data_ptr<uint8_t>(), count);
  if (read < count)
    fail(file,
         "truncated: header announces " + std::to_string(count) + " data bytes, file holds " + std::to_string(read));
  unsigned char extra = 0;
  if (in.read(&extra, 1) != 0) fail(file, "trailing bytes after the " + std::to_string(count) + " announced");
  return data;
}

fs::path idx_path(const fs::path& dir, const std::string& stem) {
  const fs::path gz = dir / (stem + ".gz");
  if (fs::exists(gz)) return gz;
  const fs::path plain = dir / stem;
  if (fs::exists(plain)) return plain;
  fail(gz, "file not found (nor " + plain.filename().string() + ")");
}

}  // namespace

const DatasetInfo& fashion_mnist_info() {
  static const DatasetInfo info{
      /*name=*/"Fashion-MNIST",
      /*channels=*/1,
      /*height=*/28,
      /*width=*/28,
      /*num_classes=*/10,
      {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
      {/*mean=*/{0.2860f}, /*std=*/{0.3530f}}};
  return info;
}
Split read_fashion_mnist(const fs::path& dir, bool train) {
  require_dir(dir, "the Fashion-MNIST IDX files");
  const std::string prefix = train ? "train" : "t10k";
  const fs::path image_file = idx_path(dir, prefix + "-images-idx3-ubyte");
  const fs::path label_file = idx_path(dir, prefix + "-labels-idx1-ubyte");
  const auto& info = fashion_mnist_info();

  auto images = read_idx(image_file, 2051, 3);
  if (images.size(1) != info.height || images.size(2) != info.width)
    fail(image_file, "images are " + std::to_string(images.size(1)) + "x" + std::to_string(images.size(2)) +
                         ", expected " + std::to_string(info.height) + "x" + std::to_string(info.width));
  auto labels = read_idx(label_file, 2049, 1).to(torch::kLong);
  if (labels.size(0) != images.size(0))
    fail(label_file, "count mismatch: " + std::to_string(labels.size(0)) + " labels but " +
                         std::to_string(images.size(0)) + " images in " + image_file.string());
  check_labels(labels, info.num_classes, label_file);

  Split split;
  split.images = images.unsqueeze(1);  // [N, 1, 28, 28]; unsqueeze keeps it contiguous
  split.labels = labels;
  split.num_classes = info.num_classes;
  split.class_names = info.class_names;
  split.norm = info.norm;
  split.source = "Fashion-MNIST " + std::string(train ? "train" : "test") + " split (" + dir.string() + ")";
  return split;
}

namespace {

const std::vector<std::string> kFashionFiles{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

struct FashionMnistOptions {
  std::string url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
  // The official MD5s of the .gz files; Debian recompressed its copy, so its files have other MD5s.
  std::vector<std::string> md5{"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                               "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"};
};

const OptionBinder<FashionMnistOptions>& binder() {
  static const OptionBinder<FashionMnistOptions> b = [] {
    OptionBinder<FashionMnistOptions> b;
    b.add_url(&FashionMnistOptions::url, "url",
              "folder URL of the four .gz IDX files (Debian's copy: file:///usr/share/datasets/fashion-mnist/)");
    b.add(&FashionMnistOptions::md5, "md5",
          "MD5 of train-images, train-labels, t10k-images, t10k-labels (.gz); [] = do not check");
    return b;
  }();
  return b;
}

DatasetEntry fashion_mnist() {
  DatasetEntry e;
  e.info.name = "FashionMNIST";
  e.info.summary = "Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes (gz IDX files)";
  e.info.params = binder().table();
  e.info.params.append(common_binder(2, false).table());
  e.info.check = [](const Params& p, const std::string& prefix, std::vector<Diagnostic>& diags) {
    const auto& md5 = binder().read(p, prefix).md5;
    if (!md5.empty() && md5.size() != kFashionFiles.size())
      diags.push_back({binder().value(p, &FashionMnistOptions::md5).mark,
                       prefix + "." + binder().key(&FashionMnistOptions::md5),
                       "expected 4 checksums (train-images, train-labels, t10k-images, t10k-labels) or [], got " +
                           std::to_string(md5.size())});
  };
  e.describe = [](const Params&, const fs::path&) { return fashion_mnist_info(); };
  e.train_size = 60000;
  e.test_size = 10000;
  e.files = [](const Params& p, const fs::path& dir) {
    const FashionMnistOptions o = binder().read(p, "dataset");
    std::string base = o.url;
    if (!base.empty() && base.back() != '/') base += '/';
    const auto& md5 = o.md5;
    std::vector<io::RemoteFile> out;
    for (size_t i = 0; i < kFashionFiles.size(); ++i)
      out.push_back({base + kFashionFiles[i], dir / "FashionMNIST" / kFashionFiles[i], "", md5.empty() ? "" : md5[i],
                     "", "Fashion-MNIST " + kFashionFiles[i], "dataset.url"});
    return out;
  };
  e.read = [](const Params&, const fs::path& dir, bool train) {
    require_downloaded(dir / "FashionMNIST", "Fashion-MNIST");
    return read_fashion_mnist(dir / "FashionMNIST", train);
  };
  return e;
}

}  // namespace

EXPCTL_REGISTER(DatasetRegistry, fashion_mnist());

}  // namespace expctl::data
