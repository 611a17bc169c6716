// Split methods shared by every data set: device moves, slices and gathers (decoded on demand when streamed),
// parallel decoding of streamed images, and normalisation statistics.
#include "runner/data/split.h"

#include "runner/core/error.h"
#include "runner/data/image.h"

namespace expctl::data {

Split Split::to(const torch::Device& device) const {
  Split out = *this;
  if (images.defined()) out.images = images.to(device);
  out.labels = labels.to(device);
  return out;
}

int64_t Split::channels() const { return streamed() ? stream->channels() : images.size(1); }
int64_t Split::height() const { return streamed() ? stream->height() : images.size(2); }
int64_t Split::width() const { return streamed() ? stream->width() : images.size(3); }

torch::Tensor Split::pixels(int64_t begin, int64_t end) const {
  if (!streamed()) return images.slice(0, begin, end);
  return pixels(torch::arange(begin, end, torch::kLong));
}

torch::Tensor Split::pixels(const torch::Tensor& indices) const {
  if (!streamed()) return images.index_select(0, indices.to(images.device(), torch::kLong));
  auto rows = stream_index.index_select(0, indices.to(torch::kCPU, torch::kLong)).contiguous();
  std::vector<int64_t> which(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
  return decode_images(*stream, which).to(device());
}

Split Split::slice(int64_t begin, int64_t end) const {
  Split out = *this;
  if (images.defined()) out.images = images.slice(0, begin, end);
  if (stream_index.defined()) out.stream_index = stream_index.slice(0, begin, end);
  out.labels = labels.slice(0, begin, end);
  return out;
}

torch::Tensor decode_images(const ImageSource& source, const std::vector<int64_t>& indices,
                            const RandomResizedCrop* crop, const std::vector<uint64_t>& seeds) {
  const int64_t k = int64_t(indices.size()), c = source.channels(), h = source.height(), w = source.width();
  const bool random = crop && crop->enabled;
  if (random && seeds.size() != indices.size()) throw Error("decode_images: one seed per image is needed");
  auto out = torch::empty({k, c, h, w}, torch::kUInt8);
  uint8_t* base = out.data_ptr<uint8_t>();
  const int64_t bytes = c * h * w;
  // Each image has its own slot of `out`, so the threads share nothing else.
  parallel_for_each(k, source.workers(), [&](int64_t i) {
    source.load(indices[size_t(i)], base + i * bytes, random ? crop : nullptr, random ? seeds[size_t(i)] : 0);
  });
  return out;
}
Normalization compute_normalization(const Split& split) {
  if (split.streamed()) throw Error(split.source + ": compute_normalization needs the images in memory");
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
