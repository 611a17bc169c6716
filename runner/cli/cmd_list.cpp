// expctl list: registered models, data sets, pruners and stages.
#include <CLI/CLI.hpp>
#include <iomanip>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/registry.h"

namespace expctl::cli {

void add_list(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("list", "List registered models, data sets, pruners and stages");
  cmd->callback([&exit_code] {
    guarded(exit_code, [] {
      const Catalog& c = Catalog::instance();
      for (const auto& kind : plugin_kinds()) {
        std::cout << kind << "s:\n";
        for (const auto& name : c.names(kind)) {
          const PluginInfo* p = c.find(kind, name);
          std::cout << "  " << std::left << std::setw(18) << name << p->summary;
          std::cout << "\n";
        }
      }
      std::cout << "\n`expctl describe NAME` shows a plugin's parameters.\n";
    });
  });
}

}  // namespace expctl::cli
