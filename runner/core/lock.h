// One run per scenario at a time: an advisory lock (flock) on {report dir}/.lock. The kernel drops it when
// the process dies, so a crashed run never leaves a stale lock behind.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace expctl {

class ScenarioLock {
 public:
  /// Takes the lock or throws Error("scenario X is already running (pid N, since T); lock file ..."). With `what`
  /// (a lock on files rather than on a scenario): Error("<what> are being written by scenario Y (pid N, since T);
  /// ...") naming the scenario that holds it.
  ScenarioLock(const std::filesystem::path& lock_file, const std::string& scenario_name, const std::string& what = "");
  ~ScenarioLock();
  ScenarioLock(const ScenarioLock&) = delete;
  ScenarioLock& operator=(const ScenarioLock&) = delete;

 private:
  int fd_ = -1;
};

/// A lock that processes take in turn (flock, blocking): sweep cells or Slurm array tasks downloading into the
/// same folder wait for each other instead of writing the same partial file. `on_wait` runs once if the lock is
/// held by another process, before waiting.
class WaitLock {
 public:
  explicit WaitLock(const std::filesystem::path& lock_file, const std::function<void()>& on_wait = {});
  ~WaitLock();
  WaitLock(const WaitLock&) = delete;
  WaitLock& operator=(const WaitLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace expctl
