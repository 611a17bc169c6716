// Content hashes for fingerprints (resolved-config hashes in manifests and checkpoints).
#pragma once
#include <string>

namespace expctl {
/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(const std::string& data);
}  // namespace expctl
