// Batching, sharding, augmentation and normalisation. Random numbers are drawn on the CPU from seeds derived
// from (seed, epoch, batch) and only then moved to the device: CUDA generators give different streams, and
// reproducible runs must not depend on where they ran. The pixel work itself stays on the device.
#include "runner/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <future>
#include <map>
#include <mutex>

#include "runner/core/error.h"
#include "runner/data/image.h"

namespace expctl::data {

namespace {

// Stream numbers passed to derive_seed, so that the permutation and the augmentation never share a seed.
constexpr uint64_t kPermutationStream = 1;
constexpr uint64_t kAugmentStream = 2;
constexpr uint64_t kResizedCropStream = 3;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

[[noreturn]] void invalid(const std::string& what) { throw Error("data loader: " + what); }

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ a);
  h = splitmix64(h ^ b);
  return splitmix64(h ^ c);
}

torch::Tensor crop_flip(const torch::Tensor& images, const torch::Tensor& top, const torch::Tensor& left,
                        const torch::Tensor& flip, int64_t padding) {
  TORCH_CHECK(images.dim() == 4, "crop_flip: images must be [B, C, H, W]");
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (b == 0) return images.clone();
  const int64_t hp = h + 2 * padding, wp = w + 2 * padding;
  const auto dev = images.device();
  // Pad the whole batch once; zeros match torchvision's RandomCrop(padding=p) with its default fill.
  auto padded = images;
  if (padding > 0) {
    padded = torch::zeros({b, c, hp, wp}, images.options());
    padded.narrow(2, padding, h).narrow(3, padding, w).copy_(images);
  }
  // Offsets and flips travel in one non-blocking copy: a blocking one per tensor would make the host wait for the
  // GPU's previous step three times per batch.
  auto drawn = torch::stack({top.to(torch::kLong), left.to(torch::kLong), flip.to(torch::kLong)})
                   .to(dev, torch::kLong, /*non_blocking=*/true);
  auto rows = drawn[0].view({b, 1}) + torch::arange(h, torch::dtype(torch::kLong).device(dev));
  auto cols = torch::arange(w, torch::dtype(torch::kLong).device(dev)).view({1, w});
  // The flip is folded into the column index (column w-1-x of the window), so crop + flip is a single gather.
  cols = drawn[1].view({b, 1}) + torch::where(drawn[2].ne(0).view({b, 1}), (w - 1) - cols, cols);
  auto index = (rows.view({b, h, 1}) * wp + cols.view({b, 1, w})).view({b, 1, h * w}).expand({b, c, h * w});
  return padded.reshape({b, c, hp * wp}).gather(2, index).view({b, c, h, w});
}

struct Loader::Prefetch {
  std::mutex mutex;
  std::map<std::pair<int64_t, int64_t>, std::shared_future<torch::Tensor>> pending;  // (epoch, batch) → images
  StreamStats stats;
};

Loader::Loader(const Split& split, LoaderOptions options)
    : split_(split), options_(std::move(options)), prefetch_(std::make_shared<Prefetch>()) {
  const auto& o = options_;
  if (split_.streamed()) {
    if (!split_.stream_index.defined() || split_.stream_index.dim() != 1 ||
        split_.stream_index.size(0) != split_.size())
      invalid(split_.source + ": a streamed split needs one stream index per label");
  } else {
    if (!split_.images.defined() || split_.images.dim() != 4)
      invalid(split_.source + ": images must be a [N, C, H, W] tensor");
    if (!split_.labels.defined() || split_.labels.dim() != 1 || split_.labels.size(0) != split_.images.size(0))
      invalid(split_.source + ": labels must be [N] with N = " + std::to_string(split_.images.size(0)));
    if (split_.labels.device() != split_.images.device())
      invalid(split_.source + ": images and labels are on different devices");
  }
  if (o.prefetch < 0) invalid("prefetch must be >= 0, got " + std::to_string(o.prefetch));
  const auto& rc = o.augment.resized_crop;
  if (rc.enabled && !(rc.scale_lo > 0 && rc.scale_lo <= rc.scale_hi && rc.ratio_lo > 0 && rc.ratio_lo <= rc.ratio_hi))
    invalid("random resized crop needs 0 < scale_lo <= scale_hi and 0 < ratio_lo <= ratio_hi");
  if (o.batch_size < 1) invalid("batch_size must be >= 1, got " + std::to_string(o.batch_size));
  if (o.world_size < 1) invalid("world_size must be >= 1, got " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    invalid("rank must lie in [0, " + std::to_string(o.world_size) + "), got " + std::to_string(o.rank));
  if (o.augment.crop_padding < 0)
    invalid("augment.crop_padding must be >= 0, got " + std::to_string(o.augment.crop_padding));
  if (!options_.norm) options_.norm = split_.norm;
  const auto& norm = *options_.norm;
  const int64_t channels = split_.channels();
  if (norm.mean.size() != norm.std.size() || (!norm.mean.empty() && int64_t(norm.mean.size()) != channels))
    invalid("normalisation needs one mean and one std per channel (" + std::to_string(channels) + "), got " +
            std::to_string(norm.mean.size()) + " and " + std::to_string(norm.std.size()));
  for (float s : norm.std)
    if (!(s > 0)) invalid("normalisation std must be > 0, got " + std::to_string(s));

  // (x / 255 - mean) / std as one multiply-add per element.
  auto mean = torch::zeros({channels}, torch::kDouble);
  auto stdv = torch::ones({channels}, torch::kDouble);
  for (size_t i = 0; i < norm.mean.size(); ++i) {
    mean[i] = double(norm.mean[i]);
    stdv[i] = double(norm.std[i]);
  }
  const auto fopts = torch::dtype(torch::kFloat).device(split_.device());
  scale_ = (1.0 / (255.0 * stdv)).to(fopts).view({1, channels, 1, 1});
  shift_ = (-mean / stdv).to(fopts).view({1, channels, 1, 1});

  const int64_t n = split_.size(), global = o.batch_size * o.world_size;
  used_samples_ = o.drop_last ? (n / global) * global : n;
  num_batches_ = (used_samples_ + global - 1) / global;
  set_epoch(0);
}

void Loader::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  const int64_t n = split_.size();
  torch::Tensor perm;
  if (options_.shuffle) {
    auto gen = at::detail::createCPUGenerator(derive_seed(options_.seed, kPermutationStream, uint64_t(epoch)));
    perm = torch::randperm(n, gen, torch::kLong);
  } else {
    perm = torch::arange(n, torch::kLong);
  }
  permutation_ = perm.to(split_.device());
  // Batches decoded ahead for another epoch are of no use. They are dropped outside the lock: dropping waits for
  // a running decode, which takes the lock to add its figures.
  std::map<std::pair<int64_t, int64_t>, std::shared_future<torch::Tensor>> stale;
  {
    std::lock_guard<std::mutex> lock(prefetch_->mutex);
    stale.swap(prefetch_->pending);
  }
}

Loader::Range Loader::range(int64_t j) const {
  const int64_t global = options_.batch_size * options_.world_size;
  Range r{};
  r.global_begin = j * global;
  r.global_size = std::min(global, used_samples_ - r.global_begin);
  // Near-equal contiguous pieces: sizes differ by at most one, and full batches give exactly batch_size.
  r.begin = r.global_begin + options_.rank * r.global_size / options_.world_size;
  r.end = r.global_begin + (options_.rank + 1) * r.global_size / options_.world_size;
  return r;
}

int64_t Loader::num_samples() const {
  int64_t total = 0;
  for (int64_t j = 0; j < num_batches_; ++j) {
    const Range r = range(j);
    total += r.end - r.begin;
  }
  return total;
}

torch::Tensor Loader::epoch_indices() const {
  std::vector<torch::Tensor> parts;
  for (int64_t j = 0; j < num_batches_; ++j) {
    const Range r = range(j);
    parts.push_back(permutation_.narrow(0, r.begin, r.end - r.begin));
  }
  if (parts.empty()) return torch::empty({0}, torch::kLong);
  return torch::cat(parts).to(torch::kCPU);
}

Batch Loader::batch(int64_t j) const {
  TORCH_CHECK(j >= 0 && j < num_batches_, "Loader::batch: index ", j, " out of range [0, ", num_batches_, ")");
  const Range r = range(j);
  const int64_t size = r.end - r.begin;
  Batch out;
  out.indices = permutation_.narrow(0, r.begin, size);
  auto images = images_of(j, r);
  out.labels = split_.labels.index_select(0, out.indices);

  const auto& aug = options_.augment;
  if (aug.crop_padding > 0 || aug.horizontal_flip) {
    // Drawn for the whole global batch, then sliced: a sample's augmentation does not depend on its rank.
    auto gen = at::detail::createCPUGenerator(derive_seed(options_.seed, kAugmentStream, uint64_t(epoch_), j));
    const int64_t p = aug.crop_padding, g = r.global_size, off = r.begin - r.global_begin;
    torch::Tensor top = torch::full({g}, p, torch::kLong), left = top;
    if (p > 0) {
      top = torch::randint(0, 2 * p + 1, {g}, gen, torch::kLong);
      left = torch::randint(0, 2 * p + 1, {g}, gen, torch::kLong);
    }
    torch::Tensor flip = torch::zeros({g}, torch::kBool);
    if (aug.horizontal_flip) flip = torch::randint(0, 2, {g}, gen, torch::kLong).to(torch::kBool);
    images = crop_flip(images, top.narrow(0, off, size), left.narrow(0, off, size), flip.narrow(0, off, size), p);
  }
  out.images = images.to(torch::kFloat) * scale_ + shift_;
  return out;
}

namespace {

// One held uint8 image [C, H, W] (CPU) through RandomResizedCrop back to its own size.
torch::Tensor resized_crop_held(const torch::Tensor& chw, const RandomResizedCrop& rc, uint64_t seed) {
  const int64_t c = chw.size(0), h = chw.size(1), w = chw.size(2);
  const Image img = from_planes(chw.contiguous().data_ptr<uint8_t>(), c, h, w);
  const CropWindow win = random_resized_crop_window(h, w, rc.scale_lo, rc.scale_hi, rc.ratio_lo, rc.ratio_hi, seed);
  Image out = resize(crop(img, win.top, win.left, win.height, win.width), h, w);
  return torch::from_blob(out.pixels.data(), {h, w, c}, torch::kUInt8).permute({2, 0, 1}).contiguous();
}

}  // namespace

torch::Tensor Loader::images_of(int64_t j, const Range& r) const {
  const int64_t size = r.end - r.begin;
  const RandomResizedCrop& rc = options_.augment.resized_crop;
  // A sample's crop depends on its place in the epoch's permutation, not on the rank that draws it.
  auto crop_seeds = [&](const Range& rr) {
    std::vector<uint64_t> out;
    if (rc.enabled)
      for (int64_t k = rr.begin; k < rr.end; ++k)
        out.push_back(derive_seed(options_.seed, kResizedCropStream, uint64_t(epoch_), uint64_t(k)));
    return out;
  };
  const std::vector<uint64_t> seeds = crop_seeds(r);
  const auto positions = permutation_.narrow(0, r.begin, size);

  if (!split_.streamed()) {
    auto images = split_.images.index_select(0, positions);
    if (!rc.enabled) return images;
    auto cpu = images.to(torch::kCPU).contiguous();
    std::vector<torch::Tensor> out;
    for (int64_t k = 0; k < size; ++k) out.push_back(resized_crop_held(cpu[k], rc, seeds[size_t(k)]));
    return torch::stack(out).to(images.device());
  }

  // Streamed: take batch j if it was decoded ahead, else decode it now; then start the next ones.
  auto source_rows = [&](const Range& rr) {
    auto rows = split_.stream_index.index_select(0, permutation_.narrow(0, rr.begin, rr.end - rr.begin).to(torch::kCPU));
    rows = rows.contiguous();
    return std::vector<int64_t>(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
  };
  // Weak: a pending task must not keep the loader's state alive (the state owns the task's future).
  auto task = [source = split_.stream, rc, weak = std::weak_ptr<Prefetch>(prefetch_)](std::vector<int64_t> rows,
                                                                                      std::vector<uint64_t> sd) {
    const auto t0 = std::chrono::steady_clock::now();
    auto images = decode_images(*source, rows, rc.enabled ? &rc : nullptr, sd);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (auto prefetch = weak.lock()) {
      std::lock_guard<std::mutex> lock(prefetch->mutex);
      prefetch->stats.images += int64_t(rows.size());
      prefetch->stats.decode_seconds += secs;
    }
    return images;
  };
  std::shared_future<torch::Tensor> ready;
  {
    std::lock_guard<std::mutex> lock(prefetch_->mutex);
    auto it = prefetch_->pending.find({epoch_, j});
    if (it != prefetch_->pending.end()) {
      ready = it->second;
      prefetch_->pending.erase(it);
    }
  }
  torch::Tensor images = ready.valid() ? ready.get() : task(source_rows(r), seeds);
  {
    std::lock_guard<std::mutex> lock(prefetch_->mutex);
    for (int64_t k = j + 1; k <= std::min(j + options_.prefetch, num_batches_ - 1); ++k) {
      if (prefetch_->pending.count({epoch_, k})) continue;
      const Range rk = range(k);
      prefetch_->pending[{epoch_, k}] = std::async(std::launch::async, task, source_rows(rk), crop_seeds(rk)).share();
    }
  }
  return images.to(split_.device());
}

StreamStats Loader::stream_stats() const {
  std::lock_guard<std::mutex> lock(prefetch_->mutex);
  return prefetch_->stats;
}

torch::Tensor normalize(const torch::Tensor& images, const Normalization& norm) {
  auto x = images.to(torch::kFloat).div_(255.0);
  if (norm.mean.empty()) return x;
  const int64_t c = images.size(1);
  if (int64_t(norm.mean.size()) != c || int64_t(norm.std.size()) != c)
    invalid("normalisation needs one mean and one std per channel (" + std::to_string(c) + ")");
  // Non-blocking: evaluation calls this per batch, and a blocking copy would wait for the GPU each time.
  auto mean = torch::tensor(norm.mean).to(x.device(), torch::kFloat, /*non_blocking=*/true).view({1, c, 1, 1});
  auto stdv = torch::tensor(norm.std).to(x.device(), torch::kFloat, /*non_blocking=*/true).view({1, c, 1, 1});
  return x.sub_(mean).div_(stdv);
}

}  // namespace expctl::data
