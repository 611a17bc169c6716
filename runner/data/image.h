// Decoded images and the per-image transforms of image-folder data sets: PNG (libpng) and JPEG (libjpeg-turbo)
// decoding with PIL's colour conversions, and torchvision's Resize / CenterCrop / RandomResizedCrop semantics.
// Plain C++ on interleaved bytes, no LibTorch ops: it runs on the loader's worker threads without touching
// LibTorch's thread pool (which the training step uses).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace expctl::data {

/// An 8-bit image, rows of interleaved channels (height × width × channels), as decoders produce it.
struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  ///< height * width * channels bytes
  uint8_t at(int64_t y, int64_t x, int64_t c) const { return pixels[size_t((y * width + x) * channels + c)]; }
};

/// The container formats read, told by their first bytes (never by the file name).
enum class ImageFormat { Unknown, Png, Jpeg };
ImageFormat sniff_image_format(const std::string& bytes);

/// The largest image decoded by default, in pixels (width × height): PIL's Image.MAX_IMAGE_PIXELS. A 69-byte PNG
/// can declare 60000 × 60000 pixels (10.8 GB decoded); the limit is checked from the header, before decoding.
/// A decoded image takes 3 bytes per pixel (RGB), so at this limit about 540 MB per decoding thread.
inline constexpr int64_t kDefaultMaxPixels = 178956970;

/// Width and height from a file's header only (PNG IHDR, JPEG start of frame), for a cheap check of every file
/// of a folder. Only a regular file is opened, never blocking (a FIFO named x.png cannot hang the scan).
/// Throws expctl::DataError "<file>: <what is wrong>" (not an image, truncated header, unreadable, not a regular
/// file, more than `max_pixels` pixels).
struct ImageHeader {
  ImageFormat format = ImageFormat::Unknown;
  int64_t width = 0, height = 0;
};
ImageHeader read_image_header(const std::filesystem::path& file, int64_t max_pixels = kDefaultMaxPixels);

/// Decodes PNG or JPEG `bytes` to `channels` (3 = RGB, 1 = grey) as PIL's `Image.open(f).convert("RGB" / "L")`
/// does: palettes and low bit depths expanded, 16-bit reduced to 8, alpha dropped (not composited), grey
/// replicated to RGB, RGB to grey as ITU-R 601-2 luma with PIL's rounding. An image of more than `max_pixels`
/// pixels is refused from its header, before anything is allocated for it. Throws expctl::DataError
/// "<name>: <what is wrong>" for anything else (corrupt or truncated data, CMYK JPEG, unknown format).
Image decode_image(const std::string& bytes, int64_t channels, const std::string& name,
                   int64_t max_pixels = kDefaultMaxPixels);
/// decode_image() of a file's content (a regular file only, opened without blocking); a read error also names
/// the file.
Image read_image(const std::filesystem::path& file, int64_t channels, int64_t max_pixels = kDefaultMaxPixels);

/// torchvision's Resize(size) output for an h × w input: `size` is the shorter side (the longer one keeps the
/// aspect ratio, truncated as torchvision does); returns {height, width}.
std::pair<int64_t, int64_t> resized_shape(int64_t h, int64_t w, int64_t size);

/// Bilinear resize with antialiasing (PyTorch's `interpolate(..., mode="bilinear", antialias=True)`, which
/// torchvision's Resize uses on tensors), rounded half-to-even back to 8 bits.
Image resize(const Image& in, int64_t height, int64_t width);

/// The window [top, top + height) × [left, left + width); parts outside the image are zeros (torchvision's
/// crop pads with zeros).
Image crop(const Image& in, int64_t top, int64_t left, int64_t height, int64_t width);

/// torchvision's CenterCrop: the window's top-left corner at round((H - h) / 2), round((W - w) / 2), half to even;
/// a side where the image is smaller is zero-padded by (h - H) // 2 before and the rest after.
Image center_crop(const Image& in, int64_t height, int64_t width);

/// Mirrors left-right.
Image hflip(const Image& in);

/// The image as channel planes ([C, H, W], C*H*W bytes) written to `out`, and back.
void to_planes(const Image& img, uint8_t* out);
Image from_planes(const uint8_t* planes, int64_t channels, int64_t height, int64_t width);

/// Runs fn(0) .. fn(n - 1) on min(threads, n) threads (this one included), dealt out round-robin; after all have
/// stopped, rethrows the first exception any call threw (a thread stops at its first one).
void parallel_for_each(int64_t n, int64_t threads, const std::function<void(int64_t)>& fn);

/// The crop window of torchvision's RandomResizedCrop.get_params for an h × w image: up to 10 draws of an area
/// fraction in `scale` and a log-uniform aspect ratio in `ratio`, then the centred fallback. The draws come from a
/// LibTorch CPU generator seeded with `seed`, in torchvision's order (uniform area, uniform log-ratio, randint
/// top, randint left), so the window equals torchvision's after `torch.manual_seed(seed)`.
struct CropWindow {
  int64_t top = 0, left = 0, height = 0, width = 0;
};
CropWindow random_resized_crop_window(int64_t h, int64_t w, double scale_lo, double scale_hi, double ratio_lo,
                                      double ratio_hi, uint64_t seed);

}  // namespace expctl::data
