// PNG / JPEG decoding and torchvision's per-image transforms on interleaved 8-bit pixels.
//
// libpng and libjpeg report errors by longjmp. Each decoder's setjmp frame holds only C structs and a reference
// to a vector owned by the caller, so no C++ object is skipped over; the error becomes a DataError afterwards.
#include "runner/data/image.h"

#include <ATen/CPUGeneratorImpl.h>
#include <jpeglib.h>
#include <png.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <thread>

#include "runner/core/error.h"
#include "runner/core/files.h"

namespace expctl::data {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) { throw DataError(name + ": " + what); }

// ---- PNG ----------------------------------------------------------------------------------------------------

struct PngInput {
  const std::string* data;
  size_t pos;
  char message[200];
};

void png_read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* in = static_cast<PngInput*>(png_get_io_ptr(png));
  if (in->pos + n > in->data->size()) png_error(png, "truncated data (the file ends early)");
  std::memcpy(out, in->data->data() + in->pos, n);
  in->pos += n;
}

void png_on_error(png_structp png, png_const_charp msg) {
  auto* in = static_cast<PngInput*>(png_get_error_ptr(png));
  std::snprintf(in->message, sizeof in->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}

// Decodes into `out` (rows of `channels` interleaved bytes); returns false with input.message set on error.
bool decode_png(PngInput& input, std::vector<uint8_t>& out, int64_t& h, int64_t& w, int64_t& channels,
                int64_t max_pixels) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &input, png_on_error, png_on_warning);
  if (!png) return std::snprintf(input.message, sizeof input.message, "out of memory"), false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &input, png_read_bytes);
  png_read_info(png, info);
  // decode_image() checked the header already; this guards the decoder's own reading of it.
  const int64_t png_h = std::max<int64_t>(1, png_get_image_height(png, info));
  if (int64_t(png_get_image_width(png, info)) > max_pixels / png_h) {
    std::snprintf(input.message, sizeof input.message, "more pixels than the limit");
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (depth == 16) png_set_strip_16(png);  // the high byte, as PIL's "RGB;16B" unpacking
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  png_set_strip_alpha(png);  // PIL's convert("RGB") drops alpha without compositing
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  h = png_get_image_height(png, info);
  w = png_get_image_width(png, info);
  channels = png_get_channels(png, info);
  const size_t row = png_get_rowbytes(png, info);
  if (row != size_t(w * channels)) {
    std::snprintf(input.message, sizeof input.message, "unexpected row layout");
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  out.resize(row * size_t(h));
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  for (int64_t y = 0; y < h; ++y) rows[size_t(y)] = out.data() + size_t(y) * row;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// ---- JPEG ---------------------------------------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

// libjpeg only warns about corrupt or truncated data and fills the rest with grey; PIL refuses such files
// ("image file is truncated"), and so do we: a warning is an error.
void jpeg_on_message(j_common_ptr c, int level) {
  if (level < 0) jpeg_on_error(c);
}

bool decode_jpeg(const std::string& data, JpegError& err, std::vector<uint8_t>& out, int64_t& h, int64_t& w,
                 int64_t& channels, int64_t max_pixels) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()), static_cast<unsigned long>(data.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (int64_t(cinfo.image_width) * int64_t(cinfo.image_height) > max_pixels) {  // 16-bit sides: no overflow
    std::snprintf(err.message, sizeof err.message, "more pixels than the limit");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err.message, sizeof err.message, "CMYK JPEG images are not supported (convert to RGB)");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  h = cinfo.output_height;
  w = cinfo.output_width;
  channels = cinfo.output_components;
  out.resize(size_t(h * w * channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.data() + size_t(cinfo.output_scanline) * size_t(w * channels);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// ---- colour conversion --------------------------------------------------------------------------------------

Image convert_channels(Image img, int64_t channels) {
  if (img.channels == channels) return img;
  Image out;
  out.height = img.height;
  out.width = img.width;
  out.channels = channels;
  const size_t n = size_t(img.height * img.width);
  out.pixels.resize(n * size_t(channels));
  if (img.channels == 1 && channels == 3) {
    for (size_t i = 0; i < n; ++i) std::fill_n(out.pixels.data() + 3 * i, 3, img.pixels[i]);
  } else if (img.channels == 3 && channels == 1) {
    // PIL's L24: ITU-R 601-2 luma in 16-bit fixed point, rounded.
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = img.pixels.data() + 3 * i;
      out.pixels[i] = uint8_t((uint32_t(p[0]) * 19595 + uint32_t(p[1]) * 38470 + uint32_t(p[2]) * 7471 + 0x8000) >> 16);
    }
  } else {
    throw Error("convert_channels: cannot convert " + std::to_string(img.channels) + " channels to " +
                std::to_string(channels));
  }
  return out;
}

uint32_t be32(const unsigned char* p) { return (uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }

// Width and height from the first bytes of an image (PNG IHDR, JPEG start of frame), checked against the limit.
ImageHeader parse_header(const std::string& bytes, const std::string& name, int64_t max_pixels) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  ImageHeader h;
  h.format = sniff_image_format(bytes);
  if (h.format == ImageFormat::Png) {
    if (bytes.size() < 24 || std::memcmp(p + 12, "IHDR", 4) != 0) fail(name, "PNG header truncated");
    h.width = be32(p + 16);
    h.height = be32(p + 20);
  } else if (h.format == ImageFormat::Jpeg) {
    size_t i = 2;
    while (true) {
      while (i < bytes.size() && p[i] != 0xFF) ++i;  // tolerate fill bytes
      while (i < bytes.size() && p[i] == 0xFF) ++i;
      if (i + 3 > bytes.size()) fail(name, "JPEG without a frame header (truncated or corrupt)");
      const unsigned marker = p[i];
      const size_t len = (size_t(p[i + 1]) << 8) | p[i + 2];
      const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (i + 8 > bytes.size()) fail(name, "JPEG frame header truncated");
        h.height = (p[i + 4] << 8) | p[i + 5];
        h.width = (p[i + 6] << 8) | p[i + 7];
        break;
      }
      if (marker == 0xD9 || marker == 0xDA || len < 2) fail(name, "JPEG without a frame header (truncated or corrupt)");
      i += 1 + len;
    }
  } else {
    fail(name, bytes.empty() ? "empty file" : "not a PNG or JPEG image");
  }
  if (h.width <= 0 || h.height <= 0) fail(name, "image has no pixels (width or height 0)");
  // From the header, before any decoder allocates: the decoded size is width x height x channels bytes.
  if (h.width > max_pixels / h.height)  // divided: a PNG's 32-bit sides multiply past int64
    fail(name, std::to_string(h.width) + " x " + std::to_string(h.height) + " = " +
                   std::to_string(uint64_t(h.width) * uint64_t(h.height)) + " pixels, more than dataset.max_pixels (" +
                   std::to_string(max_pixels) +
                   "): a decompression bomb, or an image too large to decode; raise max_pixels if it is real");
  return h;
}

// One-dimensional antialiased bilinear taps (PyTorch's _compute_indices_weights_aa with the triangle filter).
struct Taps {
  std::vector<int64_t> first, count;
  std::vector<float> weights;  // `stride` per output position
  int64_t stride = 0;
};

Taps make_taps(int64_t in, int64_t out) {
  Taps t;
  const double scale = double(in) / double(out);
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  t.stride = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out));
  t.count.resize(size_t(out));
  t.weights.assign(size_t(out * t.stride), 0.f);
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (double(i) + 0.5);
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t n = std::min<int64_t>(int64_t(center + support + 0.5), in) - lo;
    double total = 0;
    std::vector<double> w(size_t(std::max<int64_t>(n, 0)));
    for (int64_t j = 0; j < n; ++j) {
      const double x = std::abs((double(j + lo) - center + 0.5) * invscale);
      w[size_t(j)] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[size_t(j)];
    }
    t.first[size_t(i)] = lo;
    t.count[size_t(i)] = std::min(n, t.stride);
    for (int64_t j = 0; j < t.count[size_t(i)]; ++j)
      t.weights[size_t(i * t.stride + j)] = float(total != 0 ? w[size_t(j)] / total : 0.0);
  }
  return t;
}

uint8_t to_byte(float v) {
  const float r = std::nearbyint(v);  // half to even, as torch.round
  return uint8_t(std::clamp(r, 0.f, 255.f));
}

}  // namespace

ImageFormat sniff_image_format(const std::string& bytes) {
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_sig, 8) == 0) return ImageFormat::Png;
  if (bytes.size() >= 3 && uint8_t(bytes[0]) == 0xFF && uint8_t(bytes[1]) == 0xD8 && uint8_t(bytes[2]) == 0xFF)
    return ImageFormat::Jpeg;
  return ImageFormat::Unknown;
}

ImageHeader read_image_header(const fs::path& file, int64_t max_pixels) {
  // PNG's IHDR is at a fixed place; a JPEG's start-of-frame follows the APPn segments (EXIF: up to 64 KiB).
  RegularFile in(file);
  return parse_header(in.read(256 * 1024), file.string(), max_pixels);
}

Image decode_image(const std::string& bytes, int64_t channels, const std::string& name, int64_t max_pixels) {
  if (channels != 1 && channels != 3) throw Error(name + ": can decode to 1 or 3 channels, not " +
                                                  std::to_string(channels));
  parse_header(bytes, name, max_pixels);
  Image img;
  switch (sniff_image_format(bytes)) {
    case ImageFormat::Png: {
      PngInput input{&bytes, 0, {0}};
      if (!decode_png(input, img.pixels, img.height, img.width, img.channels, max_pixels))
        fail(name, std::string("corrupt PNG: ") + input.message);
      break;
    }
    case ImageFormat::Jpeg: {
      JpegError err;
      err.message[0] = 0;
      if (!decode_jpeg(bytes, err, img.pixels, img.height, img.width, img.channels, max_pixels))
        fail(name, std::string("corrupt JPEG: ") + err.message);
      break;
    }
    case ImageFormat::Unknown:
      fail(name, bytes.empty() ? "empty file" : "not a PNG or JPEG image");
  }
  if (img.height <= 0 || img.width <= 0) fail(name, "image has no pixels (width or height 0)");
  return convert_channels(std::move(img), channels);
}

Image read_image(const fs::path& file, int64_t channels, int64_t max_pixels) {
  RegularFile in(file);
  return decode_image(in.read_all(), channels, file.string(), max_pixels);
}

std::pair<int64_t, int64_t> resized_shape(int64_t h, int64_t w, int64_t size) {
  if (h <= w) return {size, int64_t(double(size) * double(w) / double(h))};
  return {int64_t(double(size) * double(h) / double(w)), size};
}

Image resize(const Image& in, int64_t height, int64_t width) {
  if (height < 1 || width < 1) throw Error("resize: target size must be positive");
  if (in.height == height && in.width == width) return in;
  const int64_t c = in.channels;
  // Horizontal pass first, kept in float, then the vertical pass; a pass is skipped when its size is unchanged.
  std::vector<float> mid(size_t(in.height * width * c));
  if (in.width == width) {
    for (size_t i = 0; i < mid.size(); ++i) mid[i] = float(in.pixels[i]);
  } else {
    const Taps t = make_taps(in.width, width);
    for (int64_t y = 0; y < in.height; ++y) {
      const uint8_t* row = in.pixels.data() + size_t(y * in.width * c);
      float* dst = mid.data() + size_t(y * width * c);
      for (int64_t x = 0; x < width; ++x) {
        const float* w = t.weights.data() + size_t(x * t.stride);
        const int64_t first = t.first[size_t(x)], n = t.count[size_t(x)];
        for (int64_t ch = 0; ch < c; ++ch) {
          float acc = 0;
          for (int64_t k = 0; k < n; ++k) acc += w[k] * float(row[(first + k) * c + ch]);
          dst[x * c + ch] = acc;
        }
      }
    }
  }
  Image out;
  out.height = height;
  out.width = width;
  out.channels = c;
  out.pixels.resize(size_t(height * width * c));
  if (in.height == height) {
    for (size_t i = 0; i < mid.size(); ++i) out.pixels[i] = to_byte(mid[i]);
    return out;
  }
  const Taps t = make_taps(in.height, height);
  const int64_t row = width * c;
  std::vector<float> acc(static_cast<size_t>(row));
  for (int64_t y = 0; y < height; ++y) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const float* w = t.weights.data() + size_t(y * t.stride);
    for (int64_t k = 0; k < t.count[size_t(y)]; ++k) {
      const float* src = mid.data() + size_t((t.first[size_t(y)] + k) * row);
      for (int64_t i = 0; i < row; ++i) acc[size_t(i)] += w[k] * src[i];
    }
    uint8_t* dst = out.pixels.data() + size_t(y * row);
    for (int64_t i = 0; i < row; ++i) dst[i] = to_byte(acc[size_t(i)]);
  }
  return out;
}

Image crop(const Image& in, int64_t top, int64_t left, int64_t height, int64_t width) {
  Image out;
  out.height = height;
  out.width = width;
  out.channels = in.channels;
  out.pixels.assign(size_t(height * width * in.channels), 0);
  const int64_t c = in.channels;
  const int64_t x0 = std::max<int64_t>(0, -left), x1 = std::min<int64_t>(width, in.width - left);
  if (x1 <= x0) return out;
  for (int64_t y = 0; y < height; ++y) {
    const int64_t sy = top + y;
    if (sy < 0 || sy >= in.height) continue;
    std::memcpy(out.pixels.data() + size_t((y * width + x0) * c),
                in.pixels.data() + size_t((sy * in.width + left + x0) * c), size_t((x1 - x0) * c));
  }
  return out;
}

Image center_crop(const Image& in, int64_t height, int64_t width) {
  if (in.height == height && in.width == width) return in;
  // A side larger than the image is padded first, (d // 2) before and the rest after, as torchvision does.
  auto offset = [](int64_t size, int64_t want) {
    return want > size ? -((want - size) / 2) : int64_t(std::nearbyint(double(size - want) / 2.0));
  };
  const int64_t top = offset(in.height, height), left = offset(in.width, width);
  return crop(in, top, left, height, width);
}

void to_planes(const Image& img, uint8_t* out) {
  const int64_t plane = img.height * img.width, c = img.channels;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t ch = 0; ch < c; ++ch) out[ch * plane + p] = img.pixels[size_t(p * c + ch)];
}

Image from_planes(const uint8_t* planes, int64_t channels, int64_t height, int64_t width) {
  Image img;
  img.channels = channels;
  img.height = height;
  img.width = width;
  img.pixels.resize(size_t(channels * height * width));
  const int64_t plane = height * width;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t ch = 0; ch < channels; ++ch) img.pixels[size_t(p * channels + ch)] = planes[ch * plane + p];
  return img;
}

void parallel_for_each(int64_t n, int64_t threads, const std::function<void(int64_t)>& fn) {
  threads = std::max<int64_t>(1, std::min(threads, n));
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](int64_t t) {
    for (int64_t i = t; i < n; i += threads) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

Image hflip(const Image& in) {
  Image out = in;
  const int64_t c = in.channels;
  for (int64_t y = 0; y < in.height; ++y)
    for (int64_t x = 0; x < in.width; ++x)
      std::memcpy(out.pixels.data() + size_t((y * in.width + x) * c),
                  in.pixels.data() + size_t((y * in.width + (in.width - 1 - x)) * c), size_t(c));
  return out;
}

CropWindow random_resized_crop_window(int64_t h, int64_t w, double scale_lo, double scale_hi, double ratio_lo,
                                      double ratio_hi, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const double area = double(h) * double(w);
  const double log_lo = std::log(ratio_lo), log_hi = std::log(ratio_hi);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * torch::empty({1}).uniform_(scale_lo, scale_hi, gen).item<double>();
    const double aspect = torch::empty({1}).uniform_(log_lo, log_hi, gen).exp().item<double>();
    const auto cw = int64_t(std::nearbyint(std::sqrt(target * aspect)));
    const auto ch = int64_t(std::nearbyint(std::sqrt(target / aspect)));
    if (0 < cw && cw <= w && 0 < ch && ch <= h) {
      CropWindow win;
      win.height = ch;
      win.width = cw;
      win.top = torch::randint(0, h - ch + 1, {1}, gen).item<int64_t>();
      win.left = torch::randint(0, w - cw + 1, {1}, gen).item<int64_t>();
      return win;
    }
  }
  // Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
  CropWindow win;
  const double in_ratio = double(w) / double(h);
  if (in_ratio < ratio_lo) {
    win.width = w;
    win.height = int64_t(std::nearbyint(double(w) / ratio_lo));
  } else if (in_ratio > ratio_hi) {
    win.height = h;
    win.width = int64_t(std::nearbyint(double(h) * ratio_hi));
  } else {
    win.width = w;
    win.height = h;
  }
  win.top = (h - win.height) / 2;
  win.left = (w - win.width) / 2;
  return win;
}

}  // namespace expctl::data
