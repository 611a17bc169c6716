// The plot helper: gnuplot runs without a shell, in the output folder, with a time limit; free text in a script
// stays text (gnuplot runs `...` inside double quotes and joins a line ending in a backslash even inside quotes).
#include "runner/core/plot.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;
using std::chrono::milliseconds;

namespace {

bool have_gnuplot() { return test::run_shell("command -v gnuplot").exit_code == 0; }

// Every string an attacker might try: shell syntax, gnuplot's command substitution and its own commands.
const std::vector<std::string>& hostile() {
  static const std::vector<std::string> h{"'; touch X; echo '",
                                          "$(touch Y)",
                                          "`touch Z`",
                                          "a\n!touch N\nprint 'b",
                                          "x\\\n'; system('touch C'); print '",
                                          "\"; system(\"touch Q\"); print \"",
                                          "@macro; `touch M` ''",
                                          "'''a'''' '"};
  return h;
}

// Names of files the commands above would create, found anywhere under `dir`.
std::vector<std::string> side_effects(const fs::path& dir) {
  std::vector<std::string> found;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const std::string name = it->path().filename().string();
    if (name.size() == 1 && std::string("XYZNCQM").find(name) != std::string::npos) found.push_back(name);
  }
  return found;
}

struct Captured {
  std::ostringstream text;
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("plot_test", std::make_shared<spdlog::sinks::ostream_sink_st>(text));
};

}  // namespace

TEST(PlotQuote, SingleQuotesWithQuotesSplicedInAndControlCharactersAsSpaces) {
  EXPECT_EQ(plot::quote("it's"), "'it' . \"'\" . 's'");
  EXPECT_EQ(plot::quote("''"), "'' . \"'\" . '' . \"'\" . ''");
  EXPECT_EQ(plot::quote("a\nb\tc\r"), "'a b c '");
  EXPECT_EQ(plot::quote("`x` $(y) \\ @z"), "'`x` $(y) \\ @z'");
  EXPECT_EQ(plot::data_label("layer1.0 \"a\"\nb"), "\"layer1.0 'a' b\"");
}

TEST(PlotQuote, GnuplotPrintsQuotedTextVerbatimAndRunsNothing) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  test::TempDir tmp;
  test::Cwd cwd(tmp.path());
  std::string script = "set print 'printed.txt'\n";
  for (const auto& s : hostile()) script += "print " + plot::quote(s) + "\n";
  test::write_file(tmp / "p.gp", script);
  plot::RunResult r = plot::run_gnuplot(tmp.path(), "p.gp", milliseconds(20000));
  ASSERT_EQ(r.status, plot::RunResult::Status::Drawn) << r.why();
  std::string expected;
  for (auto s : hostile()) {
    for (char& c : s)
      if (c == '\n') c = ' ';
    expected += s + "\n";
  }
  EXPECT_EQ(test::read_file(tmp / "printed.txt"), expected);
  EXPECT_EQ(side_effects(tmp.path()), std::vector<std::string>{});
}

TEST(PlotDraw, HostileFolderAndTitlesDrawTheChartAndRunNothing) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  test::TempDir tmp;
  test::Cwd cwd(tmp.path());  // where a shell would have run the injected commands
  for (const auto& h : hostile()) {
    const fs::path dir = tmp / ("out " + h);
    fs::create_directories(dir);
    const std::string gp = "set terminal pngcairo noenhanced size 300,200\nset output 'chart.png'\nset title " +
                           plot::quote(h) + "\nplot 'chart.dat' using 1:2 with lines title " + plot::quote(h) + "\n";
    Captured c;
    EXPECT_TRUE(plot::draw(dir, "chart", gp, "1 2\n2 3\n", "chart.png", *c.log)) << h << c.text.str();
    EXPECT_TRUE(fs::exists(dir / "chart.png")) << h;
    EXPECT_TRUE(fs::exists(dir / "chart.gp")) << h;
  }
  EXPECT_EQ(side_effects(tmp.path()), std::vector<std::string>{});
}

TEST(PlotRun, RunsInTheFolderWithStdinClosedAndReportsExitAndOutput) {
  test::TempDir tmp;
  test::write_file(tmp / "s.sh", "pwd; read x; echo \"read:$?\"; echo oops >&2; exit 3\n");
  plot::RunResult r = plot::run_gnuplot(tmp.path(), "s.sh", milliseconds(20000), "sh");
  EXPECT_EQ(r.status, plot::RunResult::Status::Failed);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.output, tmp.path().string() + "\nread:1\noops\n");
  EXPECT_EQ(r.why(), "exit 3; its output:\n" + r.output);
}

TEST(PlotRun, KeepsOnlyTheEndOfALongOutput) {
  test::TempDir tmp;
  test::write_file(tmp / "s.sh", "i=0; while [ $i -lt 3000 ]; do echo 0123456789; i=$((i+1)); done; echo last\n");
  plot::RunResult r = plot::run_gnuplot(tmp.path(), "s.sh", milliseconds(20000), "sh");
  EXPECT_EQ(r.status, plot::RunResult::Status::Drawn);
  EXPECT_EQ(r.output.size(), plot::kOutputLimit);
  EXPECT_EQ(r.output.substr(r.output.size() - 5), "last\n");
}

TEST(PlotRun, IsKilledAtTheTimeLimit) {
  test::TempDir tmp;
  const auto t0 = std::chrono::steady_clock::now();
  plot::RunResult r = plot::run_gnuplot(tmp.path(), "30", milliseconds(300), "sleep");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(r.status, plot::RunResult::Status::TimedOut);
  EXPECT_EQ(r.why(), "killed after 0.3 s");
}

TEST(PlotDraw, AMissingGnuplotGivesTheWarningAndNoChart) {
  test::TempDir tmp;
  const std::string path = getenv("PATH") ? getenv("PATH") : "";
  setenv("PATH", (tmp / "nothing here").c_str(), 1);
  Captured c;
  const bool drawn = plot::draw(tmp.path(), "chart", "set output 'chart.png'\n", "", "chart.png", *c.log);
  setenv("PATH", path.c_str(), 1);
  EXPECT_FALSE(drawn);
  EXPECT_NE(c.text.str().find("gnuplot failed or is missing: not found on PATH (scripts/install-deps.sh installs it); "
                              "no chart.png in " +
                              tmp.path().string()),
            std::string::npos)
      << c.text.str();
  EXPECT_TRUE(fs::exists(tmp / "chart.gp"));
  EXPECT_FALSE(fs::exists(tmp / "chart.dat")) << "no data, no data file";
}
