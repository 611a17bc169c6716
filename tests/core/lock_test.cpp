// One run per scenario: the second lock holder is refused with a message naming the first.
#include "runner/core/lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <atomic>
#include <chrono>
#include <thread>
#include <unistd.h>

#include "runner/core/error.h"
#include "tests/core/test_util.h"

using namespace expctl;

TEST(Lock, SecondHolderIsRefusedUntilTheFirstReleases) {
  test::TempDir tmp;
  auto file = tmp / "report/.lock";
  {
    ScenarioLock first(file, "TS1_X_ResNet18_CIFAR10");
    try {
      ScenarioLock second(file, "TS1_X_ResNet18_CIFAR10");
      FAIL() << "second lock was granted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("scenario TS1_X_ResNet18_CIFAR10 is already running (pid " + std::to_string(::getpid())),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find(file.string()), std::string::npos) << msg;
    }
  }
  ScenarioLock again(file, "TS1_X_ResNet18_CIFAR10");  // released by the destructor
}

TEST(Lock, HeldByAnotherProcessAndReleasedWhenItDies) {
  test::TempDir tmp;
  auto file = tmp / ".lock";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ScenarioLock held(file, "S");
    char c = 1;
    if (::write(ready[1], &c, 1) != 1) _exit(1);
    ::pause();  // killed by the parent, without running any destructor
    _exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  EXPECT_THROW(ScenarioLock(file, "S"), Error);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_NO_THROW(ScenarioLock(file, "S"));  // the kernel dropped the dead process's lock
}

// Sweep cells downloading into one folder take turns: the second waits (and says so) until the first releases.
TEST(Lock, WaitLockWaitsForTheHolder) {
  test::TempDir tmp;
  auto file = tmp / "data/.download.lock";
  std::atomic<bool> waited{false}, acquired{false};
  std::thread second;
  {
    WaitLock first(file);
    second = std::thread([&] {
      WaitLock l(file, [&] { waited = true; });
      acquired = true;
    });
    for (int i = 0; i < 200 && !waited; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(waited.load());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(acquired.load());  // still held by `first`
  }
  second.join();
  EXPECT_TRUE(acquired.load());
  bool called = false;
  WaitLock free_lock(file, [&] { called = true; });  // free: no waiting, no callback
  EXPECT_FALSE(called);
}
