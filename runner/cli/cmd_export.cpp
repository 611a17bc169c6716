// expctl export CHECKPOINT [-o OUT] [--form eager|deployed] [--input H W]: a checkpoint as a TorchScript file that
// Python runs without expctl: the network as it trains (eager), or frozen with its batch norms folded (deployed).
#include <CLI/CLI.hpp>
#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/zip_check.h"
#include "runner/models/checkpoint.h"
#include "runner/models/deployment.h"
#include "runner/models/torchscript_export.h"

namespace expctl::cli {
namespace {

namespace fs = std::filesystem;

bool has_record(const std::vector<io::ZipRecord>& records, const std::string& suffix) {
  for (const auto& r : records)
    if (r.name.size() >= suffix.size() && r.name.compare(r.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  return false;
}

// Why `target` must not be written, or "". Only an earlier export (a TorchScript file that is not an expctl
// training state, itself a TorchScript archive) may be replaced: writing over the checkpoint being exported, or
// over any other checkpoint, would lose a model that cannot be made again from the TorchScript file.
std::string why_not_overwrite(const fs::path& target, const fs::path& checkpoint) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(target, ec))) return "";  // a dangling symlink exists too
  // By device and inode: the same file through a symlink, a hard link or another relative path.
  if (fs::equivalent(target, checkpoint, ec) && !ec) return "is the checkpoint being exported";
  try {
    RegularFile in(target);
    const std::string bytes = in.read_all();
    const auto records = io::check_zip(bytes, target.string());
    const bool torchscript = has_record(records, "/constants.pkl") && has_record(records, "/data.pkl");
    bool ours = false;  // an expctl checkpoint or training state: its pickle names expctl's own keys
    for (const auto& r : records)
      if (r.method == 0 && r.name.size() >= 8 && r.name.compare(r.name.size() - 8, 8, "data.pkl") == 0) {
        const std::string_view pkl = std::string_view(bytes).substr(r.data_offset, r.compressed_size);
        ours = ours || pkl.find("expctl.checkpoint") != std::string_view::npos ||
               pkl.find("expctl_epoch") != std::string_view::npos;
      }
    if (ours) return "is an expctl checkpoint (or training state)";
    if (!torchscript) return "exists and is not a TorchScript file";
    return "";
  } catch (const DataError& e) {
    return std::string("exists and is not a TorchScript file (") + e.what() + ")";
  }
}

}  // namespace

void add_export(CLI::App& app, int& exit_code) {
  auto file = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "export", "Write a checkpoint's model as TorchScript (Python: torch.jit.load(OUT)(images) gives the logits)");
  cmd->add_option("checkpoint", *file, "an expctl checkpoint (.pt)")->required();
  cmd->add_option("-o,--output", *out,
                  "the TorchScript file (default: CHECKPOINT with .torchscript.pt, or .deployed.pt with --form "
                  "deployed); an earlier export is replaced, a checkpoint never");
  auto form = std::make_shared<std::string>("eager");
  cmd->add_option("--form", *form,
                  "eager: the network as it trains; deployed: frozen, batch norms folded into the convs, checked "
                  "against the checkpoint's logits (Python: torch.jit.optimize_for_inference(torch.jit.load(OUT)))")
      ->check(CLI::IsMember({"eager", "deployed"}));
  auto input = std::make_shared<std::vector<int64_t>>(std::vector<int64_t>{32, 32});
  cmd->add_option("--input", *input, "height and width of the images the deployed form is checked on (default 32 32)")
      ->expected(2)
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->callback([file, out, form, input, &exit_code] {
    guarded(exit_code, [&] {
      const bool deployed = *form == "deployed";
      fs::path target = *out;
      if (target.empty()) target = fs::path(*file).replace_extension(deployed ? ".deployed.pt" : ".torchscript.pt");
      if (const std::string why = why_not_overwrite(target, *file); !why.empty())
        throw ConfigError("expctl export: " + target.string() + ": " + why +
                          "; export does not overwrite it: give another -o");
      models::Network model = models::load_checkpoint(*file);
      model->eval();
      if (deployed)
        models::write_deployable(*model, (*input)[0], (*input)[1], target);
      else
        models::export_torchscript(*model, model->graph(), target);
      std::cout << target.string() << "\n";
    });
  });
}

}  // namespace expctl::cli
