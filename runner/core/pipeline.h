// The pipeline: runs a scenario's stages in order. Each stage reads and writes files whose names come from
// Naming, and may also hand in-memory artifacts (a model, a data split) to the stages after it. A finished
// stage writes a manifest (fingerprint of its resolved config and of the stages before it, outputs,
// timings) into {report dir}/manifests/, so a rerun skips it while the fingerprint matches and its outputs
// exist; --force redoes it. One run per scenario at a time (a lock file in the report folder).
#pragma once
#include <any>
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/files.h"
#include "runner/core/naming.h"
#include "runner/core/registry.h"

namespace spdlog {
class logger;
}

namespace expctl {

/// A file a stage will read or write, for --dry-run and the manifest.
struct PlannedFile {
  enum class Access { Read, Write };
  Access access;
  std::filesystem::path path;
  std::string what;  ///< "pretrained weights", "checkpoint (epoch 5)", ...
};

/// Options of one `expctl run`.
struct RunOptions {
  bool force = false;       ///< redo stages even when their manifest says they are up to date
  std::string only;         ///< run just this stage ("" = all listed)
  bool dry_run = false;     ///< print the plan, write nothing
  bool console_log = true;  ///< also log to the terminal (the log file is always written)
};

/// Named in-memory objects handed from one stage to the next within a run.
class Artifacts {
 public:
  template <class T>
  void put(const std::string& name, std::shared_ptr<T> value) {
    items_[name] = std::move(value);
  }
  /// The artifact, or nullptr when no earlier stage of this run produced it (e.g. that stage was skipped:
  /// read its output files instead).
  template <class T>
  std::shared_ptr<T> get(const std::string& name) const {
    auto it = items_.find(name);
    if (it == items_.end()) return nullptr;
    auto p = std::any_cast<std::shared_ptr<T>>(&it->second);
    return p ? *p : nullptr;
  }

 private:
  std::map<std::string, std::any> items_;
};

/// What a running stage sees.
struct StageContext {
  const ScenarioConfig& config;
  const Naming& naming;
  const Params& params;  ///< this stage's block
  Artifacts& artifacts;
  const RunOptions& options;
  std::shared_ptr<spdlog::logger> log;
  std::string fingerprint;                     ///< hash of this stage's resolved inputs
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
  /// Empty while the stage is not available in this build (info.unavailable says why).
  std::function<std::unique_ptr<Stage>()> create;
  /// Runs on every process of a data-parallel run (training); other stages run on rank 0 while the rest wait,
  /// and stages after them read rank 0's files.
  bool data_parallel = false;
};

/// Stages register with one line at the end of their file: EXPCTL_REGISTER(StageRegistry, entry());
using StageRegistry = TypedRegistry<StageEntry>;

/// Set by SIGINT/SIGTERM while a pipeline runs; long stages poll it, save and return.
bool stop_requested();
/// Sets the stop flag as a signal would: a data-parallel rank that was not signalled stops with the others.
void request_stop();

/// Runs one scenario.
class Pipeline {
 public:
  Pipeline(ScenarioConfig config, RunOptions options);

  /// The stages that will run (respecting --only), in order.
  std::vector<std::string> selected_stages() const;
  /// Human-readable plan: stages in order and every path read or written.
  std::string plan_text() const;
  /// Throws Error when a selected stage is not available in this build (before anything is written).
  void check_runnable() const;
  /// Runs the stages. Throws Error on failure (the lock is released and the log says which stage failed).
  void run();

  const Naming& naming() const { return naming_; }
  const ScenarioConfig& config() const { return config_; }

 private:
  std::string fingerprint_of(const std::string& stage, const std::string& previous) const;

  ScenarioConfig config_;
  RunOptions options_;
  Naming naming_;
};

}  // namespace expctl
