// Small inputs must not exhaust memory or time: alias expansion, nesting, node count, key count, included files
// (size, FIFOs, devices), the total read, and sweep cells are bounded, each with a message at its place.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/yaml_tree.h"
#include "runner/sweep/sweep.h"
#include "tests/core/config_test_util.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const char* const kMinimal = test::kMinimalScenario;

std::string error_of(const fs::path& file, const std::vector<std::string>& sets = {}) {
  return test::config_error_of(file, sets);
}

// Bounds on time in these tests catch hangs and quadratic growth (54 s for 100k keys before), not speed: they
// leave a wide margin for a loaded CI machine.
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "k0: 0\nk1: 1\n..." (n keys), optionally ending with a repeat of the first key.
std::string many_keys(size_t n, bool duplicate_last) {
  std::string text;
  for (size_t i = 0; i < n; ++i) text += "k" + std::to_string(i) + ": " + std::to_string(i) + "\n";
  if (duplicate_last) text += "k0: again\n";
  return text;
}

// Loads `file` on another thread; fails (and unblocks the reader by opening the FIFO `fifo`) when it takes more
// than a few seconds, so a regression shows as a failure rather than a hung test binary.
std::string error_within_seconds(const fs::path& file, const fs::path& fifo) {
  auto result = std::async(std::launch::async, [file] { return error_of(file); });
  if (result.wait_for(std::chrono::seconds(5)) == std::future_status::ready) return result.get();
  int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  if (fd >= 0) ::close(fd);
  ADD_FAILURE() << "loading " << file << " hangs on the FIFO " << fifo;
  return result.get();
}

// Runs `expctl ARGS...` (no shell, output discarded) and returns its exit code and peak resident memory in MiB.
std::pair<int, double> exit_and_peak_mib(const std::vector<std::string>& args) {
  std::vector<char*> argv{const_cast<char*>(EXPCTL_BINARY)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execv(EXPCTL_BINARY, argv.data());
    ::_exit(127);
  }
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);  // this child's own peak, whatever other tests ran before
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, double(usage.ru_maxrss) / 1024.0};
}

}  // namespace

TEST(Limits, AnAliasBombStopsAtTheAliasQuickly) {
  // 9 levels of 10 aliases: 10^9 nodes if expanded (the fixture 34_alias_bomb.yaml holds the exact message).
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  std::string prev = "a";
  for (char n = 'b'; n <= 'j'; ++n) {
    text += std::string(1, n) + ": &" + n + " [";
    for (int i = 0; i < 10; ++i) text += (i ? ", *" : "*") + prev;
    text += "]\n";
    prev = std::string(1, n);
  }
  ASSERT_LT(text.size(), 500u) << "a few hundred bytes";
  std::vector<std::string> errors;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(parse_yaml(text, "bomb.yaml", errors), nullptr);
  EXPECT_LT(seconds_since(t0), 5.0);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "bomb.yaml:5:36: e: the alias expands the document beyond 100000 nodes, the most a scenario "
            "may hold");

  // Aliases within the limits still work, as copies: a value changed in one place stays there.
  errors.clear();
  YNodePtr root = parse_yaml("a: &a {x: 1, y: [1, 2]}\nb: *a\nc: [*a, *a]\n", "ok.yaml", errors);
  ASSERT_NE(root, nullptr) << errors[0];
  EXPECT_EQ(root->get("c")->items[1]->get("y")->items[1]->scalar, "2");
  root->get("b")->get("x")->scalar = "5";
  EXPECT_EQ(root->get("a")->get("x")->scalar, "1");
}

TEST(Limits, AnAliasCannotNestTheDocumentTooDeep) {
  // 40 levels anchored, then used 30 levels down: each part is allowed, together they are 70 deep.
  std::string text = "a: &a " + std::string(40, '[') + std::string(40, ']') + "\nb: " + std::string(30, '[') + "*a" +
                     std::string(30, ']') + "\n";
  std::vector<std::string> errors;
  EXPECT_EQ(parse_yaml(text, "deep.yaml", errors), nullptr);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "deep.yaml:2:34: b: the alias nests the document more than 64 levels deep, the most a "
            "scenario may hold");
}

TEST(Limits, NestingIsBoundedBeforeYamlCppsOwnGuard) {
  // 100,000 levels of flow lists in 200 KB: yaml-cpp itself would recurse 2,000 levels before giving up.
  std::vector<std::string> errors;
  EXPECT_EQ(parse_yaml(std::string(100000, '[') + std::string(100000, ']'), "nest.yaml", errors), nullptr);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "nest.yaml:1:65: nested more than 64 levels deep, the most a scenario may hold");
}

TEST(Limits, AHundredThousandKeysAreRefusedInLinearTime) {
  const std::string text = many_keys(100000, false);
  std::vector<std::string> errors;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(parse_yaml(text, "keys.yaml", errors), nullptr);
  EXPECT_LT(seconds_since(t0), 5.0) << "checking keys must not be quadratic";
  ASSERT_EQ(errors.size(), 1u);
  // The root and 50,000 keys with their values are 100,001 nodes: the last value is one too many.
  EXPECT_EQ(errors[0],
            "keys.yaml:50000:9: k49999: the document has more than 100000 nodes, the most a scenario may hold");
}

TEST(Limits, DuplicateKeysAmongFortyThousandAreFoundQuickly) {
  std::vector<std::string> errors;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(parse_yaml(many_keys(40000, true), "dup.yaml", errors), nullptr);
  EXPECT_LT(seconds_since(t0), 5.0);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "dup.yaml:40001:1: k0: duplicate key (first defined at line 1)");
}

TEST(Limits, FortyThousandKeysInAScenarioAreLoadedOrRefusedQuickly) {
  test::TempDir tmp;
  // Through include merging and validation: the unknown keys are reported, the list of them capped.
  test::write_file(
      tmp / "base.yaml", std::string("finetune:\n") + [] {
        std::string t;
        for (int i = 0; i < 40000; ++i) t += "  k" + std::to_string(i) + ": " + std::to_string(i) + "\n";
        return t;
      }());
  test::write_file(tmp / "s.yaml", std::string("include: base.yaml\n") + kMinimal);
  auto t0 = std::chrono::steady_clock::now();
  std::string err = error_of(tmp / "s.yaml");
  EXPECT_LT(seconds_since(t0), 5.0);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 100) << "100 problems and a last line";
  EXPECT_NE(err.find("base.yaml:2:3: finetune.k0: unknown key"), std::string::npos) << err.substr(0, 300);
  EXPECT_NE(err.find("\n... and 39900 more problems"), std::string::npos) << err.substr(err.size() - 200);
}

TEST(Limits, OnlyRegularFilesAreRead) {
  test::TempDir tmp;
  const fs::path fifo = tmp / "pipe.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // The scenario itself, an include, and starts_from: none of them blocks or reads a device.
  EXPECT_EQ(error_within_seconds(fifo, fifo), fifo.string() + ": is a FIFO (named pipe), not a regular file");
  test::write_file(tmp / "inc.yaml", std::string("include: [pipe.yaml]\n") + kMinimal);
  EXPECT_EQ(error_within_seconds(tmp / "inc.yaml", fifo), (tmp / "inc.yaml").string() +
                                                              ":1:11: include: " + fifo.string() +
                                                              ": is a FIFO (named pipe), not a regular file");
  test::write_file(tmp / "up.yaml",
                   "schema: 1\nscenario: {test_scenario: TS7, method: P, starts_from: pipe.yaml}\n"
                   "model: {name: ResNet18}\ndataset: {name: CIFAR10}\nstages: [download]\n");
  EXPECT_EQ(error_within_seconds(tmp / "up.yaml", fifo),
            (tmp / "up.yaml").string() + ":2:56: scenario.starts_from: " + fifo.string() +
                " is not a valid scenario:\n" + fifo.string() + ": is a FIFO (named pipe), not a regular file");
  for (const char* dev : {"/dev/zero", "/dev/urandom", "/dev/null"}) {
    test::write_file(tmp / "dev.yaml", std::string("include: ") + dev + "\n" + kMinimal);
    EXPECT_EQ(error_of(tmp / "dev.yaml"),
              (tmp / "dev.yaml").string() + ":1:10: include: " + dev + ": is a character device, not a regular file");
  }
  // A UNIX socket cannot even be opened for reading.
  const fs::path sock = tmp / "sock.yaml";
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(error_of(sock), sock.string() + ": is a socket, not a regular file");
  ::close(s);
}

TEST(Limits, FileSizesAreBoundedOneByOneAndInAll) {
  test::TempDir tmp;
  const std::string comment_line = "#" + std::string(1023, 'x') + "\n";  // 1 KiB
  auto comments = [&](size_t kib) {
    std::string t;
    for (size_t i = 0; i < kib; ++i) t += comment_line;
    return t;
  };
  test::write_file(tmp / "big.yaml", std::string(kMinimal) + comments(1024));
  EXPECT_EQ(error_of(tmp / "big.yaml"),
            (tmp / "big.yaml").string() + ": holds more than 1048576 bytes, the most a scenario file may");
  // Five files of 1000 KiB each are allowed one by one, not together (4 MiB).
  std::string list;
  for (int i = 0; i < 5; ++i) {
    test::write_file(tmp / ("part" + std::to_string(i) + ".yaml"), comments(1000));
    list += (i ? ", part" : "part") + std::to_string(i) + ".yaml";
  }
  test::write_file(tmp / "parts.yaml", "include: [" + list + "]\n" + kMinimal);
  EXPECT_EQ(error_of(tmp / "parts.yaml"),
            (tmp / "parts.yaml").string() + ":1:59: include: " + (tmp / "part4.yaml").string() +
                ": the scenario and the files it includes hold more than 4194304 bytes in all, the most one "
                "scenario may read");
  test::write_file(tmp / "four.yaml",
                   "include: [part0.yaml, part1.yaml, part2.yaml, part3.yaml]\n" + std::string(kMinimal));
  EXPECT_EQ(error_of(tmp / "four.yaml"), "(no error)");
}

TEST(Limits, FilesReadThroughIncludesAreCounted) {
  test::TempDir tmp;
  // 40 includes of a file that includes an empty file 40 times: 1,641 reads of a few hundred bytes.
  auto forty = [](const std::string& name) {
    std::string list;
    for (int i = 0; i < 40; ++i) list += (i ? ", " : "") + name;
    return "include: [" + list + "]\n";
  };
  test::write_file(tmp / "c.yaml", "");
  test::write_file(tmp / "b.yaml", forty("c.yaml"));
  test::write_file(tmp / "a.yaml", forty("b.yaml") + kMinimal);
  auto t0 = std::chrono::steady_clock::now();
  // Read 1,001 is the 15th c.yaml of the 25th b.yaml (1 + 24 * 41 + 1 + 15); nothing is read after it.
  EXPECT_EQ(error_of(tmp / "a.yaml"), (tmp / "b.yaml").string() + ":1:123: include: " + (tmp / "c.yaml").string() +
                                          ": the scenario and its includes read more than 1000 files, the most one "
                                          "scenario may read");
  EXPECT_LT(seconds_since(t0), 5.0);
}

TEST(Limits, SweepCellsAreCountedWithoutExpandingThem) {
  test::TempDir tmp;
  // 16 lists of 100 values: 10^32 cells, beyond 64 bits; refused at once.
  std::string sweep = "sweep:\n";
  std::string values = "[";
  for (int i = 0; i < 100; ++i) values += (i ? ", " : "") + std::to_string(i);
  values += "]";
  for (int k = 0; k < 16; ++k) sweep += "  runtime.seed" + std::string(k, 'x') + ": " + values + "\n";
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + sweep);
  auto t0 = std::chrono::steady_clock::now();
  std::string err;
  try {
    sweep::expand(tmp / "s.yaml", {});
  } catch (const ConfigError& e) {
    err = e.what();
  }
  EXPECT_LT(seconds_since(t0), 5.0);
  std::string lengths;
  for (int k = 0; k < 16; ++k) lengths += k ? " x 100" : "100";
  EXPECT_EQ(err, (tmp / "s.yaml").string() + ":7:3: sweep: the lists give " + lengths +
                     " cells, more than the 1000 one sweep may have; split it into several files");

  // 17 keys of one value each: one cell, but a folder name no file system takes.
  sweep = "sweep:\n";
  for (int k = 0; k < 17; ++k) sweep += "  runtime.seed" + std::string(k, 'x') + ": [1]\n";
  test::write_file(tmp / "s.yaml", std::string(kMinimal) + sweep);
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "s.yaml").string() +
                                          ":7:3: sweep: 17 swept keys, more than the 16 one sweep may vary (each names "
                                          "part of the cell's folder)");

  // At the limit: 1000 cells are fine (counted, not loaded, here).
  test::write_file(
      tmp / "s.yaml", std::string(kMinimal) + "sweep:\n  runtime.seed: " + [] {
        std::string v = "[";
        for (int i = 0; i < 1000; ++i) v += (i ? ", " : "") + std::to_string(i);
        return v + "]";
      }() + "\n");
  EXPECT_EQ(load_scenario(tmp / "s.yaml").sweep[0].values.size(), 1000u);
}

TEST(Limits, ALongIncludeChainIsSmallInMemory) {
  test::TempDir tmp;
  // 999 files of a few bytes, each including the next (1000 reads with the scenario): each level held a 1 MiB read
  // buffer while the levels below it were read, 1.19 GB in all; now each holds only its small tree.
  constexpr int kLevels = 999;
  for (int i = 0; i < kLevels; ++i)
    test::write_file(tmp / ("c" + std::to_string(i) + ".yaml"),
                     i + 1 < kLevels ? "include: c" + std::to_string(i + 1) + ".yaml\n" : "runtime: {seed: 7}\n");
  test::write_file(tmp / "s.yaml", std::string("include: c0.yaml\n") + kMinimal);
  const auto [chain_exit, chain_mib] = exit_and_peak_mib({"validate", (tmp / "s.yaml").string()});
  EXPECT_EQ(chain_exit, 0);
  // The same binary validating the plain scenario: what the chain adds is the difference.
  test::write_file(tmp / "plain.yaml", kMinimal);
  const auto [plain_exit, plain_mib] = exit_and_peak_mib({"validate", (tmp / "plain.yaml").string()});
  EXPECT_EQ(plain_exit, 0);
  EXPECT_LT(chain_mib - plain_mib, 64.0) << "chain " << chain_mib << " MiB, plain " << plain_mib << " MiB";
  EXPECT_LT(chain_mib, 300.0);
}

TEST(Limits, NodesAreCountedAcrossIncludedFiles) {
  test::TempDir tmp;
  // Each file expands aliases to about 90,000 nodes, under the 100,000 one document may build; three of them pass
  // the 200,000 one scenario may build in all, and the third is where loading stops.
  auto expanding = [](const std::string& stage) {
    std::string t = stage + ":\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n";
    const std::string names = "abcde";
    for (size_t i = 1; i < names.size(); ++i) {
      t += std::string("  ") + names[i] + ": &" + names[i] + " [";
      const int copies = i + 1 < names.size() ? 10 : 7;
      for (int k = 0; k < copies; ++k) t += (k ? ", *" : "*") + std::string(1, names[i - 1]);
      t += "]\n";
    }
    return t;
  };
  test::write_file(tmp / "one.yaml", expanding("finetune"));
  test::write_file(tmp / "two.yaml", expanding("recover"));
  test::write_file(tmp / "three.yaml", expanding("prune"));
  test::write_file(tmp / "s.yaml", std::string("include: [one.yaml, two.yaml, three.yaml]\n") + kMinimal);
  std::vector<std::string> errors;
  ASSERT_NE(parse_yaml(test::read_file(tmp / "one.yaml"), "one.yaml", errors), nullptr) << errors[0];
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of(tmp / "s.yaml"), (tmp / "three.yaml").string() +
                                          ":6:10: the alias expands the scenario and the files it includes beyond "
                                          "200000 nodes in all, the most one scenario may hold");
  EXPECT_LT(seconds_since(t0), 5.0);
}

TEST(Limits, ALongIncludeChainOverALargeFileIsLoadedInLinearTime) {
  test::TempDir tmp;
  // 999 levels over a file of 40,000 keys (80,000 nodes): each level merged by copying everything below it was 999
  // copies of the large tree; moved into place, a level costs what it adds.
  std::string big = "finetune:\n";
  for (int i = 0; i < 40000; ++i) big += "  k" + std::to_string(i) + ": " + std::to_string(i) + "\n";
  constexpr int kLevels = 999;
  for (int i = 0; i < kLevels; ++i)
    test::write_file(tmp / ("c" + std::to_string(i) + ".yaml"),
                     i + 1 < kLevels ? "include: c" + std::to_string(i + 1) + ".yaml\nrecover: {epochs: " +
                                           std::to_string(i + 1) + "}\n"
                                     : big);
  std::vector<std::string> errors;
  auto t0 = std::chrono::steady_clock::now();
  YNodePtr root = load_yaml_with_includes(tmp / "c0.yaml", errors);
  EXPECT_LT(seconds_since(t0), 5.0);
  ASSERT_NE(root, nullptr) << errors[0];
  EXPECT_EQ(root->get("finetune")->entries.size(), 40000u);
  EXPECT_EQ(root->get("recover")->get("epochs")->scalar, "1") << "the including file's value wins";
}
