// Batches of a Split: a seeded permutation per epoch, optional sharding across data-parallel ranks, and
// augmentation + normalisation done as batched tensor ops on the split's device.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>

#include "runner/data/split.h"

namespace expctl::data {

/// Training-time augmentation, applied before normalisation (as torchvision's RandomCrop(padding) +
/// RandomHorizontalFlip do it on the raw image).
struct Augmentation {
  int64_t crop_padding = 0;      ///< pad each side with zeros (black), then crop back to H×W at a random offset
  bool horizontal_flip = false;  ///< mirror each sample left-right with probability 1/2
  /// Applied first: to the whole decoded image of a streamed split, to the held image otherwise.
  RandomResizedCrop resized_crop;
};

/// What a loader of a streamed split did: images decoded and the decoding threads' time. (How long training waited
/// for its batches, decoding included, is the trainer's EpochRecord::data_wait_seconds.)
struct StreamStats {
  int64_t images = 0;
  double decode_seconds = 0;  ///< wall time of the decoding calls (they run on `workers` threads each)
};

/// Options of a Loader; plain data with defaults, validated by the Loader's constructor.
struct LoaderOptions {
  int64_t batch_size = 128;  ///< samples per batch on each rank
  bool shuffle = true;       ///< a seeded permutation per epoch; false: the split's order
  bool drop_last = false;    ///< drop the final global batch when it is not full
  uint64_t seed = 0;         ///< seeds the permutation and the augmentation (with the epoch)
  Augmentation augment;      ///< none by default
  /// Per-channel mean/std; unset: the split's own `norm`. An empty Normalization scales to [0, 1] only.
  std::optional<Normalization> norm;
  int64_t prefetch = 0;    ///< streamed splits: batches decoded ahead on background threads (0: on demand)
  int64_t rank = 0;        ///< this process's rank in [0, world_size)
  int64_t world_size = 1;  ///< number of data-parallel ranks sharing each epoch
};

/// One batch: float images [B, C, H, W] (augmented, normalised), int64 labels [B], and the sample indices [B]
/// into the split they came from; all on the split's device.
struct Batch {
  torch::Tensor images;
  torch::Tensor labels;
  torch::Tensor indices;
};

/// Iterates a Split in batches.
///
/// Order: each epoch uses one permutation of the whole split, drawn on the CPU from (seed, epoch), so it
/// is the same on every device and every rank. Sharding: the permutation is cut into global batches of
/// batch_size × world_size samples; global batch j is cut into world_size contiguous near-equal pieces and rank
/// r gets piece r as its batch j. So ranks see disjoint samples that together cover the epoch, every rank has
/// the same num_batches() (lock-step all-reduce), and the union of the ranks' batch j is the single-process
/// batch j of a loader with batch_size × world_size. Without drop_last and with world_size > 1, the last batch
/// may differ in size between ranks by one sample (and be empty when fewer samples than ranks remain).
/// Augmentation: offsets and flips of global batch j are drawn on the CPU from (seed, epoch, j), so they do not
/// depend on the device either, and a sample is augmented the same at any world_size with the same global batch.
///
/// Usage: `for (int64_t e = 0; e < E; ++e) { loader.set_epoch(e); for (const Batch& b : loader) {...} }`.
class Loader {
 public:
  /// Validates `options` against `split` (throws expctl::Error) and prepares epoch 0. The loader keeps
  /// references to the split's tensors (no copy).
  Loader(const Split& split, LoaderOptions options);

  /// Selects the epoch whose permutation and augmentation the next batches use.
  void set_epoch(int64_t epoch);
  /// The current epoch.
  int64_t epoch() const { return epoch_; }
  /// Batches this rank yields per epoch (the same on every rank).
  int64_t num_batches() const { return num_batches_; }
  /// Samples this rank yields per epoch.
  int64_t num_samples() const;
  /// The options in use (norm filled in from the split when it was unset).
  const LoaderOptions& options() const { return options_; }

  /// Batch `j` (0 <= j < num_batches()) of the current epoch on this rank; random access, deterministic.
  /// On a streamed split it also starts decoding the next `prefetch` batches.
  Batch batch(int64_t j) const;
  /// Decoding figures so far (streamed splits; zeros otherwise).
  StreamStats stream_stats() const;
  /// This rank's sample indices of the current epoch, in the order its batches yield them (int64, CPU).
  torch::Tensor epoch_indices() const;

  /// Input iterator over the batches of the current epoch.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = const Batch*;
    using reference = Batch;
    Iterator(const Loader* loader, int64_t index) : loader_(loader), index_(index) {}
    Batch operator*() const { return loader_->batch(index_); }
    Iterator& operator++() {
      ++index_;
      return *this;
    }
    bool operator==(const Iterator& other) const { return index_ == other.index_; }
    bool operator!=(const Iterator& other) const { return index_ != other.index_; }

   private:
    const Loader* loader_;
    int64_t index_;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, num_batches_); }

 private:
  // Positions [begin, end) of this rank's batch j within the epoch permutation, and the global batch's bounds.
  struct Range {
    int64_t global_begin, global_size, begin, end;
  };
  Range range(int64_t j) const;

  // The uint8 images of batch j (before crop_padding / flip), decoded or gathered; and the seeds of its samples.
  torch::Tensor images_of(int64_t j, const Range& r) const;
  struct Prefetch;  // decodes ahead on background threads; shared so that the loader stays copyable

  Split split_;
  LoaderOptions options_;
  std::shared_ptr<Prefetch> prefetch_;
  int64_t epoch_ = 0;
  int64_t num_batches_ = 0;
  int64_t used_samples_ = 0;     // samples of the permutation used per epoch (all ranks together)
  torch::Tensor permutation_;    // int64 [N] on the split's device
  torch::Tensor scale_, shift_;  // float [1, C, 1, 1]: x_uint8 * scale + shift = (x / 255 - mean) / std
};

/// The batched augmentation kernel: for each sample b of uint8 (or any dtype) `images` [B, C, H, W], pads with
/// `padding` zeros on each side, takes the H×W window whose top-left corner is (top[b], left[b]) in the padded
/// image (0 <= top, left <= 2 * padding) and mirrors it left-right where flip[b] is true. top/left int64 [B],
/// flip bool [B]. One gather on the device, no per-sample loop.
torch::Tensor crop_flip(const torch::Tensor& images, const torch::Tensor& top, const torch::Tensor& left,
                        const torch::Tensor& flip, int64_t padding);

/// Seeds derived from a base seed and a few stream numbers (splitmix64 mixing): nearby inputs give unrelated
/// seeds, so epochs and batches draw independent random numbers.
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

/// Float images normalised as the loader does, without augmentation: (x / 255 - mean) / std per channel
/// (only / 255 when `norm` is empty). `images` is uint8 [N, C, H, W] on any device.
///
///     torch::Tensor x = normalize(split.images.slice(0, 0, 128), split.norm);
torch::Tensor normalize(const torch::Tensor& images, const Normalization& norm);

}  // namespace expctl::data
