// One run per scenario: the second lock holder is refused with a message naming the first.
#include "runner/core/lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
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
