// SIGINT during fine-tuning: the run saves the last finished epoch, exits with 1, and a rerun continues from it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

extern char** environ;

TEST(Interrupt, SigintSavesAndARerunContinues) {
  test::TempDir tmp;
  const std::string ckpt = (tmp / "ckpt").string();
  std::vector<std::string> args{EXPCTL_BINARY,
                                "run",
                                EXPCTL_SOURCE_DIR "/configs/test_scenarios/TS0/finetune.yaml",
                                "--set",
                                "paths.checkpoints=" + ckpt,
                                "--set",
                                "paths.datasets=" + (tmp / "data").string(),
                                "--set",
                                "dataset.train_subset=1500",
                                "--set",
                                "dataset.test_subset=100",
                                "--set",
                                "finetune.epochs=3",
                                "--set",
                                "finetune.save_every=0",
                                "--set",
                                "runtime.threads=2",
                                "--only",
                                "finetune"};
  // The data must be there first (the download stage copies Debian's files).
  auto r =
      test::run_expctl("run configs/test_scenarios/TS0/finetune.yaml --only download --set paths.checkpoints=" + ckpt +
                       " --set paths.datasets=" + (tmp / "data").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;

  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string out = (tmp / "first.out").string();
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, EXPCTL_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);

  // Wait (bounded) for the first epoch to finish, then interrupt.
  const fs::path log = tmp / "ckpt/TS0_FineTuning_ResNet18_FashionMNIST/run.log";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline && test::read_file(log).find("epoch 1/3") == std::string::npos) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(exited) << "expctl ended before its first epoch:\n" << test::read_file(out);
  ASSERT_NE(test::read_file(log).find("epoch 1/3"), std::string::npos) << test::read_file(out);
  ::kill(pid, SIGINT);
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  std::string first = test::read_file(out);
  if (first.find("epoch 3/3") != std::string::npos) GTEST_SKIP() << "the run finished before the signal arrived";
  EXPECT_EQ(WEXITSTATUS(status), 1) << first;
  EXPECT_NE(first.find("interrupted"), std::string::npos) << first;
  EXPECT_TRUE(fs::exists(tmp / "ckpt/TS0_FineTuning_ResNet18_FashionMNIST/finetune_interrupted.pt")) << first;
  EXPECT_FALSE(fs::exists(tmp / "ckpt/TS0_FineTuning_ResNet18_FashionMNIST/manifests/finetune.json"));

  std::string cmd;
  for (size_t i = 1; i < args.size(); ++i) cmd += "'" + args[i] + "' ";
  r = test::run_expctl(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("finetune_interrupted.pt (epoch 1 of 3)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1/3"), std::string::npos) << "epoch 1 ran again:\n" << r.output;
  EXPECT_TRUE(fs::exists(tmp / "ckpt/TS0/ResNet18_FashionMNIST_FT_3.pt"));
  EXPECT_FALSE(fs::exists(tmp / "ckpt/TS0_FineTuning_ResNet18_FashionMNIST/finetune_interrupted.pt"));
}
