// A scenario file, loaded strictly: includes merged, --set overrides applied, every key checked against the
// declared parameter tables, defaults filled in. Nothing is written and nothing heavy happens here.
//
//     schema: 1
//     include: defaults.yaml            # shared defaults (paths relative to this file)
//     scenario: {test_scenario: TS1, method: Wanda, starts_from: finetune.yaml}
//     model: {name: ResNet18, stem: cifar}
//     dataset: {name: CIFAR10}
//     stages: [download, prune, recover, report]
//     prune: {pruner: wanda, sparsity: 0.5}
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/params.h"

namespace expctl {

/// The scenario format version this build reads.
inline constexpr int64_t kSchemaVersion = 1;
/// Most cells one `sweep:` block may expand to (the product of its lists' lengths).
inline constexpr std::size_t kMaxSweepCells = 1000;
/// Most keys one `sweep:` block may vary (each names part of a cell's folder).
inline constexpr std::size_t kMaxSweepKeys = 16;
/// Most scenarios one scenario may reach through scenario.starts_from, one from the next.
inline constexpr std::size_t kMaxStartsFromDepth = 4;
/// Most problems one ConfigError lists (a file of 50,000 unknown keys says so in a page, not in 50,000 lines).
inline constexpr std::size_t kMaxReportedProblems = 100;

/// One axis of a `sweep:` block: a dotted key and the values it takes, as written (with their marks).
///
///     sweep:
///       prune.sparsity: [0.3, 0.5, 0.7]
///       prune.score: [wanda, magnitude]
struct SweepAxis {
  std::string key;               ///< "prune.sparsity"
  Mark key_mark;                 ///< where the key is written
  std::vector<YNodePtr> values;  ///< non-empty
};

/// A sweep cell's settings, applied on top of the file and its --set options. Unlike --set, they are not
/// passed to the scenario named by starts_from: every cell starts from the one shared fine-tuned model.
struct CellSetting {
  std::string key;
  Mark key_mark;
  YNodePtr value;
};

/// The key of the model and data set blocks that names their plugin (`model: {name: ResNet18}`).
inline constexpr const char* kPluginKey = "name";

/// The `scenario:` section, typed (its keys bound once, in config.cpp's scenario binder).
struct ScenarioOptions {
  std::string test_scenario;  ///< required
  std::string method;         ///< required
  std::string description;
  std::string starts_from;  ///< as written: relative to the scenario file ("" = none)
};

/// The `runtime:` section, typed.
struct RuntimeOptions {
  std::string device = "auto";
  int64_t threads = 0;  ///< 0: one per core
  int64_t seed = 0;
};

/// The `paths:` section, typed.
struct PathsOptions {
  std::string checkpoints = "checkpoints";
  std::string models = "downloaded_models";
  std::string datasets = "downloaded_datasets";
  std::string reports = "reports";
};

/// A validated scenario with every default filled in.
struct ScenarioConfig {
  std::filesystem::path file;            ///< the scenario file as given
  Params scenario;                       ///< test_scenario, method, description, starts_from
  Params model;                          ///< name + the model's own parameters
  Params dataset;                        ///< name + the data set's own parameters
  Params runtime;                        ///< device, threads, seed
  Params paths;                          ///< checkpoints, models, datasets, reports
  std::vector<std::string> stages;       ///< in run order
  std::map<std::string, Params> blocks;  ///< parameters of each listed stage (with a selected plugin's merged in)
  /// The scenario named by scenario.starts_from (loaded with the --set options that concern it), or null.
  std::shared_ptr<const ScenarioConfig> upstream;
  /// The file's `sweep:` block (empty: none). `expctl run` ignores it; `expctl sweep` expands it into cells.
  std::vector<SweepAxis> sweep;
  /// On a sweep cell: its id ("sparsity=0.3_score=wanda"), which names its folders; empty for a plain run.
  std::string sweep_cell;
  /// On a sweep cell: its settings {"prune.sparsity": "0.3", ...} (values as YAML text).
  nlohmann::ordered_json sweep_values = nlohmann::ordered_json::object();

  /// The engine's sections, typed: read through their binders once the whole file validated.
  ScenarioOptions about;
  RuntimeOptions run;
  PathsOptions dirs;
  std::string model_plugin;    ///< model.name
  std::string dataset_plugin;  ///< dataset.name
  /// What names the model in output paths: model.name, or what the model plugin's PluginInfo::label makes of its
  /// block (a TorchScript model: the stem of its file).
  std::string model_label;
  /// Whether the model starts from pretrained weights (PluginInfo::pretrained): `normalize: auto` then uses
  /// ImageNet's statistics.
  bool model_pretrained = false;

  const std::string& test_scenario() const { return about.test_scenario; }
  const std::string& method() const { return about.method; }
  const std::string& model_name() const { return model_plugin; }
  const std::string& dataset_name() const { return dataset_plugin; }
  /// Parameters of a listed stage; throws std::out_of_range for a stage that is not listed.
  const Params& stage(const std::string& name) const { return blocks.at(name); }
  bool has_stage(const std::string& name) const { return blocks.count(name) != 0; }

  /// The whole resolved configuration (what `show-config` prints and every run saves).
  nlohmann::ordered_json resolved() const;
  std::string resolved_yaml() const;
};

/// Why runtime.device `text` cannot be used on this machine, or "" when it can: it must be auto, cpu, cuda or
/// cuda:N, and CUDA (with device N) must be present. The one check behind both validation and resolve_device(),
/// so `validate` refuses what `run` would.
std::string device_problem(const std::string& text);

/// A rule that needs more than one block (e.g. the prune stage's calibration.samples against the data set's split
/// size). It runs on every scenario loaded, after all blocks validated cleanly, and adds diagnostics.
using ScenarioCheck = std::function<void(const ScenarioConfig& cfg, std::vector<Diagnostic>& diags)>;
/// Registers a check, at namespace scope at the end of the file that owns the rule:
///     static const bool registered = add_scenario_check(check_calibration_size);
bool add_scenario_check(ScenarioCheck check);

/// Top-level sections owned by the engine (their tables are registered as kind "section" for `describe`).
const ParamTable& scenario_section();
const ParamTable& runtime_section();
const ParamTable& paths_section();

/// Loads and validates one scenario file with `overrides` ("dotted.key=value", YAML syntax for the value).
/// Throws ConfigError listing every problem, one "file:line:col: dotted.key: reason" per line.
ScenarioConfig load_scenario(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

/// Loads one cell of a sweep: the file, its --set `overrides`, then the cell's `settings` (whose errors point at
/// the sweep block). `cell_id` names the cell's folders (see Naming).
ScenarioConfig load_scenario_cell(const std::filesystem::path& file, const std::vector<std::string>& overrides,
                                  const std::string& cell_id, const std::vector<CellSetting>& settings);

/// Converts nlohmann JSON to YAML text (block style).
std::string json_to_yaml(const nlohmann::ordered_json& j);

}  // namespace expctl
