// One run per scenario at a time: an advisory lock (flock) on {report dir}/.lock. The kernel drops it when
// the process dies, so a crashed run never leaves a stale lock behind.
#pragma once
#include <filesystem>
#include <string>

namespace expctl {

class ScenarioLock {
 public:
  /// Takes the lock or throws Error("... is already running (pid N, since T); lock file ...").
  ScenarioLock(const std::filesystem::path& lock_file, const std::string& scenario_name);
  ~ScenarioLock();
  ScenarioLock(const ScenarioLock&) = delete;
  ScenarioLock& operator=(const ScenarioLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace expctl
