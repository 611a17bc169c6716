// Fashion-MNIST's IDX files (the format of its four .gz files, uncompressed), written by tests: images of a pixel
// pattern that differs with every coordinate, so that a misplaced row or record is caught, and labels (i * 3) mod
// `classes`.
#pragma once
#include <cstdint>
#include <vector>

namespace expctl::test {

using Bytes = std::vector<unsigned char>;

inline void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back((v >> s) & 0xff);
}

inline unsigned char mnist_pixel(int i, int y, int x) { return (i * 29 + y * 28 + x) % 256; }

/// An images file: header (`magic`, count, rows, cols), then `data_count` images (default: count) of mnist_pixel.
inline Bytes idx_images(int count, int rows = 28, int cols = 28, uint32_t magic = 2051, int data_count = -1) {
  Bytes b;
  put_u32(b, magic);
  put_u32(b, count);
  put_u32(b, rows);
  put_u32(b, cols);
  for (int i = 0; i < (data_count < 0 ? count : data_count); ++i)
    for (int y = 0; y < rows; ++y)
      for (int x = 0; x < cols; ++x) b.push_back(mnist_pixel(i, y, x));
  return b;
}

/// A labels file: header (`magic`, count), then (i * 3) mod `classes` for every i, 10 at index `bad_at`.
inline Bytes idx_labels(int count, uint32_t magic = 2049, int bad_at = -1, int classes = 10) {
  Bytes b;
  put_u32(b, magic);
  put_u32(b, count);
  for (int i = 0; i < count; ++i) b.push_back(i == bad_at ? 10 : (i * 3) % classes);
  return b;
}

}  // namespace expctl::test
