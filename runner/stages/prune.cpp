// prune stage: loads the fine-tuned checkpoint of the same test scenario, evaluates it, prunes it with the
// selected pruner (its parameters sit in the same block), evaluates again and saves the pruned model.
#include "runner/core/pipeline.h"

namespace expctl {
namespace {

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  int64_t from = p.get_int("from_epoch");
  std::string what = "fine-tuned model";
  if (from == 0 && cfg.upstream && cfg.upstream->has_stage("finetune")) {
    from = cfg.upstream->stage("finetune").get_int("epochs");
    what += " (last epoch of " + cfg.upstream->file.string() + ")";
  }
  if (from > 0)
    out.push_back({PlannedFile::Access::Read, n.finetune_checkpoint(from), what});
  else
    out.push_back({PlannedFile::Access::Read, n.checkpoint_dir(), what + " (newest FT checkpoint)"});
  out.push_back({PlannedFile::Access::Read, n.datasets_dir() / cfg.dataset_name(),
                 "calibration data (" + p.get_string("calibration.split") + " split)"});
  out.push_back({PlannedFile::Access::Write, n.pruned_checkpoint(), "pruned model"});
  out.push_back({PlannedFile::Access::Write, n.report_dir() / "prune_stats.json", "per-layer pruning statistics"});
  return out;
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "prune";
  e.info.summary = "load the fine-tuned model, prune it with the selected pruner, evaluate before and after";
  ParamTable& t = e.info.params;
  t.add_plugin("pruner", "pruner", "the pruning method (see `expctl list`); its parameters join this block");
  t.add_int("from_epoch", 0, "fine-tuning epoch to start from (0: the last epoch of scenario.starts_from)").min(0);
  e.info.unavailable = "pruning lands with issues #5 (Neuron Coverage) and #6 (Wanda)";
  e.plan = plan;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
