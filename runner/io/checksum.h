// Streaming file digests (OpenSSL EVP) and the checks built on them.
#pragma once
#include <filesystem>
#include <string>

namespace expctl::io {

/// SHA-256 of a file's bytes as 64 lowercase hex digits, read in chunks (any file size).
/// Throws expctl::Error naming the file when it cannot be read.
///
///     std::string d = expctl::io::sha256_file("downloaded_models/resnet18-f37072fd.pth");
///     // d.rfind("f37072fd", 0) == 0
std::string sha256_file(const std::filesystem::path& file);

/// MD5 of a file's bytes as 32 lowercase hex digits (for data sets that publish MD5 only, like CIFAR-10).
///
///     expctl::io::md5_file("cifar-10-binary.tar.gz") == "c32a1d4ab5d03f1284b67883e8d87530"
std::string md5_file(const std::filesystem::path& file);

/// The expected SHA-256 prefix carried by a torchvision-style file name `name-<hex>.ext` (at least 8 and at most
/// 64 hex digits after the last '-', up to the first '.'), lowercased; "" when the name carries none.
/// Accepts a bare name, a path or a URL (the query string is ignored).
///
///     sha256_prefix_from_name("resnet18-f37072fd.pth")                                  // "f37072fd"
///     sha256_prefix_from_name("https://download.pytorch.org/models/resnet18-f37072fd.pth") // "f37072fd"
///     sha256_prefix_from_name("cifar-10-binary.tar.gz")                                 // ""
std::string sha256_prefix_from_name(const std::string& file_name);

/// Why `file` fails the given checks, or "" when it passes. An empty `sha256_prefix` / `md5` is not checked;
/// both are compared case-insensitively. The text names the algorithm, the expected and the actual digest:
/// "SHA-256 starts with 0badf00d, expected f37072fd (full SHA-256 0badf00d...)".
///
///     std::string why = checksum_mismatch(path, "f37072fd", "");
///     if (!why.empty()) throw expctl::Error(path.string() + ": " + why);
std::string checksum_mismatch(const std::filesystem::path& file, const std::string& sha256_prefix,
                              const std::string& md5);

}  // namespace expctl::io
