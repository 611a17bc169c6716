// Parameters every pruner shares, and the method a scenario runs.
#include "plugins/pruner.h"

#include "runner/core/config.h"

namespace expctl {

void set_calibration_defaults(PluginInfo& info, int64_t samples, int64_t batch_size, const std::string& use) {
  info.overrides.push_back({"calibration.samples", Value{samples, {}, true}, use});
  info.overrides.push_back({"calibration.batch_size", Value{batch_size, {}, true}, "batch size of its forward passes"});
}

nlohmann::ordered_json method_info(const ScenarioConfig& cfg) {
  nlohmann::ordered_json m;
  m["scenario_method"] = cfg.method();
  m["label"] = cfg.method();
  if (!cfg.has_stage("prune")) return m;
  const Params& p = cfg.stage("prune");
  const std::string& pruner = p.get_string("pruner");
  m["pruner"] = pruner;
  const PrunerEntry* entry = PrunerRegistry::find(pruner);
  if (entry && entry->label) m["label"] = entry->label(p);
  for (const char* k : {"mode", "score", "scope"})
    if (p.has(k)) m[k] = p.get_string(k);
  if (p.has("mode") && p.get_string("mode") == "n:m" && p.has("n") && p.has("m"))
    m["sparsity"] = double(p.get_int("n")) / double(p.get_int("m"));
  else if (p.has("sparsity"))
    m["sparsity"] = p.get_float("sparsity");
  return m;
}

}  // namespace expctl
