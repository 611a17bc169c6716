// expctl: pruning experiments on LibTorch, described in YAML. This file only wires the subcommands.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "runner/cli/commands.h"
#include "runner/metrics/environment.h"

int main(int argc, char** argv) {
  // Before anything large is allocated: freed memory stays mapped unless EXPCTL_MALLOC=default (environment.h).
  try {
    expctl::metrics::configure_host_memory();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "expctl: error: %s\n", e.what());
    return 2;
  }
  CLI::App app{"expctl: run pruning experiments described in YAML (see README.md)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "expctl 0.1.0");
  int exit_code = 0;
  expctl::cli::add_run(app, exit_code);
  expctl::cli::add_validate(app, exit_code);
  expctl::cli::add_list(app, exit_code);
  expctl::cli::add_describe(app, exit_code);
  expctl::cli::add_show_config(app, exit_code);
  expctl::cli::add_sweep(app, exit_code);
  expctl::cli::add_compare(app, exit_code);
  expctl::cli::add_export(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help or the usage error
    return code == 0 ? 0 : 2;
  }
  return exit_code;
}
