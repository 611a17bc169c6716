// Readers of CIFAR-10 binary and Fashion-MNIST IDX files. Files are read straight into torch tensors and
// reshaped, so there is no per-sample loop; every check names the file so that a broken download is easy to find.
#include <zlib.h>

#include <array>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "runner/core/error.h"
#include "runner/data/dataset.h"

namespace expctl::data {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const fs::path& file, const std::string& what) { throw DataError(file.string() + ": " + what); }

void require_file(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) fail(file, fs::exists(file, ec) ? "not a regular file" : "file not found");
}

void require_dir(const fs::path& dir, const std::string& expected) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, "directory not found (expected " + expected + ")");
}

// Labels are checked in one vectorised pass; only on failure do we look for the first offender to report it.
void check_labels(const torch::Tensor& labels, int64_t num_classes, const fs::path& file) {
  if (labels.numel() == 0) return;
  auto bad = (labels < 0).logical_or(labels >= num_classes);
  if (!bad.any().item<bool>()) return;
  int64_t i = bad.nonzero()[0][0].item<int64_t>();
  fail(file, "record " + std::to_string(i) + ": label " + std::to_string(labels[i].item<int64_t>()) +
                 " out of range [0, " + std::to_string(num_classes - 1) + "]");
}

// ---- CIFAR-10 ----------------------------------------------------------------------------------------------

constexpr int64_t kCifarPixels = 3 * 32 * 32;
constexpr int64_t kCifarRecord = 1 + kCifarPixels;

torch::Tensor read_cifar_file(const fs::path& file) {
  require_file(file);
  const auto bytes = static_cast<int64_t>(fs::file_size(file));
  if (bytes == 0) fail(file, "empty file (expected records of " + std::to_string(kCifarRecord) + " bytes)");
  if (bytes % kCifarRecord != 0)
    fail(file, "size " + std::to_string(bytes) + " bytes is not a multiple of the record length " +
                   std::to_string(kCifarRecord) + " (truncated or not a CIFAR-10 binary file)");
  auto records = torch::empty({bytes / kCifarRecord, kCifarRecord}, torch::kUInt8);
  std::ifstream in(file, std::ios::binary);
  if (!in || !in.read(reinterpret_cast<char*>(records.data_ptr<uint8_t>()), bytes)) fail(file, "read error");
  return records;
}

std::vector<std::string> read_cifar_names(const fs::path& dir) {
  const fs::path file = dir / "batches.meta.txt";
  if (!fs::exists(file)) return cifar10_info().class_names;
  std::ifstream in(file);
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.size() != 10) fail(file, "expected 10 class names, found " + std::to_string(names.size()));
  return names;
}

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

// ---- public ------------------------------------------------------------------------------------------------

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

Split Split::to(const torch::Device& device) const {
  Split out = *this;
  out.images = images.to(device);
  out.labels = labels.to(device);
  return out;
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
  auto records = read_cifar_file(file);
  auto labels = records.select(1, 0).to(torch::kLong);
  check_labels(labels, cifar10_info().num_classes, file);
  // The 3072 bytes are already the R, G, B planes in row-major order, i.e. [C, H, W].
  return {records.narrow(1, 1, kCifarPixels).reshape({-1, 3, 32, 32}), labels};
}

}  // namespace

void check_cifar10(const fs::path& batches_dir) {
  for (bool train : {true, false})
    for (const auto& f : cifar_files(batches_dir, train)) read_cifar_batch(f);
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

Normalization compute_normalization(const Split& split) {
  const int64_t channels = split.images.size(1);
  auto sum = torch::zeros({channels}, torch::kDouble);
  auto sq = torch::zeros({channels}, torch::kDouble);
  // Chunks bound the temporary double copy (a whole CIFAR train split in double would be 1.2 GB).
  const int64_t n = split.size(), chunk = 1024;
  for (int64_t i = 0; i < n; i += chunk) {
    auto x = split.images.narrow(0, i, std::min(chunk, n - i)).to(torch::kCPU, torch::kDouble);
    sum += x.sum({0, 2, 3});
    sq += (x * x).sum({0, 2, 3});
  }
  const double count = double(n) * split.images.size(2) * split.images.size(3);
  auto mean = sum / count;
  auto var = (sq / count - mean * mean).clamp_min(0);
  Normalization norm;
  for (int64_t c = 0; c < channels; ++c) {
    norm.mean.push_back(float(mean[c].item<double>() / 255.0));
    norm.std.push_back(float(std::sqrt(var[c].item<double>()) / 255.0));
  }
  return norm;
}

}  // namespace expctl::data
