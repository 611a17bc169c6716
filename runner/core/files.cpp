#include "runner/core/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <regex>

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
  const fs::path tmp = temp_sibling(file, "tmp");
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

fs::path temp_sibling(const fs::path& target, const std::string& tag, bool unique) {
  static std::atomic<unsigned> counter{0};
  const fs::path t = target.has_filename() ? target : target.parent_path();  // "out/" names "out"
  std::string name = "." + t.filename().string() + "." + tag + std::to_string(::getpid());
  if (unique) name += "-" + std::to_string(counter++);
  return t.parent_path() / name;
}

std::optional<pid_t> temp_owner(const std::string& file_name) {
  // Trailing "-<n>" groups: the counter, and the clock ticks that earlier versions also put in extraction names.
  static const std::regex pattern(R"(^\..+\.(?:tmp|extracting-|replaced-)([0-9]{1,9})(?:-[0-9]+)*$)");
  std::smatch m;
  if (!std::regex_match(file_name, m, pattern)) return std::nullopt;
  const long pid = std::stol(m[1].str());
  if (pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

namespace {

bool process_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

void remove_stale_in(const fs::path& dir, int levels_left, std::vector<fs::path>& removed) {
  std::error_code ec;
  std::vector<fs::path> subfolders;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const auto owner = temp_owner(p.filename().string());
    if (owner && process_gone(*owner)) {
      std::error_code rm;
      if (fs::remove_all(p, rm) != static_cast<std::uintmax_t>(-1) && !rm) removed.push_back(p);
    } else if (!owner && levels_left > 0 && it->is_directory(ec) && !it->is_symlink(ec)) {
      subfolders.push_back(p);
    }
  }
  for (const auto& sub : subfolders) remove_stale_in(sub, levels_left - 1, removed);
}

}  // namespace

std::vector<fs::path> remove_stale_temp_files(const std::vector<fs::path>& folders) {
  std::vector<fs::path> removed;
  for (const auto& f : folders) remove_stale_in(f, 2, removed);
  return removed;
}

std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

RegularFile::RegularFile(const fs::path& file) : file_(file) {
  const std::string name = file.string();
  auto not_regular = [&](mode_t mode) { return DataError(name + ": is " + file_kind(mode) + ", not a regular file"); };
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) throw DataError(name + ": no such file");
    throw DataError(name + ": cannot open: " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) throw not_regular(st.st_mode);
  fd_ = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd_ < 0) throw DataError(name + ": cannot open: " + errno_text());
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    const mode_t mode = st.st_mode;
    ::close(fd_);
    fd_ = -1;
    throw not_regular(mode);
  }
  size_ = static_cast<int64_t>(st.st_size);
  device_ = st.st_dev;
  inode_ = st.st_ino;
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RegularFile::read(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd_, &out[got], n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw DataError(file_.string() + ": read error: " + errno_text());
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

std::string RegularFile::read_all(uint64_t limit) {
  const off_t pos = ::lseek(fd_, 0, SEEK_CUR);
  const uint64_t left = static_cast<uint64_t>(size_) - static_cast<uint64_t>(pos < 0 ? 0 : pos);
  if (left > limit)
    throw DataError(file_.string() + ": holds more than " + std::to_string(limit) + " bytes, the most expctl reads");
  // One byte more than stat said: a file that grows while it is read is noticed, not read half.
  std::string out = read(static_cast<size_t>(left) + 1);
  if (out.size() != left)
    throw DataError(file_.string() + ": changed size while it was read (another process writes it?)");
  return out;
}

}  // namespace expctl
