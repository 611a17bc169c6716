// prune stage: loads the fine-tuned checkpoint of the same test scenario, evaluates it, prunes it with the
// selected pruner (its parameters sit in the same block) on calibration images, evaluates again, and saves the
// pruned model (masks included) and per-layer statistics.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <optional>

#include "plugins/pruner.h"
#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/data/loader.h"
#include "runner/data/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "runner/pipeline/pipeline.h"
#include "runner/stages/lineage.h"
#include "runner/training/runtime.h"
#include "runner/training/trainer.h"
#include "runner/training/training_params.h"

namespace expctl {
namespace fs = std::filesystem;

namespace {

// The fine-tuning epoch to start from: prune.from_epoch, else the last epoch of scenario.starts_from's
// finetune stage, else 0 (the newest FT checkpoint present).
int64_t source_epoch(const ScenarioConfig& cfg, const Params& p) {
  if (const int64_t e = prune_stage_options(p).from_epoch; e > 0) return e;
  if (cfg.upstream && cfg.upstream->has_stage("finetune"))
    return training_options(cfg.upstream->stage("finetune")).epochs;
  return 0;
}

// calibration.split as written.
std::string split_name(const PruneStageOptions& o) { return o.calibrate_on_train ? "train" : "test"; }

fs::path source_checkpoint(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  int64_t e = source_epoch(cfg, p);
  if (e > 0) return n.finetune_checkpoint(e);
  auto present = n.existing_finetune_epochs();
  return n.finetune_checkpoint(present.empty() ? 0 : present.back());
}

std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  const PruneStageOptions o = prune_stage_options(p);
  std::string what = "fine-tuned model";
  if (o.from_epoch == 0 && cfg.upstream) what += " (last epoch of " + cfg.upstream->file.string() + ")";
  if (source_epoch(cfg, p) == 0) what += " (the newest FT checkpoint)";
  out.push_back({PlannedFile::Access::Read, source_checkpoint(cfg, n, p), what});
  out.back().upstream = true;  // its content is part of this stage's fingerprint (lineage)
  out.push_back(
      {PlannedFile::Access::Read, n.datasets_dir() / cfg.dataset_name(),
       "calibration data (" + std::to_string(o.calibration_samples) + " images of the " + split_name(o) + " split)"});
  out.push_back({PlannedFile::Access::Write, n.pruned_checkpoint(), "pruned model"});
  out.push_back({PlannedFile::Access::Write, n.stage_metrics("prune"),
                 "accuracy before/after, per-layer statistics"});
  return out;
}

nlohmann::json eval_json(models::Network m, const data::Split& s, int64_t batch, torch::Device d) {
  metrics::EvalResult r = metrics::evaluate(m, s, batch, d);
  return {{"accuracy", r.accuracy}, {"loss", r.loss}, {"images", r.count}};
}

// Adaptive BN (EagleEye, Li et al. 2020): removing channels shifts the inputs of the layers after them, so the
// fine-tuned BatchNorm statistics no longer fit; re-estimating them on a few training batches (no weight changes)
// shows what the pruned structure can do before any fine-tuning.
void recalibrate_batchnorm(models::Network model, const data::Split& train, int64_t batches, int64_t batch_size,
                           uint64_t seed) {
  std::vector<torch::nn::BatchNorm2dImpl*> bns;
  for (auto& m : model->modules(/*include_self=*/false))
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->reset_running_stats();
      bn->options.momentum(c10::nullopt);  // cumulative average over the batches below
      bns.push_back(bn);
    }
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.seed = seed;
  data::Loader loader(train, lo);
  torch::NoGradGuard no_grad;
  model->train();
  for (int64_t j = 0; j < std::min(batches, loader.num_batches()); ++j) model->forward(loader.batch(j).images);
  model->eval();
  for (auto* bn : bns) bn->options.momentum(0.1);
}

class PruneStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    const ScenarioConfig& cfg = ctx.config;
    const Params& p = ctx.params;
    torch::Device device = prepare_runtime(cfg, *ctx.log);

    const fs::path source = source_checkpoint(cfg, ctx.naming, p);
    if (!fs::exists(source)) {
      std::string how = cfg.upstream ? "expctl run " + cfg.upstream->file.string()
                                     : "the finetune stage of this test scenario (set scenario.starts_from)";
      throw Error(source.string() + ": the fine-tuned model is missing; make it with: " + how);
    }
    const std::string source_id = content_id(source);  // what was loaded, for the report and the lineage
    models::Network model = models::load_checkpoint(source);
    model->to(device);
    model->eval();
    ctx.log->info("loaded {}", source.string());

    const PruneStageOptions o = prune_stage_options(p);
    const int64_t eval_batch = o.calibration_batch_size;
    const uint64_t seed = static_cast<uint64_t>(cfg.run.seed);
    data::Split test = data::load_dataset(cfg, false).to(device);
    std::optional<data::Split> train_loaded;  // loaded once, when something needs it
    auto train = [&]() -> const data::Split& {
      if (!train_loaded) train_loaded = data::load_dataset(cfg, true).to(device);
      return *train_loaded;
    };
    const bool from_test = !o.calibrate_on_train;
    data::Split pool = from_test ? test : train();
    const int64_t samples = o.calibration_samples;
    if (samples > pool.size())  // the files hold fewer images than the data set entry promised
      throw Error("prune.calibration.samples: " + std::to_string(samples) + " images asked for, but " + pool.source +
                  " holds " + std::to_string(pool.size()));
    auto [calibration, rest] = data::split_off(pool, samples, seed);
    ctx.log->info("calibration: {}", calibration.source);
    // Profile images (DeepGauge's neuron ranges) never overlap the calibration images: from the same split they come
    // out of what calibration left (and are held out of the held-out accuracy too).
    std::optional<data::Split> profile;
    const bool profile_beside = o.profile_on_test == from_test;
    if (o.profile_samples > 0) {
      const data::Split& ppool = profile_beside ? rest : (o.profile_on_test ? test : train());
      if (o.profile_samples > ppool.size())
        throw Error("prune.profile.samples: " + std::to_string(o.profile_samples) + " images asked for, but " +
                    ppool.source + " holds " + std::to_string(ppool.size()) +
                    (profile_beside ? " after the calibration images" : ""));
      auto [drawn, left] = data::split_off(ppool, o.profile_samples, seed + 1);
      profile = std::move(drawn);
      if (profile_beside) rest = std::move(left);
      ctx.log->info("profile: {}", profile->source);
    }
    // Calibrating on the whole test split is allowed; then no image is held out and there is no held-out accuracy.
    const bool held_out = from_test && rest.size() > 0;

    nlohmann::ordered_json out;
    out["scenario"] = ctx.naming.scenario_name();
    out["pruner"] = o.pruner;
    out["source_checkpoint"] = source.string();
    out["source_sha256"] = source_id;
    out["calibration"] = {{"split", split_name(o)}, {"samples", calibration.size()}, {"source", calibration.source}};
    if (profile)
      out["profile"] = {
          {"split", o.profile_on_test ? "test" : "train"}, {"samples", profile->size()}, {"source", profile->source}};
    if (from_test) out["calibration"]["held_out_images"] = rest.size();
    if (from_test && !held_out) {
      out["calibration"]["held_out_note"] =
          "calibration used every image of the test split, so none was held out: no held-out accuracy";
      ctx.log->warn("calibration uses every image of the test split: no held-out accuracy");
    }
    out["before"] = eval_json(model, test, eval_batch, device);
    if (held_out) out["before"]["held_out"] = eval_json(model, rest, eval_batch, device);

    PruneRequest req;
    req.model = model;
    req.groups = models::channel_groups(model);
    req.calibration = data::normalize(calibration.pixels(0, calibration.size()), calibration.norm);
    req.calibration_labels = calibration.labels.to(device);
    if (profile) req.profile = data::normalize(profile->pixels(0, profile->size()), profile->norm);
    req.batch_size = eval_batch;
    req.params = &p;
    req.device = device;
    auto t0 = std::chrono::steady_clock::now();
    PrunePlan plan = PrunerRegistry::find(o.pruner)->create()->prune(req);
    if (!plan.keep.empty()) models::prune_groups(model, plan.keep);
    apply_masks(model, plan.masks);
    if (const int64_t bn_batches = o.recalibrate_bn; bn_batches > 0) {
      recalibrate_batchnorm(model, train(), bn_batches, eval_batch, seed);
      out["recalibrated_bn_batches"] = bn_batches;
      ctx.log->info("re-estimated BatchNorm statistics on {} training batches", bn_batches);
    }
    out["prune_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    out["after"] = eval_json(model, test, eval_batch, device);
    if (held_out) out["after"]["held_out"] = eval_json(model, rest, eval_batch, device);
    out["stats"] = plan.stats;
    // The loaded model's channels each shrunk group kept (the report's test coverage maps neurons through them).
    auto& kept = out["kept_channels"] = nlohmann::ordered_json::object();
    for (const auto& [group, idx] : plan.keep) {
      const torch::Tensor k = idx.to(torch::kCPU, torch::kLong).contiguous();
      kept[group] = std::vector<int64_t>(k.data_ptr<int64_t>(), k.data_ptr<int64_t>() + k.numel());
    }
    ctx.log->info("test accuracy {:.2f}% before pruning, {:.2f}% after ({:.1f} s)",
                  out["before"]["accuracy"].get<double>(), out["after"]["accuracy"].get<double>(),
                  out["prune_seconds"].get<double>());

    models::StateDict masks;
    for (const auto& [name, m] : plan.masks) masks.insert(name, m.to(torch::kCPU, torch::kBool));
    nlohmann::json meta = lineage(ctx, "prune", source);
    meta["source"]["sha256"] = source_id;
    meta["pruner"] = o.pruner;
    meta["accuracy"] = out["after"]["accuracy"];
    models::save_checkpoint(ctx.naming.pruned_checkpoint(), model, meta, masks);
    out["pruned_sha256"] = content_id(ctx.naming.pruned_checkpoint());
    const fs::path metrics_file = ctx.naming.stage_metrics("prune");
    write_file_atomic(metrics_file, out.dump(2) + "\n");
    ctx.outputs = {ctx.naming.pruned_checkpoint(), metrics_file};
  }
};

// calibration.samples beyond the images of its split is known from the data set entry before any file is read:
// refuse it when the scenario is loaded (validate), not after the fine-tuned model has been loaded.
void check_calibration_size(const ScenarioConfig& cfg, std::vector<Diagnostic>& diags) {
  if (!cfg.has_stage("prune")) return;
  const Params& p = cfg.stage("prune");
  const PruneStageOptions o = prune_stage_options(p);
  const bool train = o.calibrate_on_train;
  const int64_t available = data::expected_split_size(cfg, train);
  const auto& keys = prune_stage_binder();
  const Value& samples = keys.value(p, &PruneStageOptions::calibration_samples);
  // Profile images drawn from the calibration images' split come from what calibration leaves.
  const bool beside = o.profile_on_test != train;
  const int64_t profile_split = beside ? available : data::expected_split_size(cfg, !o.profile_on_test);
  const int64_t left = beside ? available - o.calibration_samples : profile_split;
  if (o.profile_samples > 0 && profile_split > 0 && left >= 0 && o.profile_samples > left) {
    const Value& profile = keys.value(p, &PruneStageOptions::profile_samples);
    diags.push_back(
        {profile.is_default ? keys.value(p, &PruneStageOptions::pruner).mark : profile.mark,
         "prune." + keys.key(&PruneStageOptions::profile_samples),
         "must be at most " + std::to_string(left) + ", the images of the " +
             (o.profile_on_test ? std::string("test") : std::string("train")) + " split (" +
             std::to_string(profile_split) + ")" +
             (beside ? " left by calibration.samples (" + std::to_string(o.calibration_samples) + ")" : std::string()) +
             "; got " + std::to_string(o.profile_samples)});
  }
  if (available <= 0 || o.calibration_samples <= available) return;
  const auto& common = data::common_reader();
  const auto subset_field = train ? &data::CommonOptions::train_subset : &data::CommonOptions::test_subset;
  const std::string& subset_key = common.key(subset_field);
  const Value& subset = common.value(cfg.dataset, subset_field);
  const bool by_subset = std::get<int64_t>(subset.v) == available;
  std::string reason = "must be at most " + std::to_string(available) + ", the images of the " + split_name(o) +
                       " split" + (by_subset ? " (dataset." + subset_key + ")" : "") + "; got " + samples.to_text();
  // A default count has no line: point at what made the split too small.
  Mark where = samples.mark;
  if (samples.is_default) where = by_subset ? subset.mark : cfg.dataset.at(kPluginKey).mark;
  diags.push_back({where, "prune." + keys.key(&PruneStageOptions::calibration_samples), reason});
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "prune";
  e.info.summary = "load the fine-tuned model, prune it with the selected pruner, evaluate before and after";
  e.info.params = prune_stage_binder().table();
  e.plan = plan;
  // The fine-tuned model must be the one scenario.starts_from makes now: checked before any stage works.
  e.preflight = [](const ScenarioConfig& cfg, const Naming& n, const Params& p, bool) {
    std::vector<std::string> out;
    if (cfg.upstream && cfg.upstream->has_stage("finetune"))
      if (std::string why = made_otherwise(cfg, *cfg.upstream, "finetune", source_checkpoint(cfg, n, p)); !why.empty())
        out.push_back(why);
    return out;
  };
  e.create = [] { return std::make_unique<PruneStage>(); };
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());
static const bool kCalibrationChecked = add_scenario_check(check_calibration_size);

}  // namespace expctl
