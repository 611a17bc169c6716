#include "runner/core/lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "runner/core/error.h"

namespace expctl {

ScenarioLock::ScenarioLock(const std::filesystem::path& lock_file, const std::string& scenario_name,
                           const std::string& what) {
  std::filesystem::create_directories(lock_file.parent_path());
  fd_ = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(lock_file.string() + ": cannot open the lock file: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::ifstream in(lock_file);
    std::string holder, holder_scenario;
    std::getline(in, holder);
    std::getline(in, holder_scenario);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK && !what.empty())
      throw Error(what + " are being written by " +
                  (holder_scenario.empty() ? std::string("another run") : holder_scenario) + " (" +
                  (holder.empty() ? std::string("another process") : holder) + "); lock file " + lock_file.string() +
                  ". Wait for it to finish, or give this scenario its own names (another scenario.test_scenario "
                  "or paths.checkpoints).");
    if (err == EWOULDBLOCK)
      throw Error("scenario " + scenario_name + " is already running (" +
                  (holder.empty() ? std::string("another process") : holder) + "); lock file " + lock_file.string() +
                  ". Wait for it to finish, or stop it first.");
    throw Error(lock_file.string() + ": cannot lock: " + std::strerror(err));
  }
  // Record who holds it, for the message the next run prints.
  std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  std::ostringstream who;
  who << "pid " << ::getpid() << ", since " << when << "\n" << "scenario " << scenario_name << "\n";
  std::string s = who.str();
  if (::ftruncate(fd_, 0) == 0) {
    ssize_t n = ::pwrite(fd_, s.data(), s.size(), 0);
    (void)n;
  }
}

ScenarioLock::~ScenarioLock() {
  if (fd_ >= 0) {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

WaitLock::WaitLock(const std::filesystem::path& lock_file, const std::function<void()>& on_wait) {
  std::filesystem::create_directories(lock_file.parent_path());
  fd_ = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(lock_file.string() + ": cannot open the lock file: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  if (errno == EWOULDBLOCK && on_wait) on_wait();
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw Error(lock_file.string() + ": cannot lock: " + std::strerror(err));
  }
}

WaitLock::~WaitLock() {
  if (fd_ >= 0) {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

}  // namespace expctl
