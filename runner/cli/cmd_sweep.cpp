// expctl sweep FILE... [--set key=value]... [--cell ID]... [--list | --dry-run | --summary | --emit slurm]
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/parallel/process_group.h"
#include "runner/pipeline/pipeline.h"
#include "runner/sweep/slurm.h"
#include "runner/sweep/summary.h"
#include "runner/sweep/sweep.h"
#include "runner/training/runtime.h"

namespace expctl::cli {
namespace fs = std::filesystem;

namespace {

struct SweepOpts {
  std::vector<std::string> files, sets, cells, sbatch;
  bool list = false, summary_only = false;
  std::string emit, output;
  RunOptions run;
};

// The summary of a sweep's finished cells; returns its folder, or "" when no cell has finished.
fs::path summarise(const std::vector<sweep::Cell>& cells) {
  std::vector<sweep::RunSummary> runs;
  for (const auto& c : cells)
    if (auto r = sweep::read_run(Naming(c.config).report_file("json"), c.id)) runs.push_back(*r);
  if (runs.empty()) return {};
  const fs::path dir = Naming(cells.front().config).sweep_summary_dir();
  sweep::write_summary(dir, Naming(cells.front().config).scenario_name() + " sweep", runs, true);
  return dir;
}

fs::path self_path() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("expctl") : p;
}

// One file's sweep, expanded once: every cell (for the summary and the Slurm script) and the --cell selection.
struct Expanded {
  std::string file;
  std::vector<sweep::Cell> all, cells;
};

void run_cells(const SweepOpts& o, const parallel::WorldInfo& world, const std::vector<Expanded>& sweeps);

// Started as several processes (srun with --ntasks > 1, torchrun), every cell trains data-parallel: one process
// group for the whole sweep; rank 0 prints, writes and summarises.
void run_sweep(const SweepOpts& o) {
  // Expand and validate every file's cells before running any.
  std::vector<Expanded> sweeps;
  for (const auto& f : o.files) {
    Expanded e{f, sweep::expand(f, o.sets), {}};
    e.cells = sweep::select(e.all, o.cells);
    sweeps.push_back(std::move(e));
  }
  parallel::WorldInfo world = parallel::detect_world();
  if (world.world_size == 1 || o.list || !o.emit.empty() || o.run.dry_run || o.summary_only) {
    if (world.rank == 0) run_cells(o, world, sweeps);
    return;
  }
  std::vector<const ScenarioConfig*> scenarios;
  for (const auto& e : sweeps)
    for (const auto& cell : e.all) scenarios.push_back(&cell.config);
  with_process_group(world, scenarios, [&] { run_cells(o, world, sweeps); });
}

void run_cells(const SweepOpts& o, const parallel::WorldInfo& world, const std::vector<Expanded>& sweeps) {
  if (o.list) {
    for (const auto& [file, all, cells] : sweeps) {
      std::cout << file << ": " << cells.size() << " cells\n";
      for (const auto& c : cells)
        std::cout << "  " << c.index << "  " << c.id << "  " << (sweep::finished(c) ? "finished" : "not run") << "  "
                  << Naming(c.config).report_dir().string() << "\n";
    }
    return;
  }
  if (!o.emit.empty()) {
    for (const auto& [file, all, cells] : sweeps) {
      sweep::SlurmOptions so;
      so.expctl = self_path();
      so.workdir = fs::absolute(fs::current_path());
      so.log_dir = fs::absolute(Naming(all.front().config).sweep_summary_dir());
      so.job_name = Naming(all.front().config).scenario_name() + "_sweep";
      so.sbatch = o.sbatch;
      fs::path out = o.output.empty() || sweeps.size() > 1 ? so.log_dir / "sweep.sbatch" : fs::path(o.output);
      fs::create_directories(so.log_dir);  // Slurm does not create the folder of --output
      write_file_atomic(out, sweep::slurm_script(file, o.sets, cells, so));
      fs::permissions(out, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
      std::cout << out.string() << ": Slurm job array of " << cells.size() << " cells; submit with: sbatch "
                << out.string() << "\n";
    }
    return;
  }
  if (o.run.dry_run) {
    for (const auto& [file, all, cells] : sweeps)
      for (const auto& c : cells)
        std::cout << "# sweep cell " << c.index << " " << c.id << " (" << c.settings_text() << ")\n"
                  << Pipeline(c.config, o.run).plan_text();
    return;
  }

  std::vector<std::string> failures;
  size_t total = 0;
  for (const auto& [file, all, cells] : sweeps) {
    if (!o.summary_only) {
      for (const auto& c : cells) {
        ++total;
        spdlog::info("sweep {}: cell {}/{} {} ({}){}", file, c.index + 1, cells.size(), c.id, c.settings_text(),
                     sweep::finished(c) ? ": finished earlier, checking that it is up to date" : "");
        try {
          Pipeline(c.config, o.run).run();
        } catch (const ConfigError&) {
          throw;
        } catch (const std::exception& e) {
          if (stop_requested()) throw;  // interrupted: stop the sweep, rerun continues
          failures.push_back(file + " cell " + c.id + ": " + e.what());
          spdlog::error("sweep {}: cell {} failed: {}; going on with the next cell", file, c.id, e.what());
        }
      }
    }
    // Slurm array tasks run one cell each, concurrently: they leave the summary to `--summary`.
    if ((!o.cells.empty() && !o.summary_only) || world.rank != 0) continue;
    fs::path dir = summarise(all);
    if (dir.empty()) {
      if (o.summary_only) throw Error(file + ": no sweep cell has finished yet; run `expctl sweep " + file + "`");
      continue;
    }
    std::ifstream md(Naming::summary_file(dir, "md"));
    std::cout << "\n"
              << md.rdbuf() << "\n"
              << "sweep summary: " << Naming::summary_file(dir, "md").string() << "\n";
  }
  if (!failures.empty())
    throw Error(std::to_string(failures.size()) + " of " + std::to_string(total) + " sweep cells failed:\n  " +
                join(failures, "\n  "));
}

}  // namespace

void add_sweep(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SweepOpts>();
  auto* cmd = app.add_subcommand(
      "sweep", "Run every cell of a scenario's sweep block (finished cells are skipped), then summarise them");
  cmd->add_option("files", o->files, "scenario YAML files with a sweep block")->required();
  cmd->add_option("--set", o->sets, "override a value in every cell: --set recover.epochs=2 (repeatable)");
  cmd->add_option("--cell", o->cells, "run only this cell: its index or id, e.g. --cell sparsity=0.5 (repeatable)");
  cmd->add_flag("--list", o->list, "list the cells, whether each has finished, and their folders");
  cmd->add_flag("--summary", o->summary_only, "only write the summary of the cells that have finished");
  cmd->add_option("--emit", o->emit, "write a job script instead of running: slurm (one array task per cell)")
      ->check(CLI::IsMember({"slurm"}));
  cmd->add_option("--output,-o", o->output, "where --emit writes the script (default: the sweep's report folder)");
  cmd->add_option("--sbatch", o->sbatch, "an #SBATCH option for --emit slurm, e.g. --sbatch=--gres=gpu:1 (repeatable)");
  cmd->add_option("--only", o->run.only, "run just this stage of every cell, e.g. --only report --force");
  cmd->add_flag("--force", o->run.force, "redo the cells' stages even when they are up to date");
  cmd->add_flag("--dry-run", o->run.dry_run, "print every cell's plan; write nothing");
  cmd->callback([o, &exit_code] { guarded(exit_code, [&] { run_sweep(*o); }); });
}

}  // namespace expctl::cli
