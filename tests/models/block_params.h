// Parameters of a YAML block as the config would validate them, for tests that call a pruner or a model entry
// directly: the table's defaults with `overrides` set on top; and a pruner run as the prune stage runs it.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/models/channel_groups.h"

namespace expctl::test {

/// `table`'s defaults for block `block` ("prune", "model"), then `overrides` (numbers and strings).
inline Params block_params(const ParamTable& table, const std::string& block, const nlohmann::ordered_json& overrides) {
  std::vector<Diagnostic> diags;
  Params p = validate_block(nullptr, Mark{}, block, table, diags);
  EXPECT_TRUE(diags.empty());
  for (const auto& [k, v] : overrides.items()) {
    Value value;
    if (v.is_number_integer()) value.v = v.get<int64_t>();
    else if (v.is_number()) value.v = v.get<double>();
    else value.v = v.get<std::string>();
    p.set(k, value);
  }
  return p;
}

/// A prune block for `pruner`.
inline Params prune_params(const std::string& pruner, const nlohmann::ordered_json& overrides) {
  return block_params(PrunerRegistry::find(pruner)->info.params, "prune", overrides);
}

/// What the prune stage asks of a pruner: the registered pruner `name` on `model` (its derived groups), with the
/// prune block `params` and calibration images `x` (labels `y`, profile images `profile`) forwarded in batches of
/// `batch_size`.
inline PrunePlan run_pruner(const std::string& name, models::Network model, const Params& params, int64_t batch_size,
                            const torch::Tensor& x = {}, const torch::Tensor& y = {},
                            const torch::Tensor& profile = {}) {
  const PrunerEntry* e = PrunerRegistry::find(name);
  if (!e) throw std::runtime_error("pruner not registered: " + name);
  PruneRequest req;
  req.model = model;
  req.groups = models::channel_groups(model);
  req.calibration = x;
  req.calibration_labels = y;
  req.profile = profile;
  req.batch_size = batch_size;
  req.params = &params;
  return e->create()->prune(req);
}

}  // namespace expctl::test
