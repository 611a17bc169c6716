// Writing files so that readers never see half of one: checkpoints, manifests, reports; and removing the
// temporary files that a killed process left behind.
#pragma once
#include <sys/types.h>

#include <filesystem>
#include <optional>
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

/// A hidden temporary name beside `target` that names this process: "<dir>/.<name>.<tag><PID>" (plus
/// "-<n>", a per-process counter, when `unique`). Every temporary file or folder expctl creates is named so,
/// which lets remove_stale_temp_files() tell whose it is.
///
///     temp_sibling("ck/a.pt", "tmp")                // ck/.a.pt.tmp4242
///     temp_sibling("d/CIFAR10", "extracting-", true) // d/.CIFAR10.extracting-4242-0
std::filesystem::path temp_sibling(const std::filesystem::path& target, const std::string& tag, bool unique = false);

/// The PID in a name made by temp_sibling() (tags "tmp", "extracting-", "replaced-"), or nothing for any other
/// name (a resumable download's ".part" carries none and is never treated as stale).
std::optional<pid_t> temp_owner(const std::string& file_name);

/// Removes, in each folder and its subfolders up to two levels down, the temporary files and folders (named by
/// temp_sibling()) of processes that are gone: kill(pid, 0) fails with ESRCH. A live process's files, and any
/// whose process cannot be told (EPERM: another user's), are kept. PIDs are only meaningful on one host, so a
/// folder shared between hosts (NFS) must not be written by two hosts at once. Missing folders are skipped;
/// failures to remove are ignored (the next run tries again). Returns the paths removed.
std::vector<std::filesystem::path> remove_stale_temp_files(const std::vector<std::filesystem::path>& folders);

}  // namespace expctl
