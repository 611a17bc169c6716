// Content hashes: fingerprints of resolved configurations, and the identity of a file's content (lineage).
#pragma once
#include <filesystem>
#include <string>

namespace expctl {
/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(const std::string& data);

/// Lower-case hex SHA-256 of a file's bytes, read in 1 MiB chunks. Throws Error naming the file.
std::string sha256_file(const std::filesystem::path& file);

/// Lower-case hex MD5 of a file's bytes (for data sets that publish MD5 only, like CIFAR-10).
std::string md5_file(const std::filesystem::path& file);

/// The identity of a file's content (its SHA-256), hashed once per process while the file keeps its size,
/// modification time and inode: lineage asks for the same checkpoint several times in one run. "" when the
/// file is missing.
std::string content_id(const std::filesystem::path& file);
}  // namespace expctl
