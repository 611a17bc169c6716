// expctl run FILE... [--set key=value]... [--only STAGE] [--force] [--dry-run]
// Under torchrun or an srun step of several tasks, each process runs this; they form one data-parallel group.
#include <CLI/CLI.hpp>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/error.h"
#include "runner/parallel/process_group.h"
#include "runner/pipeline/pipeline.h"
#include "runner/training/runtime.h"

namespace expctl::cli {

void add_run(CLI::App& app, int& exit_code) {
  struct Opts {
    std::vector<std::string> files, sets;
    RunOptions run;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("run", "Run scenarios: their stages in order (finished stages are skipped)");
  cmd->add_option("files", opts->files, "scenario YAML files, run one after another")->required();
  cmd->add_option("--set", opts->sets, "override a value: --set finetune.epochs=5 (repeatable)");
  cmd->add_option("--only", opts->run.only, "run just this stage");
  cmd->add_flag("--force", opts->run.force, "redo stages even when they are up to date");
  cmd->add_flag("--dry-run", opts->run.dry_run, "print the plan (stages, files read and written); write nothing");
  cmd->callback([opts, &exit_code] {
    guarded(exit_code, [&] {
      // Validate everything before running anything: a typo in the third file must not cost two runs.
      std::vector<Pipeline> pipelines;
      for (const auto& f : opts->files) pipelines.emplace_back(load_scenario(f, opts->sets), opts->run);
      parallel::WorldInfo world = parallel::detect_world();
      if (opts->run.dry_run) {
        if (world.rank == 0)
          for (const auto& p : pipelines) std::cout << p.plan_text();
        return;
      }
      // Several processes: one process group for every scenario of this command.
      std::vector<const ScenarioConfig*> scenarios;
      for (const auto& p : pipelines) scenarios.push_back(&p.config());
      with_process_group(world, scenarios, [&] {
        for (auto& p : pipelines) p.run();
      });
    });
  });
}

}  // namespace expctl::cli
