// Parameters of a YAML block as the config would validate them, for tests that call a pruner or a model entry
// directly: the table's defaults with `overrides` set on top.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plugins/pruner.h"
#include "runner/core/config.h"

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

}  // namespace expctl::test
