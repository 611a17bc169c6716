#include "runner/core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runner/core/error.h"

namespace expctl {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

void write_file_atomic(const fs::path& file, std::string_view bytes, const std::string& what) {
  const std::string intact = fs::exists(file) ? "; the previous " + what + " is intact" : "";
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(file.string() + ": cannot create folder " + dir.string() + ": " + ec.message() + intact);
  // Same folder as the target, so rename() is atomic (same file system); pid-suffixed so two processes writing
  // the same checkpoint do not write into one temporary file.
  const fs::path tmp = dir / ("." + file.filename().string() + ".tmp" + std::to_string(::getpid()));
  auto fail = [&](const std::string& why) {
    fs::remove(tmp, ec);
    throw Error(file.string() + ": could not write " + what + ": " + why + intact);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp.string() + ": " + errno_text());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = errno_text();
      ::close(fd);
      fail("write to " + tmp.string() + " failed: " + why);
    }
    done += static_cast<size_t>(n);
  }
  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  if (::fsync(fd) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    fail("fsync of " + tmp.string() + " failed: " + why);
  }
  if (::close(fd) != 0) fail("close of " + tmp.string() + " failed: " + errno_text());
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("rename of " + tmp.string() + " failed: " + errno_text());
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // make the rename itself durable; best effort
    ::close(dfd);
  }
}

}  // namespace expctl
