// Data sets held in memory: one uint8 image tensor and one int64 label tensor per split, the readers of the
// on-disk formats (CIFAR-10 binary, Fashion-MNIST IDX), and seeded subsets of a split.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace expctl::data {

/// Per-channel statistics of pixel values scaled to [0, 1]; a batch is normalised as (x / 255 - mean) / std.
/// Both empty means "no normalisation" (pixels scaled to [0, 1] only); otherwise one value per channel.
struct Normalization {
  std::vector<float> mean;
  std::vector<float> std;
};

/// What is known about a data set before reading it: shapes, classes and its standard normalisation.
/// Lets a pipeline validate and size a model before any file is read.
struct DatasetInfo {
  std::string name;                      ///< display name, e.g. "CIFAR-10"
  int64_t channels = 0;                  ///< C of [N, C, H, W]
  int64_t height = 0;                    ///< H
  int64_t width = 0;                     ///< W
  int64_t num_classes = 0;               ///< labels lie in [0, num_classes)
  std::vector<std::string> class_names;  ///< the default names, index = label
  Normalization norm;                    ///< the usual per-channel mean/std of the training split
};

/// CIFAR-10: 3×32×32, 10 classes, mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
const DatasetInfo& cifar10_info();
/// Fashion-MNIST: 1×28×28, 10 classes ("T-shirt/top", "Trouser", ...), mean 0.2860, std 0.3530.
const DatasetInfo& fashion_mnist_info();

/// torchvision's RandomResizedCrop(size, scale, ratio): a random window of `scale` × the area and an aspect ratio
/// in `ratio` (log-uniform), resized to the output size. A training augmentation.
struct RandomResizedCrop {
  bool enabled = false;
  double scale_lo = 0.08, scale_hi = 1.0;
  double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
};

/// Images that are decoded when they are needed instead of being held in memory (image folders): a split then
/// keeps only labels and indices into its source. Thread-safe: load() runs on several worker threads at once.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  /// Images in the source.
  virtual int64_t size() const = 0;
  /// The shape load() produces: [channels, height, width].
  virtual int64_t channels() const = 0;
  virtual int64_t height() const = 0;
  virtual int64_t width() const = 0;
  /// Writes image `i` as uint8 [C, H, W] (C*H*W bytes) to `out`: with `crop` (enabled), a random resized crop of
  /// the whole decoded image drawn from `seed`; otherwise the evaluation transforms (resize, centre crop).
  /// Throws expctl::DataError naming the file when it cannot be decoded.
  virtual void load(int64_t i, uint8_t* out, const RandomResizedCrop* crop, uint64_t seed) const = 0;
  /// The file image `i` comes from.
  virtual std::string path(int64_t i) const = 0;
  /// Threads that decode a batch together.
  virtual int64_t workers() const = 0;
};

/// Images `indices` (into `source`) decoded on source.workers() threads: uint8 [K, C, H, W] on the CPU.
/// `seeds` (one per image) are used with an enabled `crop`; the first decoding error is rethrown.
torch::Tensor decode_images(const ImageSource& source, const std::vector<int64_t>& indices,
                            const RandomResizedCrop* crop = nullptr, const std::vector<uint64_t>& seeds = {});

/// CIFAR-100: 3×32×32, 100 fine classes (or 20 coarse superclasses), mean (0.5071, 0.4865, 0.4409),
/// std (0.2673, 0.2564, 0.2762).
DatasetInfo cifar100_info(bool coarse);

/// One split of a data set, in memory on one device, or (`stream` set) decoded from files when asked for.
struct Split {
  torch::Tensor images;                  ///< uint8 [N, C, H, W], contiguous; undefined when streamed
  torch::Tensor labels;                  ///< int64 [N], values in [0, num_classes)
  int64_t num_classes = 0;               ///< number of classes of the data set (not only those present)
  std::vector<std::string> class_names;  ///< index = label
  Normalization norm;                    ///< the data set's standard statistics (the default of a Loader)
  std::string source;                    ///< where the samples came from, for reports, e.g.
                                         ///< "CIFAR-10 test split (/d/cifar-10-batches-bin), first 128 of ..."

  std::shared_ptr<const ImageSource> stream;  ///< set when images are decoded on demand (images undefined)
  torch::Tensor stream_index;                 ///< int64 [N] on the CPU: sample → image of `stream`

  /// Number of samples N.
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  /// True when images are decoded on demand from `stream`.
  bool streamed() const { return stream != nullptr; }
  /// C, H, W of every image.
  int64_t channels() const;
  int64_t height() const;
  int64_t width() const;
  /// The device the split's tensors (and the images it hands out) are on.
  torch::Device device() const { return labels.defined() ? labels.device() : torch::Device(torch::kCPU); }
  /// uint8 images [K, C, H, W] of samples [begin, end) or of `indices`, on device(): a view or gather of `images`,
  /// or decoded with the evaluation transforms when streamed.
  torch::Tensor pixels(int64_t begin, int64_t end) const;
  torch::Tensor pixels(const torch::Tensor& indices) const;
  /// Samples [begin, end) as a split of their own (views when in memory).
  Split slice(int64_t begin, int64_t end) const;
  /// The same split with images and labels on `device` (a copy only when the device differs).
  Split to(const torch::Device& device) const;
};

/// Reads the CIFAR-10 binary format from `batches_dir` (the unpacked `cifar-10-batches-bin/` folder):
/// data_batch_1.bin .. data_batch_5.bin when `train`, else test_batch.bin. Each record is 1 label byte and
/// 3072 pixel bytes (R, G, B planes of 32×32, row-major), so channel 0 of the result is red.
/// Class names come from batches.meta.txt when present (it must then hold 10 names), else the defaults.
/// Throws expctl::DataError "<file>: <what is wrong>" for a missing file, a size that is not a whole number of
/// records, or a label outside [0, 10). The result is on the CPU.
Split read_cifar10(const std::filesystem::path& batches_dir, bool train);

/// Checks a whole CIFAR-10 binary folder with read_cifar10()'s own checks (every batch file of both splits:
/// present, whole records, labels in range; batches.meta.txt), without keeping the data. Throws the same
/// expctl::DataError. For an archive's content before it is marked unpacked.
void check_cifar10(const std::filesystem::path& batches_dir);

/// Reads the CIFAR-100 binary format from `dir` (the unpacked `cifar-100-binary/` folder): train.bin or test.bin,
/// records of 1 coarse label byte, 1 fine label byte and 3072 pixel bytes (R, G, B planes). `coarse` picks the
/// 20 superclasses as labels. Class names from fine_label_names.txt / coarse_label_names.txt when present.
/// Throws expctl::DataError "<file>: <what is wrong>" as read_cifar10() does (both labels are range-checked).
Split read_cifar100(const std::filesystem::path& dir, bool train, bool coarse);

/// Reads Fashion-MNIST IDX files from `dir`: train-images-idx3-ubyte / train-labels-idx1-ubyte when `train`,
/// else t10k-*; each either gzip-compressed (name + ".gz", preferred when both exist) or plain.
/// Checks the magic numbers (2051 images, 2049 labels), the 28×28 shape, that the data length matches the
/// header, that both files hold the same count, and that labels lie in [0, 10); any failure, a gzip error or a
/// missing file throws expctl::DataError naming the file. Result: images [N, 1, 28, 28] on the CPU.
Split read_fashion_mnist(const std::filesystem::path& dir, bool train);

/// The per-channel mean and (population) std of `split`'s pixels scaled to [0, 1], computed in double.
Normalization compute_normalization(const Split& split);

/// A seeded order of all of `split`'s sample indices (int64 [N], CPU) in which every prefix is as
/// class-balanced as the data allow: a random permutation, then stably regrouped into rounds that take one
/// sample of each class (classes that run out drop out of later rounds). Same seed → same order.
torch::Tensor balanced_order(const Split& split, uint64_t seed);

/// Splits the sample indices of `split` into `k` chosen ones (the first `k` of balanced_order(split, seed))
/// and the remaining N - k; both int64, CPU, sorted ascending. Throws expctl::Error unless 0 <= k <= N.
std::pair<torch::Tensor, torch::Tensor> split_indices(const Split& split, int64_t k, uint64_t seed);

/// The samples of `split` at `indices` (int64 [K], any device), in that order, on `split`'s device.
/// `note` is appended to `source` (", " + note) when not empty. Throws expctl::Error for an index out of range.
Split select(const Split& split, const torch::Tensor& indices, const std::string& note = "");

/// A class-balanced seeded subset of `n` samples (0 <= n <= N), for quick runs; the samples keep their
/// original relative order.
Split subset(const Split& split, int64_t n, uint64_t seed);

/// Takes `k` seeded class-balanced samples out of `split` (e.g. calibration inputs from the test split) and
/// returns {those k, the other N - k} (for accuracy held out from calibration). Disjoint and covering.
std::pair<Split, Split> split_off(const Split& split, int64_t k, uint64_t seed);

}  // namespace expctl::data
