// Checks shared by the data-set readers: every failure names the file and what is wrong with it.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "runner/core/error.h"

namespace expctl::data::detail {

[[noreturn]] inline void fail(const std::filesystem::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

inline void require_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    fail(file, std::filesystem::exists(file, ec) ? "not a regular file" : "file not found");
}

inline void require_dir(const std::filesystem::path& dir, const std::string& expected) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) fail(dir, "directory not found (expected " + expected + ")");
}

// Labels are checked in one vectorised pass; only on failure do we look for the first offender to report it.
inline void check_labels(const torch::Tensor& labels, int64_t num_classes, const std::filesystem::path& file) {
  if (labels.numel() == 0) return;
  auto bad = (labels < 0).logical_or(labels >= num_classes);
  if (!bad.any().item<bool>()) return;
  int64_t i = bad.nonzero()[0][0].item<int64_t>();
  fail(file, "record " + std::to_string(i) + ": label " + std::to_string(labels[i].item<int64_t>()) +
                 " out of range [0, " + std::to_string(num_classes - 1) + "]");
}

// A file of fixed-size records (CIFAR binary batches) as uint8 [records, record_bytes].
inline torch::Tensor read_records(const std::filesystem::path& file, int64_t record_bytes, const std::string& format) {
  require_file(file);
  const auto bytes = static_cast<int64_t>(std::filesystem::file_size(file));
  if (bytes == 0) fail(file, "empty file (expected records of " + std::to_string(record_bytes) + " bytes)");
  if (bytes % record_bytes != 0)
    fail(file, "size " + std::to_string(bytes) + " bytes is not a multiple of the record length " +
                   std::to_string(record_bytes) + " (truncated or not a " + format + " file)");
  auto records = torch::empty({bytes / record_bytes, record_bytes}, torch::kUInt8);
  std::ifstream in(file, std::ios::binary);
  if (!in || !in.read(reinterpret_cast<char*>(records.data_ptr<uint8_t>()), bytes)) fail(file, "read error");
  return records;
}

// Class names, one per line (CIFAR's batches.meta.txt, fine_label_names.txt); `expected` names are required.
inline std::vector<std::string> read_name_lines(const std::filesystem::path& file, size_t expected) {
  std::ifstream in(file);
  if (!in) fail(file, "cannot open");
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.size() != expected)
    fail(file, "expected " + std::to_string(expected) + " class names, found " + std::to_string(names.size()));
  return names;
}

}  // namespace expctl::data::detail
