// Writing files so that readers never see half of one: checkpoints, manifests, reports.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace expctl {

/// Writes `bytes` to `file` through a temporary file in the same folder (fsync, then rename), so readers see
/// the old file or the new one, never a partial one; creates missing folders. `what` names the content in
/// errors ("checkpoint"). Throws expctl::Error "<file>: could not write <what>: ...; the previous <what> is
/// intact".
void write_file_atomic(const std::filesystem::path& file, std::string_view bytes, const std::string& what = "file");
inline void write_file_atomic(const std::filesystem::path& file, const std::vector<char>& bytes,
                              const std::string& what = "file") {
  write_file_atomic(file, std::string_view(bytes.data(), bytes.size()), what);
}

}  // namespace expctl
