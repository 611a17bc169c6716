// expctl validate FILE... [--set key=value]...
#include <CLI/CLI.hpp>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/sweep/sweep.h"

namespace expctl::cli {

void add_validate(CLI::App& app, int& exit_code) {
  auto files = std::make_shared<std::vector<std::string>>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand("validate", "Check scenario files strictly; print every problem with its line");
  cmd->add_option("files", *files, "scenario YAML files")->required();
  cmd->add_option("--set", *sets, "override a value: --set finetune.epochs=5 (repeatable)");
  cmd->callback([files, sets, &exit_code] {
    for (const auto& f : *files) {
      int code = 0;
      guarded(code, [&] {
        ScenarioConfig cfg = load_scenario(f, *sets);
        std::string sweep;
        if (!cfg.sweep.empty())  // every cell is checked too
          sweep = ", sweep: " + std::to_string(sweep::expand(f, *sets).size()) + " cells";
        std::cout << f << ": ok (" << Naming(cfg).scenario_name() << ", stages: " << join(cfg.stages) << sweep
                  << ")\n";
      });
      exit_code = std::max(exit_code, code);
    }
  });
}

}  // namespace expctl::cli
