// Helpers for the engine tests: temporary folders, files, and running the expctl binary.
#pragma once
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "runner/core/error.h"

namespace expctl::test {

/// The message of the expctl::DataError `fn` throws, or "(no DataError)".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const expctl::DataError& e) {
    return e.what();
  }
  return "(no DataError)";
}

/// A fresh folder under the system temp dir (mkdtemp), removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "expctl-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = std::filesystem::canonical(pattern);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
};

/// Changes the working directory for a scope (for code that resolves paths against it).
struct Cwd {
  explicit Cwd(const std::filesystem::path& p) : old(std::filesystem::current_path()) {
    std::filesystem::current_path(p);
  }
  ~Cwd() { std::filesystem::current_path(old); }
  std::filesystem::path old;
};

/// Writes `bytes` exactly (binary), creating folders.
inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

/// The whole file ("" when it cannot be read: tests poll files that may not exist yet).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

/// Runs a shell command line; stdout and stderr together.
inline CommandResult run_shell(const std::string& cmd) {
  FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// Runs `expctl ARGS` (a shell command line fragment) in folder `cwd`.
inline CommandResult run_expctl(const std::string& args, const std::filesystem::path& cwd = EXPCTL_SOURCE_DIR) {
  return run_shell("cd '" + cwd.string() + "' && '" + std::string(EXPCTL_BINARY) + "' " + args);
}

/// Number of entries below `dir` (recursively).
inline size_t count_entries(const std::filesystem::path& dir) {
  size_t n = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir);
       it != std::filesystem::recursive_directory_iterator(); ++it)
    ++n;
  return n;
}

}  // namespace expctl::test
