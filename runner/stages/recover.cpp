// recover stage: fine-tunes the pruned model with a fresh optimizer (keeping pruning masks fixed), saving
// {checkpoints}/{TS}/{Model}_{Dataset}_FTAP_{NC|W}_{epoch}.pt every save_every epochs and at the end.
#include "runner/core/pipeline.h"
#include "runner/stages/training_params.h"

namespace expctl {
namespace {

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  out.push_back({PlannedFile::Access::Read, n.pruned_checkpoint(), "pruned model"});
  std::string code = "X";
  if (cfg.has_stage("prune")) {
    const PluginInfo* pruner = Catalog::instance().find("pruner", cfg.stage("prune").get_string("pruner"));
    if (pruner) code = pruner->code;
  }
  for (int64_t e : checkpoint_epochs(p.get_int("epochs"), p.get_int("save_every")))
    out.push_back(
        {PlannedFile::Access::Write, n.recover_checkpoint(code, e), "checkpoint, epoch " + std::to_string(e)});
  out.push_back({PlannedFile::Access::Write, n.report_dir() / "recover_metrics.json", "accuracy and curves"});
  return out;
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "recover";
  e.info.summary = "fine-tune the pruned model to regain accuracy (masks kept), checkpoint every save_every epochs";
  add_training_params(e.info.params, 15);
  e.info.unavailable = "recovery fine-tuning lands with issues #5 and #6";
  e.plan = plan;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
