// The one way expctl draws charts: a gnuplot script written into the output folder and run there by gnuplot
// itself, without a shell.
//
//     std::string gp = "set output 'chart.png'\nset title " + plot::quote(title) + "\nplot 'chart.dat' ...\n";
//     plot::draw(dir, "chart", gp, data, "chart.png", log);   // writes dir/chart.gp and dir/chart.dat
//
// Two doors are closed here. (1) No shell: gnuplot is started with an argument vector (posix_spawnp), in `dir`,
// stdin from /dev/null, so no folder name can become a command. (2) Nothing from a scenario can become gnuplot
// code: scripts name their files by fixed relative names (gnuplot runs in `dir`), and every free text goes
// through quote(). gnuplot 5.4 runs `...` command substitution inside double-quoted strings and on the bare
// command line, and joins a line ending in a backslash with the next even inside quotes; single-quoted strings
// take backquotes, backslashes, `@` and `;` literally, but their '' escape fails at the start of a string and
// when doubled. Hence quote(): single quotes, each ' spliced in as the expression . "'" . , control characters
// (newlines) as spaces.
#pragma once
#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace expctl::plot {

/// `text` as a gnuplot string expression that prints it verbatim and can never end the line or run anything:
/// single-quoted, each ' spliced in as "'" ('it' . "'" . 's'), control characters (newline, tab, ...) as spaces.
/// Usable wherever gnuplot takes a string expression (set title/xlabel/ylabel, multiplot title, plot ... title).
std::string quote(std::string_view text);

/// `text` as a double-quoted string column of a gnuplot data file ("layer1.0.conv1"): " becomes ', control
/// characters become spaces (a data file is never executed; this only keeps its columns apart).
std::string data_label(std::string_view text);

/// How long one gnuplot run may take before it is killed: drawing a chart takes well under a second.
inline constexpr std::chrono::seconds kTimeLimit{60};
/// At most this much of gnuplot's output (stdout and stderr) is kept for the log.
inline constexpr size_t kOutputLimit = 16 * 1024;

struct RunResult {
  enum class Status { Drawn, Missing, Failed, TimedOut };
  Status status = Status::Failed;
  int exit_code = 0;        ///< gnuplot's exit status (Failed), or the signal number that ended it (negative)
  std::string output;       ///< stdout and stderr together, the last kOutputLimit bytes
  double time_limit_s = 0;  ///< TimedOut: the limit it ran into
  /// "not found on PATH", "exit 1: <output>", "killed after 60 s": for the warning.
  std::string why() const;
};

/// Runs `program script` with `dir` as its working directory, stdin from /dev/null, stdout and stderr
/// captured; kills it after `limit`. `program` is looked up on PATH.
RunResult run_gnuplot(const std::filesystem::path& dir, const std::string& script, std::chrono::milliseconds limit,
                      const std::string& program = "gnuplot");

/// Writes `dir/name.gp` (and `dir/name.dat` when `data` is not empty) and runs gnuplot on it in `dir`; the
/// script writes the images `charts` names ("training_curves.png") there. Returns true when gnuplot succeeded;
/// otherwise logs "gnuplot failed or is missing: <why>; no <charts> in <dir> (scripts/install-deps.sh installs
/// it)" and returns false.
bool draw(const std::filesystem::path& dir, const std::string& name, const std::string& script, const std::string& data,
          const std::string& charts, spdlog::logger& log);

}  // namespace expctl::plot
