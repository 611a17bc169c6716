// Parameters every pruner shares, and the method a scenario runs.
#include "plugins/pruner.h"

#include "runner/core/config.h"

namespace expctl {

const OptionBinder<PruneStageOptions>& prune_stage_binder() {
  static const OptionBinder<PruneStageOptions> b = [] {
    using O = PruneStageOptions;
    OptionBinder<O> b;
    b.add_plugin(&O::pruner, "pruner", "pruner",
                 "the pruning method (see `expctl list`); its parameters join this block");
    b.add(&O::from_epoch, "from_epoch", "fine-tuning epoch to start from (0: the last epoch of scenario.starts_from)")
        .min(0);
    b.add(&O::recalibrate_bn, "recalibrate_bn",
          "after pruning, re-estimate BatchNorm statistics on this many training batches (adaptive BN); 0: keep "
          "the fine-tuned statistics")
        .min(0)
        .max(100000);
    // The calibration images are the stage's: it takes them, holds them out of the held-out accuracy and hands
    // them to the pruner; each pruner sets its own defaults for the count and batch size (set_calibration_defaults).
    b.add_enum<bool>(&O::calibrate_on_train, "calibration.split", {{"test", false}, {"train", true}},
                     "split the calibration images come from");
    b.add(&O::calibration_samples, "calibration.samples", "number of calibration images (default: the pruner's)")
        .min(1)
        .max(1000000);
    b.add(&O::calibration_batch_size, "calibration.batch_size",
          "batch size for calibration forward passes (default: the pruner's)")
        .min(1)
        .max(65536);
    // Profile images (DeepGauge profiles each neuron's range on training data): drawn apart from the calibration
    // images, so that what is measured never overlaps what the ranges were taken from.
    b.add_enum<bool>(&O::profile_on_test, "profile.split", {{"train", false}, {"test", true}},
                     "split the profile images come from (never the calibration images)");
    b.add(&O::profile_samples, "profile.samples",
          "number of profile images for the pruners that profile neuron ranges (default: the pruner's; 0: none)")
        .min(0)
        .max(1000000);
    return b;
  }();
  return b;
}

PruneStageOptions prune_stage_options(const Params& block) { return prune_stage_binder().read(block, "prune"); }

void set_calibration_defaults(PluginInfo& info, int64_t samples, int64_t batch_size, const std::string& use) {
  const auto& b = prune_stage_binder();
  info.overrides.push_back({b.key(&PruneStageOptions::calibration_samples), Value{samples, {}, true}, use});
  info.overrides.push_back({b.key(&PruneStageOptions::calibration_batch_size), Value{batch_size, {}, true},
                            "batch size of its forward passes"});
}

void set_profile_default(PluginInfo& info, int64_t samples, const std::string& use) {
  info.overrides.push_back(
      {prune_stage_binder().key(&PruneStageOptions::profile_samples), Value{samples, {}, true}, use});
}

nlohmann::ordered_json method_info(const ScenarioConfig& cfg) {
  nlohmann::ordered_json m;
  m["scenario_method"] = cfg.method();
  m["label"] = cfg.method();
  if (!cfg.has_stage("prune")) return m;
  const Params& p = cfg.stage("prune");
  const std::string pruner = prune_stage_options(p).pruner;
  m["pruner"] = pruner;
  const PrunerEntry* entry = PrunerRegistry::find(pruner);
  if (!entry || !entry->method) return m;
  const MethodSettings s = entry->method(p);
  m["label"] = s.label;
  for (const auto& [key, value] : s.settings) m[key] = value;
  m["sparsity"] = s.sparsity;
  return m;
}

}  // namespace expctl
