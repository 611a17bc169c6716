// finetune stage: evaluates the adapted pretrained model, fine-tunes it, and saves
// {checkpoints}/{TS}/{Model}_{Dataset}_FT_{epoch}.pt every save_every epochs and at the last; the model before
// fine-tuning goes to {report dir}/initial.pt so the report can measure it like every other row.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "runner/core/hash.h"
#include "runner/data/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "runner/models/models.h"
#include "runner/pipeline/pipeline.h"
#include "runner/stages/lineage.h"
#include "runner/stages/train_job.h"
#include "runner/training/runtime.h"
#include "runner/training/trainer.h"
#include "runner/training/training_params.h"

namespace expctl {
namespace fs = std::filesystem;

namespace {

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  out.push_back({PlannedFile::Access::Read, n.datasets_dir() / cfg.dataset_name(), "data set"});
  for (const auto& f : models::ModelRegistry::find(cfg.model_name())->files(cfg.model, n.models_dir()))
    out.push_back({PlannedFile::Access::Read, f.destination, f.what});
  // A model read from the user's own file (TorchScript) is what that file holds, not its name.
  if (const fs::path file = models::model_file(cfg); !file.empty()) {
    out.push_back({PlannedFile::Access::Read, file, "the model's TorchScript file"});
    out.back().upstream = true;
  }
  out.push_back({PlannedFile::Access::Write, n.initial_model(), "model before fine-tuning"});
  const TrainingOptions o = training_options(p);
  for (int64_t e : checkpoint_epochs(o.epochs, o.save_every)) {
    out.push_back({PlannedFile::Access::Write, n.finetune_checkpoint(e), "checkpoint, epoch " + std::to_string(e)});
    out.back().shared = true;  // {Model}_{Dataset}_FT_{E}: every fine-tuning scenario of the test scenario
  }
  out.push_back(
      {PlannedFile::Access::Write, n.stage_metrics("finetune"), "accuracy before/after, curves"});
  return out;
}

// The file the model starts from, for its lineage: the pretrained weights, the user's TorchScript file, or none
// (random initialisation).
fs::path start_file(const ScenarioConfig& cfg, const Naming& n) {
  for (const auto& f : models::ModelRegistry::find(cfg.model_name())->files(cfg.model, n.models_dir()))
    return f.destination;
  return models::model_file(cfg);
}

class FinetuneStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    const ScenarioConfig& cfg = ctx.config;
    const Params& p = ctx.params;
    torch::Device device = prepare_runtime(cfg, *ctx.log);
    data::Split train_split = data::load_dataset(cfg, true).to(device);
    data::Split test = data::load_dataset(cfg, false).to(device);
    ctx.log->info("data: {} train / {} test images ({})", train_split.size(), test.size(), test.source);

    // The model before fine-tuning: measured once per configuration (again with --force).
    const fs::path initial = ctx.naming.initial_model();
    nlohmann::json before;
    if (fs::exists(initial) && !ctx.options.force) {
      auto ck = models::read_checkpoint(initial);
      if (ck.meta.value("fingerprint", "") == ctx.fingerprint) before = ck.meta.at("evaluation");
    }
    models::Network model = models::build_model(cfg);
    // Data parallel, the evaluation is shared: every rank takes part when any lacks the result.
    bool measure = before.is_null();
    for (double missing : parallel::all_gather(measure ? 1.0 : 0.0)) measure = measure || missing > 0;
    if (measure) {
      model->to(device);
      metrics::EvalResult ev = evaluate_all_ranks(model, test, training_options(p).eval_batch_size, device);
      before = {{"accuracy", ev.accuracy}, {"loss", ev.loss}, {"images", ev.count}};
      if (parallel::is_main()) {
        nlohmann::json meta = lineage(ctx, "finetune", start_file(cfg, ctx.naming));
        meta["role"] = "before fine-tuning";
        meta["evaluation"] = before;
        meta["accuracy"] = ev.accuracy;
        models::save_checkpoint(initial, model, meta);
      }
    }
    ctx.log->info("before fine-tuning: test accuracy {:.2f}% (loss {:.4f})", before["accuracy"].get<double>(),
                  before["loss"].get<double>());

    TrainJob job = make_train_job(ctx, "finetune", model, train_split, test, device,
                                  [&](int64_t e) { return ctx.naming.finetune_checkpoint(e); });
    if (fs::path from = start_file(cfg, ctx.naming); !from.empty())
      job.meta["source"] = {{"path", from.string()}, {"sha256", content_id(from)}};
    else
      job.meta["source"] = {{"init", "random, seed " + std::to_string(cfg.run.seed)}};
    TrainResult r = train(job);
    if (r.interrupted || !parallel::is_main()) return;  // rank 0 writes the metrics

    const EpochRecord& last = r.history.back();
    nlohmann::ordered_json out =
        training_summary(r, ctx.naming.scenario_name(), device, before, ctx.naming.finetune_checkpoint(last.epoch));
    out["initial"] = initial.string();
    out["initial_sha256"] = content_id(initial);
    out["test_images"] = test.size();
    out["test_source"] = test.source;
    const fs::path metrics_file = ctx.naming.stage_metrics("finetune");
    write_file_atomic(metrics_file, out.dump(2) + "\n");
    ctx.log->info("test accuracy: {:.2f}% before fine-tuning, {:.2f}% after {} epochs",
                  before["accuracy"].get<double>(), last.test_accuracy, last.epoch);
    ctx.outputs = r.checkpoints;
    ctx.outputs.push_back(initial);
    ctx.outputs.push_back(metrics_file);
  }
};

StageEntry entry() {
  StageEntry e;
  e.info.name = "finetune";
  e.info.summary = "evaluate the adapted pretrained model, fine-tune it, checkpoint every save_every epochs";
  e.info.params = training_binder(30).table();
  e.plan = plan;
  e.preflight = [](const ScenarioConfig& cfg, const Naming& n, const Params& p, bool force) {
    return foreign_checkpoints(cfg, n, plan(cfg, n, p), force);
  };
  e.create = [] { return std::make_unique<FinetuneStage>(); };
  e.data_parallel = true;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
