// The checks built on file digests: expected SHA-256 prefixes and MD5 sums, and the record of a verified download.
// The digests themselves (sha256_file, md5_file) are runner/core/hash.h's, the one implementation:
//
//     std::string d = expctl::sha256_file("downloaded_models/resnet18-f37072fd.pth");   // d starts with f37072fd
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "runner/core/hash.h"

namespace expctl::io {

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

/// Size and modification time (ns) of `file`: what changes when it is rewritten, truncated or edited in place.
/// False when it cannot be stat'ed (missing).
bool file_stamp(const std::filesystem::path& file, int64_t* size, int64_t* mtime_ns);

/// Records that `file` was verified just now: its size, modification time and full SHA-256, and where it came
/// from (`source`, a URL), in a hidden file beside it (".<name>.verified"). check_verified() compares against it.
/// Returns the SHA-256.
std::string record_verified(const std::filesystem::path& file, const std::string& source);

/// The SHA-256 recorded by record_verified() for `file`, or "" when there is no (readable) record.
std::string recorded_sha256(const std::filesystem::path& file);

/// Removes the record of `file` (when the file itself is deleted).
void forget_verified(const std::filesystem::path& file);

/// Checks a file that was verified earlier before it is read again: cheap (one stat) while its size and
/// modification time are those recorded, a full SHA-256 otherwise (the record is refreshed when it still
/// matches). Does nothing for a file without a record or a missing file (the reader says it is missing).
/// Throws expctl::DataError "<file>: changed on disk since it was verified (...): SHA-256 is <actual>, expected
/// <recorded> (downloaded from <source>); delete it and run `expctl run SCENARIO.yaml --only download`".
void check_verified(const std::filesystem::path& file);

}  // namespace expctl::io
