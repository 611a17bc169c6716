#include "runner/stages/train_job.h"

#include <utility>

#include "runner/data/registry.h"

namespace expctl {
namespace fs = std::filesystem;

TrainJob make_train_job(const StageContext& ctx, const std::string& stage, models::Network model,
                        const data::Split& train, const data::Split& test, torch::Device device,
                        std::function<fs::path(int64_t)> checkpoint_path) {
  const ScenarioConfig& cfg = ctx.config;
  TrainJob job;
  job.model = std::move(model);
  job.train = &train;
  job.test = &test;
  job.params = &ctx.params;
  job.augment = data::augmentation_of(cfg);
  job.prefetch = data::prefetch_of(cfg);
  job.seed = static_cast<uint64_t>(cfg.run.seed);
  job.device = device;
  job.checkpoint_path = std::move(checkpoint_path);
  job.interrupt_path = ctx.naming.interrupt_state(stage);
  job.meta = lineage(ctx, stage, {});  // the stage adds the model it started from
  job.fingerprint = ctx.fingerprint;
  job.fresh = ctx.options.force;
  job.log = ctx.log;
  return job;
}

}  // namespace expctl
