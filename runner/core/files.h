// Writing files so that readers never see half of one: checkpoints, manifests, reports; and removing the
// temporary files that a killed process left behind.
#pragma once
#include <sys/types.h>

#include <cstdint>
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

/// What a file that is not a regular one is, from stat's st_mode, for messages: "a directory", "a FIFO (named
/// pipe)", "a character device", "a block device", "a socket"; "not a regular file" for anything else.
std::string file_kind(mode_t mode);

/// A regular file opened for reading, that can never block or stream without end: the path is stat'ed first
/// (a device is never opened: opening one can have effects of its own), then opened with O_NONBLOCK | O_CLOEXEC
/// and checked again on the descriptor (the path may have been swapped for a FIFO in between). So a FIFO, a
/// folder or a link to /dev/zero given where a file is expected is named for what it is.
/// Throws expctl::DataError "<file>: no such file", "<file>: is a directory, not a regular file",
/// "<file>: is a FIFO (named pipe), not a regular file", "<file>: cannot open: <reason>".
///
///     expctl::RegularFile f("checkpoints/TS1/ResNet18_CIFAR10_FT_5.pt");
///     std::string bytes = f.read_all();
class RegularFile {
 public:
  explicit RegularFile(const std::filesystem::path& file);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  /// The size when it was opened.
  int64_t size() const { return size_; }
  /// Device and inode of the opened file (what std::filesystem::equivalent compares).
  dev_t device() const { return device_; }
  ino_t inode() const { return inode_; }
  /// Up to `n` bytes from the current position (fewer at the end of the file). Throws DataError on a read error.
  std::string read(size_t n);
  /// The rest of the file. Throws DataError "<file>: holds more than <limit> bytes, ..." past `limit`, and when
  /// the file grew or shrank while it was read (another process writing it).
  std::string read_all(uint64_t limit = UINT64_MAX);

 private:
  std::filesystem::path file_;
  int fd_ = -1;
  int64_t size_ = 0;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace expctl
