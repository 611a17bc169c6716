// The pipeline: runs a scenario's stages in order. Each stage reads and writes files whose names come from
// Naming; a stage after it reads those files. A finished
// stage writes a manifest (fingerprint of its resolved config and of the stages before it, outputs,
// timings) into {report dir}/manifests/, so a rerun skips it while the fingerprint matches and its outputs
// exist; --force redoes it. One run per scenario at a time (a lock file in the report folder).
#pragma once
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/files.h"
#include "runner/core/naming.h"
#include "runner/core/registry.h"
#include "runner/core/stop.h"  // the stop flag a run sets on SIGINT/SIGTERM

namespace spdlog {
class logger;
}

namespace expctl {

/// A file a stage will read or write, for --dry-run, the manifest and the lineage checks.
struct PlannedFile {
  enum class Access { Read, Write };
  Access access;
  std::filesystem::path path;
  std::string what;  ///< "pretrained weights", "checkpoint (epoch 5)", ...
  /// Read: a model another scenario or stage made (a fine-tuned or pruned checkpoint). Its content identity
  /// (SHA-256) joins the stage's fingerprint, so a changed file reruns the stage and every stage after it.
  bool upstream = false;
  /// Write: a name that other scenarios of the test scenario also write ({Model}_{Dataset}_FT_{E}.pt, ..._FTAP_..):
  /// the run holds Naming::writer_lock() for it from before the first stage to the end, and the stage's
  /// `preflight` refuses to replace a file another scenario wrote.
  bool shared = false;
};

/// Options of one `expctl run`.
struct RunOptions {
  bool force = false;       ///< redo stages even when their manifest says they are up to date
  std::string only;         ///< run just this stage ("" = all listed)
  bool dry_run = false;     ///< print the plan, write nothing
  bool console_log = true;  ///< also log to the terminal (the log file is always written)
};

/// What a running stage sees.
struct StageContext {
  const ScenarioConfig& config;
  const Naming& naming;
  const Params& params;  ///< this stage's block
  const RunOptions& options;
  std::shared_ptr<spdlog::logger> log;
  std::string fingerprint;                     ///< hash of this stage's resolved settings and upstream inputs
  std::vector<std::filesystem::path> outputs;  ///< files the stage wrote (recorded in its manifest)
};

/// A pipeline stage. Implementations live in runner/stages/, one file each.
class Stage {
 public:
  virtual ~Stage() = default;
  virtual void run(StageContext& ctx) = 0;
};

/// Registration of a stage: its metadata, its plan (pure: computes paths, touches nothing) and its factory.
struct StageEntry {
  static constexpr const char* kKind = "stage";
  PluginInfo info;
  std::function<std::vector<PlannedFile>(const ScenarioConfig&, const Naming&, const Params&)> plan;
  /// Optional: what would make the run refuse, checked before any stage of the run works (after the locks are
  /// taken), each a whole sentence naming the files, the scenarios and the way out; --dry-run lists them. Gets
  /// --force (which lets a run replace another scenario's checkpoints).
  std::function<std::vector<std::string>(const ScenarioConfig&, const Naming&, const Params&, bool force)> preflight;
  /// Makes the stage (every registered stage has one; tests/core checks it).
  std::function<std::unique_ptr<Stage>()> create;
  /// Runs on every process of a data-parallel run (training); other stages run on rank 0 while the rest wait,
  /// and stages after them read rank 0's files.
  bool data_parallel = false;
};

/// Stages register with one line at the end of their file: EXPCTL_REGISTER(StageRegistry, entry());
using StageRegistry = TypedRegistry<StageEntry>;

/// The fingerprint stage `stage` of `cfg` runs under, as Pipeline::run computes it: the scenario's model, data set,
/// seed, paths and the stage's block, the content identity of every upstream file it reads, chained with the
/// stages listed before it. A checkpoint records the fingerprint of the stage that wrote it.
std::string stage_fingerprint(const ScenarioConfig& cfg, const std::string& stage);

/// The lineage a stage records in the meta of a model it writes: {"scenario", "scenario_file", "stage",
/// "fingerprint", "source": {"path", "sha256"}} with `source` the model file it started from (omitted when empty).
nlohmann::json lineage(const StageContext& ctx, const std::string& stage, const std::filesystem::path& source);

/// Runs one scenario.
class Pipeline {
 public:
  Pipeline(ScenarioConfig config, RunOptions options);

  /// The stages that will run (respecting --only), in order.
  std::vector<std::string> selected_stages() const;
  /// Human-readable plan: stages in order, whether each is up to date or why it runs, every path read or written,
  /// and what the run would refuse (another scenario's checkpoints, a starts_from checkpoint made otherwise).
  std::string plan_text() const;
  /// Runs the stages. Throws Error on failure (the lock is released and the log says which stage failed).
  void run();

  const Naming& naming() const { return naming_; }
  const ScenarioConfig& config() const { return config_; }

 private:
  ScenarioConfig config_;
  RunOptions options_;
  Naming naming_;
};

}  // namespace expctl
