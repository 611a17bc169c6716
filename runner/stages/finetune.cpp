// finetune stage: evaluates the adapted pretrained model, fine-tunes it, saves
// {checkpoints}/{TS}/{Model}_{Dataset}_FT_{epoch}.pt every save_every epochs and at the end.
#include "runner/core/pipeline.h"
#include "runner/stages/training_params.h"

namespace expctl {
namespace {

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  out.push_back({PlannedFile::Access::Read, n.datasets_dir() / cfg.dataset_name(), "data set"});
  if (cfg.model.get_bool("pretrained"))
    out.push_back({PlannedFile::Access::Read, n.models_dir(), "pretrained weights"});
  for (int64_t e : checkpoint_epochs(p.get_int("epochs"), p.get_int("save_every")))
    out.push_back({PlannedFile::Access::Write, n.finetune_checkpoint(e), "checkpoint, epoch " + std::to_string(e)});
  out.push_back(
      {PlannedFile::Access::Write, n.report_dir() / "finetune_metrics.json", "accuracy before/after, curves"});
  return out;
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "finetune";
  e.info.summary = "evaluate the adapted pretrained model, fine-tune it, checkpoint every save_every epochs";
  add_training_params(e.info.params, 30);
  e.info.unavailable = "fine-tuning lands with issue #4 (fine-tuning stage, metrics, reports)";
  e.plan = plan;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
