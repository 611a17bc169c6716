// Sweeps: a scenario file's `sweep:` block (dotted keys -> lists of values) expanded into cells, the cartesian
// product of the lists (first key slowest). Every cell is a run of its own, named by its settings
// ("sparsity=0.3_score=magnitude") and kept in {checkpoints}/{scenario name}/sweep/{cell id}/ (see Naming), so it
// never collides with another cell or with the plain run. Cells of a pruning sweep start from the one shared
// fine-tuned model: the cell's settings are not passed to the scenario named by starts_from.
//
//     # configs/test_scenarios/TS1/wanda.yaml
//     sweep:
//       prune.sparsity: [0.3, 0.5, 0.7]
//       prune.score: [wanda, magnitude]        # 6 cells
//
//     expctl sweep configs/test_scenarios/TS1/wanda.yaml      # runs the cells (finished ones are skipped), then
//                                                            # writes reports/TS1/TS1_Wanda_ResNet18_CIFAR10_sweep/
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/config.h"

namespace expctl::sweep {

/// One cell of a sweep.
struct Cell {
  size_t index = 0;       ///< position in the expansion (the Slurm array task id)
  std::string id;         ///< "sparsity=0.3_score=wanda": names the cell's folder
  ScenarioConfig config;  ///< the file + --set + the cell's settings, validated
  nlohmann::ordered_json settings = nlohmann::ordered_json::object();  ///< {"prune.sparsity": "0.3", ...}
  std::string settings_text() const;                                   ///< "prune.sparsity=0.3 prune.score=wanda"
};

/// Expands and validates every cell of `file`'s sweep block (all before any runs, so a bad value in the last
/// cell is reported at once). Throws ConfigError when the file has no sweep block, when a swept key is also given
/// with --set, or when a cell is invalid (the message points at the sweep block's line). A block of more than
/// kMaxSweepCells cells or kMaxSweepKeys keys is refused when the file is loaded, before any cell is built.
std::vector<Cell> expand(const std::filesystem::path& file, const std::vector<std::string>& overrides);

/// The cells picked by `--cell` selectors: an index ("3") or an id ("sparsity=0.5"). Throws ConfigError naming the
/// valid ids for a selector that matches nothing.
std::vector<Cell> select(const std::vector<Cell>& cells, const std::vector<std::string>& selectors);

/// The cell id of a list of settings: "{last key part}={value}" joined by "_" (the full dotted key when two
/// swept keys end alike); characters other than letters, digits, '.', '-' and '+' in values become '-'.
std::vector<std::string> cell_ids(const std::vector<std::string>& keys,
                                  const std::vector<std::vector<std::string>>& values);

/// True when the cell's report exists (its run finished; rerunning it only checks that it is up to date).
bool finished(const Cell& cell);

}  // namespace expctl::sweep
