// expctl compare FILE... [--set key=value]... [--output DIR]
// Builds one table and one pair of charts from the finished runs of several pruning scenarios (typically
// nc.yaml and wanda.yaml): the sweep cells that have finished, or else the scenario's plain run.
#include <CLI/CLI.hpp>

#include <fstream>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/sweep/summary.h"
#include "runner/sweep/sweep.h"

namespace expctl::cli {
namespace fs = std::filesystem;

namespace {

struct CompareOpts {
  std::vector<std::string> files, sets;
  std::string output;
  bool no_plot = false;
};

void compare(const CompareOpts& o) {
  std::vector<sweep::RunSummary> runs;
  std::vector<std::string> missing, methods;
  std::string ts;
  for (const auto& f : o.files) {
    ScenarioConfig base = load_scenario(f, o.sets);
    if (!base.has_stage("prune"))
      throw ConfigError(f + ": not a pruning scenario (no prune stage); compare takes files such as nc.yaml and "
                            "wanda.yaml");
    if (ts.empty()) ts = base.test_scenario();
    if (base.test_scenario() != ts)
      throw ConfigError(f + ": belongs to test scenario " + base.test_scenario() + ", the first file to " + ts);
    methods.push_back(base.method());
    size_t before = runs.size();
    if (!base.sweep.empty())
      for (const auto& c : sweep::expand(f, o.sets))
        if (auto r = sweep::read_run(Naming(c.config).report_file("json"), c.id)) runs.push_back(*r);
    if (runs.size() == before)
      if (auto r = sweep::read_run(Naming(base).report_file("json"), "plain")) runs.push_back(*r);
    if (runs.size() == before)
      missing.push_back(f + ": no finished run; make one with `expctl run " + f + "`" +
                        (base.sweep.empty() ? "" : " or `expctl sweep " + f + "`"));
  }
  if (!missing.empty()) throw Error("nothing to compare yet:\n  " + join(missing, "\n  "));
  ScenarioConfig first = load_scenario(o.files.front(), o.sets);
  const fs::path dir = o.output.empty() ? Naming(first).comparison_dir(methods) : fs::path(o.output);
  sweep::write_summary(dir, ts + ": " + join(methods, " vs "), runs, !o.no_plot);
  std::ifstream md(Naming::summary_file(dir, "md"));
  std::cout << md.rdbuf() << "\ncomparison: " << Naming::summary_file(dir, "md").string() << "\n";
}

}  // namespace

void add_compare(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<CompareOpts>();
  auto* cmd = app.add_subcommand(
      "compare", "Compare finished pruning runs of several scenarios (e.g. nc.yaml wanda.yaml): one table, two charts");
  cmd->add_option("files", o->files, "pruning scenario files (their finished sweep cells, else their plain run)")
      ->required();
  cmd->add_option("--set", o->sets, "the --set options the runs were made with (they change names and folders)");
  cmd->add_option("--output,-o", o->output, "output folder (default: {reports}/{TS}/compare_{methods}/)");
  cmd->add_flag("--no-plot", o->no_plot, "write the tables only");
  cmd->callback([o, &exit_code] { guarded(exit_code, [&] { compare(*o); }); });
}

}  // namespace expctl::cli
