// Subcommands of the expctl CLI, one per file; main.cpp only wires them.
#pragma once
#include <functional>

namespace CLI {
class App;
}

namespace expctl::cli {

/// Runs `body`, turning exceptions into exit codes: ConfigError and usage errors -> 2 (message on stderr),
/// other failures -> 1. Stores the code in `exit_code`.
void guarded(int& exit_code, const std::function<void()>& body);

void add_run(CLI::App& app, int& exit_code);
void add_validate(CLI::App& app, int& exit_code);
void add_list(CLI::App& app, int& exit_code);
void add_describe(CLI::App& app, int& exit_code);
void add_show_config(CLI::App& app, int& exit_code);
void add_sweep(CLI::App& app, int& exit_code);
void add_compare(CLI::App& app, int& exit_code);
void add_export(CLI::App& app, int& exit_code);

}  // namespace expctl::cli
