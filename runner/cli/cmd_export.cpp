// expctl export CHECKPOINT [-o OUT]: a checkpoint as a TorchScript file that Python runs without expctl.
#include <CLI/CLI.hpp>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/models/checkpoint.h"
#include "runner/models/torchscript_export.h"

namespace expctl::cli {

void add_export(CLI::App& app, int& exit_code) {
  auto file = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "export", "Write a checkpoint's model as TorchScript (Python: torch.jit.load(OUT)(images) gives the logits)");
  cmd->add_option("checkpoint", *file, "an expctl checkpoint (.pt)")->required();
  cmd->add_option("-o,--output", *out, "the TorchScript file (default: CHECKPOINT with .torchscript.pt)");
  cmd->callback([file, out, &exit_code] {
    guarded(exit_code, [&] {
      std::filesystem::path target = *out;
      if (target.empty()) target = std::filesystem::path(*file).replace_extension(".torchscript.pt");
      models::Network model = models::load_checkpoint(*file);
      model->eval();
      models::export_torchscript(*model, model->graph(), target);
      std::cout << target.string() << "\n";
    });
  });
}

}  // namespace expctl::cli
