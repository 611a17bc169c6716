// expctl show-config FILE [--set key=value]...
#include <CLI/CLI.hpp>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/config.h"

namespace expctl::cli {

void add_show_config(CLI::App& app, int& exit_code) {
  auto file = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand("show-config", "Print the resolved configuration (includes, --set, defaults)");
  cmd->add_option("file", *file, "scenario YAML file")->required();
  cmd->add_option("--set", *sets, "override a value (repeatable)");
  cmd->callback([file, sets, &exit_code] {
    guarded(exit_code, [&] { std::cout << load_scenario(*file, *sets).resolved_yaml(); });
  });
}

}  // namespace expctl::cli
