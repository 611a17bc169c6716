// recover stage: fine-tunes the pruned model with a fresh optimizer, keeping pruning masks at zero, and saves
// {checkpoints}/{TS}/{Model}_{Dataset}_FTAP_{NC|W}_{epoch}.pt every save_every epochs and at the last.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "plugins/pruner.h"
#include "runner/core/error.h"
#include "runner/data/registry.h"
#include "runner/models/checkpoint.h"
#include "runner/pipeline/pipeline.h"
#include "runner/stages/lineage.h"
#include "runner/stages/train_job.h"
#include "runner/training/runtime.h"
#include "runner/training/trainer.h"
#include "runner/training/training_params.h"

namespace expctl {
namespace fs = std::filesystem;

namespace {

// Checkpoint names carry the pruner's short code (NC, W): the recover stage needs the prune stage's pruner.
std::string pruner_code(const ScenarioConfig& cfg) {
  if (!cfg.has_stage("prune"))
    throw Error(cfg.file.string() +
                ": the recover stage fine-tunes the output of the prune stage; list prune before it");
  return Catalog::instance().find("pruner", prune_stage_options(cfg.stage("prune")).pruner)->code;
}

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  out.push_back({PlannedFile::Access::Read, n.pruned_checkpoint(), "pruned model"});
  out.back().upstream = true;
  std::string code = cfg.has_stage("prune") ? pruner_code(cfg) : "?";
  const TrainingOptions o = training_options(p);
  for (int64_t e : checkpoint_epochs(o.epochs, o.save_every)) {
    out.push_back(
        {PlannedFile::Access::Write, n.recover_checkpoint(code, e), "checkpoint, epoch " + std::to_string(e)});
    out.back().shared = true;  // {Model}_{Dataset}_FTAP_{code}_{E}: every scenario of the test scenario with this pruner
  }
  out.push_back({PlannedFile::Access::Write, n.stage_metrics("recover"), "accuracy and curves"});
  return out;
}

class RecoverStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    const ScenarioConfig& cfg = ctx.config;
    const std::string code = pruner_code(cfg);
    torch::Device device = prepare_runtime(cfg, *ctx.log);
    const fs::path pruned = ctx.naming.pruned_checkpoint();
    if (!fs::exists(pruned))
      throw Error(pruned.string() + ": the pruned model is missing; the prune stage makes it (expctl run " +
                  cfg.file.string() + " --only prune)");
    models::Checkpoint ck;
    models::Network model = models::load_checkpoint(pruned, &ck);
    data::Split train_split = data::load_dataset(cfg, true).to(device);
    data::Split test = data::load_dataset(cfg, false).to(device);

    TrainJob job = make_train_job(ctx, "recover", model, train_split, test, device,
                                  [&](int64_t e) { return ctx.naming.recover_checkpoint(code, e); });
    for (const auto& kv : ck.masks) job.masks[kv.key()] = kv.value();
    job.meta["pruner"] = code;
    job.meta["source"] = lineage(ctx, "recover", pruned)["source"];
    ctx.log->info("recovering {} ({} masked tensors)", pruned.string(), job.masks.size());
    TrainResult r = train(job);
    if (r.interrupted || !parallel::is_main()) return;  // rank 0 writes the metrics

    const EpochRecord& last = r.history.back();
    nlohmann::ordered_json out =
        training_summary(r, ctx.naming.scenario_name(), device, {{"accuracy", ck.meta.value("accuracy", 0.0)}},
                         ctx.naming.recover_checkpoint(code, last.epoch));
    const fs::path metrics_file = ctx.naming.stage_metrics("recover");
    write_file_atomic(metrics_file, out.dump(2) + "\n");
    ctx.log->info("test accuracy: {:.2f}% pruned, {:.2f}% after {} epochs of recovery",
                  out["before"]["accuracy"].get<double>(), last.test_accuracy, last.epoch);
    ctx.outputs = r.checkpoints;
    ctx.outputs.push_back(metrics_file);
  }
};

StageEntry entry() {
  StageEntry e;
  e.info.name = "recover";
  e.info.summary = "fine-tune the pruned model to regain accuracy (masks kept), checkpoint every save_every epochs";
  e.info.params = training_binder(15).table();
  e.plan = plan;
  e.preflight = [](const ScenarioConfig& cfg, const Naming& n, const Params& p, bool force) {
    return foreign_checkpoints(cfg, n, plan(cfg, n, p), force);
  };
  e.create = [] { return std::make_unique<RecoverStage>(); };
  e.data_parallel = true;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
