#include "runner/core/plot.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>
#include <vector>

#include "runner/core/error.h"
#include "runner/core/files.h"

extern char** environ;

namespace expctl::plot {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

bool is_control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

struct Fd {
  int fd = -1;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

void keep_tail(std::string& out, const char* p, size_t n) {
  out.append(p, n);
  if (out.size() > kOutputLimit) out.erase(0, out.size() - kOutputLimit);
}

// Reads the child's output until it closes the pipe or the deadline passes.
void read_output(int fd, Clock::time_point deadline, std::string& out) {
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) return;
    if (ready <= 0) continue;
    const ssize_t got = ::read(fd, buf, sizeof buf);
    if (got > 0)
      keep_tail(out, buf, static_cast<size_t>(got));
    else if (got == 0 || errno != EINTR)
      return;
  }
}

// waitpid until the deadline; 0 when the child is still running then.
pid_t wait_until(pid_t pid, int& status, Clock::time_point deadline) {
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w != 0 && !(w < 0 && errno == EINTR)) return w;
    if (Clock::now() >= deadline) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

std::string quote(std::string_view text) {
  // gnuplot 5.4 does not read '' inside single quotes reliably ('''a' and 'a''''b' are syntax errors), so a quote
  // is spliced in as "'" (a double-quoted string without a backquote runs nothing): 'it' . "'" . 's'.
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "' . \"'\" . '";
    else
      out += is_control(c) ? ' ' : c;
  }
  return out + "'";
}

std::string data_label(std::string_view text) {
  std::string out = "\"";
  for (char c : text) out += c == '"' ? '\'' : is_control(c) ? ' ' : c;
  return out + "\"";
}

std::string RunResult::why() const {
  switch (status) {
    case Status::Drawn:
      return "drawn";
    case Status::Missing:
      return "not found on PATH (scripts/install-deps.sh installs it)";
    case Status::TimedOut:
    case Status::Failed:
      break;
  }
  std::string s = status == Status::TimedOut ? fmt::format("killed after {:g} s", time_limit_s)
                  : exit_code < 0            ? "killed by signal " + std::to_string(-exit_code)
                                             : "exit " + std::to_string(exit_code);
  return output.empty() ? s : s + "; its output:\n" + output;
}

RunResult run_gnuplot(const fs::path& dir, const std::string& script, std::chrono::milliseconds limit,
                      const std::string& program) {
  RunResult r;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(std::string("cannot create a pipe for gnuplot: ") + strerror(errno));
  Fd read_end{fds[0]}, write_end{fds[1]};
  SpawnSetup s;
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&s.actions, write_end.fd, 1);
  posix_spawn_file_actions_adddup2(&s.actions, write_end.fd, 2);
  posix_spawn_file_actions_addchdir_np(&s.actions, dir.c_str());
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv{const_cast<char*>(program.c_str()), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, program.c_str(), &s.actions, &s.attr, argv.data(), environ);
  write_end.reset();  // the child holds the only write end now: EOF when it exits
  if (rc != 0) {
    // glibc reports exec and chdir failures here; the folder exists (the script was just written into it).
    r.status = rc == ENOENT && fs::is_directory(dir) ? RunResult::Status::Missing : RunResult::Status::Failed;
    r.exit_code = 127;
    if (r.status == RunResult::Status::Failed) r.output = "cannot start " + program + ": " + strerror(rc);
    return r;
  }
  const auto deadline = Clock::now() + limit;
  read_output(read_end.fd, deadline, r.output);
  int status = 0;
  if (wait_until(pid, status, deadline) == 0) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.status = RunResult::Status::TimedOut;
    r.time_limit_s = std::chrono::duration<double>(limit).count();
    return r;
  }
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
    r.status = r.exit_code == 0 ? RunResult::Status::Drawn : RunResult::Status::Failed;
  } else {
    r.exit_code = WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
  }
  return r;
}

bool draw(const fs::path& dir, const std::string& name, const std::string& script, const std::string& data,
          const std::string& charts, spdlog::logger& log) {
  if (!data.empty()) write_file_atomic(dir / (name + ".dat"), data, "chart data");
  write_file_atomic(dir / (name + ".gp"), script, "gnuplot script");
  const RunResult r = run_gnuplot(dir, name + ".gp", kTimeLimit);
  if (r.status == RunResult::Status::Drawn) {
    if (!r.output.empty()) log.info("gnuplot {}: {}", (dir / (name + ".gp")).string(), r.output);
    return true;
  }
  log.warn("gnuplot failed or is missing: {}; no {} in {}", r.why(), charts, dir.string());
  return false;
}

}  // namespace expctl::plot
