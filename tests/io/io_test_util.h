// Helpers shared by the io tests: temporary folders, deterministic bytes, archives built with libarchive,
// and the local HTTP test server (tests/io/http_server.py) run as a child process.
#pragma once
#include <archive.h>
#include <archive_entry.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/core/test_util.h"

extern char** environ;

namespace expctl::io::test {

namespace fs = std::filesystem;

using ::expctl::test::read_file;
using ::expctl::test::TempDir;
using ::expctl::test::write_file;

/// `n` pseudo-random bytes, the same for the same seed (a 64-bit LCG; no <random> distribution differences).
inline std::string deterministic_bytes(std::size_t n, std::uint64_t seed) {
  std::string s(n, '\0');
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    s[i] = static_cast<char>(x >> 56);
  }
  return s;
}

/// Every path under `dir` (relative, generic form), sorted; symlinks are listed, not followed.
inline std::vector<std::string> list_tree(const fs::path& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out.push_back(e.path().lexically_relative(dir).generic_string());
  std::sort(out.begin(), out.end());
  return out;
}

/// One entry of an archive made by make_archive.
struct Entry {
  enum Kind { kFile, kDir, kSymlink, kHardlink } kind = kFile;
  std::string name;
  std::string content;  // kFile
  std::string target;   // kSymlink / kHardlink
};

enum class ArchiveFormat { kTarGz, kTar, kZip };

/// Writes an archive with exactly these entries and names (libarchive writes "../x" and "/x" as given).
inline void make_archive(const fs::path& path, const std::vector<Entry>& entries, ArchiveFormat format) {
  struct archive* a = archive_write_new();
  if (format == ArchiveFormat::kZip) {
    archive_write_set_format_zip(a);
  } else {
    archive_write_set_format_pax_restricted(a);
    if (format == ArchiveFormat::kTarGz) archive_write_add_filter_gzip(a);
  }
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) {
    throw std::runtime_error("cannot create " + path.string() + ": " + archive_error_string(a));
  }
  for (const auto& e : entries) {
    struct archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_mtime(entry, 1700000000, 0);
    switch (e.kind) {
      case Entry::kFile:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_size(entry, static_cast<la_int64_t>(e.content.size()));
        break;
      case Entry::kDir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        archive_entry_set_perm(entry, 0755);
        break;
      case Entry::kSymlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_perm(entry, 0777);
        archive_entry_set_symlink(entry, e.target.c_str());
        break;
      case Entry::kHardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_hardlink(entry, e.target.c_str());
        archive_entry_set_size(entry, 0);
        break;
    }
    if (archive_write_header(a, entry) != ARCHIVE_OK) {
      throw std::runtime_error("cannot add " + e.name + ": " + archive_error_string(a));
    }
    if (e.kind == Entry::kFile && !e.content.empty()) {
      archive_write_data(a, e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
}

/// The files of CIFAR-10's binary release (cifar-10-batches-bin/), with `records` records of
/// 1 label byte + 3072 pixel bytes per batch file, plus batches.meta.txt.
inline std::vector<Entry> cifar_like_entries(int records) {
  std::vector<Entry> entries;
  entries.push_back({Entry::kDir, "cifar-10-batches-bin/", "", ""});
  entries.push_back({Entry::kFile, "cifar-10-batches-bin/batches.meta.txt",
                     "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n", ""});
  const char* batches[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
  std::uint64_t seed = 1;
  for (const char* b : batches) {
    std::string data;
    for (int r = 0; r < records; ++r) {
      data.push_back(static_cast<char>((r + seed) % 10));                         // label
      data += deterministic_bytes(3072, seed * 1000 + static_cast<unsigned>(r));  // R, G, B planes of 32x32
    }
    entries.push_back({Entry::kFile, std::string("cifar-10-batches-bin/") + b, data, ""});
    ++seed;
  }
  return entries;
}

/// tests/io/http_server.py as a child process on 127.0.0.1; stopped (SIGTERM + wait) by the destructor.
class HttpServer {
 public:
  HttpServer(const fs::path& root, const fs::path& log) : log_(log) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    const std::string script = EXPCTL_SOURCE_DIR "/tests/io/http_server.py";
    std::vector<std::string> args = {"python3", "-u", script, "--root", root.string(), "--log", log.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawnp(&pid_, "python3", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error("cannot start python3 " + script);
    }
    std::string line;
    char c = 0;
    while (::read(fds[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    ::close(fds[0]);  // the server prints nothing else; a closed pipe would only matter if it did
    if (line.empty()) {
      stop();
      throw std::runtime_error("the test HTTP server " + script + " did not start");
    }
    port_ = std::stoi(line);
  }
  ~HttpServer() { stop(); }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

  /// The logged requests whose path is exactly `path`, as "range=<Range header or ->".
  std::vector<std::string> requests(const std::string& path) const {
    std::vector<std::string> out;
    std::ifstream in(log_);
    std::string line;
    while (std::getline(in, line)) {
      const auto space = line.find(' ');
      if (line.substr(0, space) == path) out.push_back(line.substr(space + 1));
    }
    return out;
  }

 private:
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace expctl::io::test
