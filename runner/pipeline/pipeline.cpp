#include "runner/pipeline/pipeline.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/json_file.h"
#include "runner/core/lock.h"
#include "runner/core/stop.h"
#include "runner/parallel/coordinator.h"
#include "runner/parallel/process_group.h"

namespace expctl {
namespace fs = std::filesystem;

// ---- pipeline ----------------------------------------------------------------------------------

Pipeline::Pipeline(ScenarioConfig config, RunOptions options)
    : config_(std::move(config)), options_(std::move(options)), naming_(config_) {
  if (!options_.only.empty() &&
      std::find(config_.stages.begin(), config_.stages.end(), options_.only) == config_.stages.end())
    throw ConfigError(config_.file.string() + ": --only " + options_.only + ": the scenario has no stage '" +
                      options_.only + "'; its stages: " + join(config_.stages));
}

std::vector<std::string> Pipeline::selected_stages() const {
  if (options_.only.empty()) return config_.stages;
  return {options_.only};
}

namespace {
using ojson = nlohmann::ordered_json;

// What a stage's result depends on, and the parts a manifest keeps to say which of them changed.
struct StageState {
  std::string settings;  ///< the scenario's identity, model, data set, seed, paths and the stage's own block
  nlohmann::json inputs = nlohmann::json::array();  ///< upstream files read: [{"path", "sha256" (null: missing)}]
  std::string previous;     ///< the fingerprint of the stage listed before it ("" for the first)
  std::string fingerprint;  ///< all three together
};

std::string settings_of(const ScenarioConfig& cfg, const std::string& stage) {
  // Threads and device do not change what is computed.
  ojson j;
  auto scen = cfg.scenario.to_json();
  scen.erase("description");
  j["scenario"] = scen;
  j["model"] = cfg.model.to_json();  // a model file's content is an upstream input of the stage that reads it
  j["dataset"] = cfg.dataset.to_json();
  j["seed"] = cfg.run.seed;
  j["paths"] = cfg.paths.to_json();
  j["stage"] = stage;
  j["params"] = cfg.stage(stage).to_json();
  return sha256_hex(j.dump());
}

StageState state_of(const ScenarioConfig& cfg, const Naming& naming, const std::string& stage,
                    const std::string& previous) {
  StageState s;
  s.settings = settings_of(cfg, stage);
  for (const PlannedFile& f : StageRegistry::find(stage)->plan(cfg, naming, cfg.stage(stage))) {
    if (f.access != PlannedFile::Access::Read || !f.upstream) continue;
    const std::string id = content_id(f.path);
    s.inputs.push_back(
        {{"path", f.path.string()}, {"sha256", id.empty() ? nlohmann::json(nullptr) : nlohmann::json(id)}});
  }
  s.previous = previous;
  s.fingerprint = sha256_hex(ojson{{"settings", s.settings}, {"inputs", s.inputs}, {"previous", previous}}.dump());
  return s;
}

std::string short_id(const nlohmann::json& id) {
  return id.is_string() ? id.get<std::string>().substr(0, 12) : std::string("(missing)");
}

// Why an upstream input differs from the one the manifest recorded ("" when none does).
std::string changed_input(const nlohmann::json& recorded, const nlohmann::json& current) {
  for (const auto& now : current) {
    const std::string path = now["path"].get<std::string>();
    const nlohmann::json* before = nullptr;
    for (const auto& r : recorded)
      if (r.value("path", "") == path) before = &r;
    if (!before) {
      std::string was;
      for (const auto& r : recorded) was += (was.empty() ? "" : ", ") + r.value("path", "");
      return "it now reads " + path + (was.empty() ? std::string() : " (it read " + was + ")");
    }
    if (now["sha256"].is_null()) return "its input " + path + " is missing";
    if ((*before)["sha256"] != now["sha256"])
      return "its input " + path + " changed since it last ran (SHA-256 " + short_id((*before)["sha256"]) +
             "... then, " + short_id(now["sha256"]) + "... now)";
  }
  return "";
}

// Size and modification time (ns) of a regular file; false when it is not one.
bool stamp_of(const fs::path& p, int64_t* size, int64_t* mtime_ns) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = st.st_size;
  *mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

// A stage's output as its manifest records it: the stamp makes an untouched file cheap to recognise, the SHA-256
// tells a touched file from a replaced one.
ojson output_record(const fs::path& p) {
  ojson o{{"path", p.string()}};
  int64_t size = 0, mtime_ns = 0;
  if (!stamp_of(p, &size, &mtime_ns)) return o;  // a folder (an unpacked archive)
  o["size"] = size;
  o["mtime_ns"] = mtime_ns;
  o["sha256"] = content_id(p);
  return o;
}

// Why an output recorded in a manifest can no longer be trusted ("" when it can).
std::string changed_output(const nlohmann::json& o) {
  const std::string path = o.is_string() ? o.get<std::string>() : o.value("path", "");
  std::error_code ec;
  if (!fs::exists(path, ec)) return "its output " + path + " is missing";
  if (!o.is_object() || !o.contains("sha256")) return "";  // a manifest of an earlier expctl, or a folder
  int64_t size = 0, mtime_ns = 0;
  if (stamp_of(path, &size, &mtime_ns) && size == o.value("size", int64_t(-1)) &&
      mtime_ns == o.value("mtime_ns", int64_t(-1)))
    return "";
  if (content_id(path) != o["sha256"].get<std::string>())
    return "its output " + path + " was changed or replaced since the stage wrote it";
  return "";
}

// Why `stage` must run again ("" when its manifest says it is up to date).
std::string why_run(const fs::path& manifest_path, const StageState& st) {
  std::error_code ec;
  if (!fs::exists(manifest_path, ec)) return "it has not run yet";
  std::string unreadable;
  const std::optional<nlohmann::json> manifest = read_sidecar(manifest_path, &unreadable);
  if (!manifest) return "its manifest " + manifest_path.string() + " is unreadable (" + unreadable + ")";
  nlohmann::json m = *manifest;
  if (m.value("fingerprint", "") != st.fingerprint) {
    if (!m.contains("settings")) return "the configuration changed";  // a manifest of an earlier expctl
    if (m["settings"] != st.settings) return "its settings changed";
    if (std::string why = changed_input(m.value("inputs", nlohmann::json::array()), st.inputs); !why.empty())
      return why;
    return "a stage before it changed";
  }
  for (const auto& o : m.value("outputs", nlohmann::json::array()))
    if (std::string why = changed_output(o); !why.empty()) return why;
  return "";
}

}  // namespace

std::string stage_fingerprint(const ScenarioConfig& cfg, const std::string& stage) {
  const Naming naming(cfg);
  std::string previous;
  for (const auto& name : cfg.stages) {
    previous = state_of(cfg, naming, name, previous).fingerprint;
    if (name == stage) return previous;
  }
  throw Error(cfg.file.string() + ": the scenario has no stage '" + stage + "'");
}

nlohmann::json lineage(const StageContext& ctx, const std::string& stage, const fs::path& source) {
  nlohmann::json j{{"scenario", ctx.naming.scenario_name()},
                   {"scenario_file", fs::weakly_canonical(ctx.config.file).string()},
                   {"stage", stage},
                   {"fingerprint", ctx.fingerprint}};
  if (!source.empty()) j["source"] = {{"path", source.string()}, {"sha256", content_id(source)}};
  return j;
}

namespace {

// What every selected stage's preflight check says would make the run refuse.
std::vector<std::string> refusals(const ScenarioConfig& cfg, const Naming& naming,
                                  const std::vector<std::string>& stages, bool force) {
  std::vector<std::string> out;
  for (const auto& name : stages)
    if (const StageEntry* e = StageRegistry::find(name); e->preflight)
      for (std::string& why : e->preflight(cfg, naming, cfg.stage(name), force)) out.push_back(std::move(why));
  return out;
}

// The writer locks of the shared names the selected stages write, one per family of epochs.
std::map<fs::path, std::string> writer_locks(const ScenarioConfig& cfg, const Naming& naming,
                                             const std::vector<std::string>& stages) {
  std::map<fs::path, std::string> out;
  for (const auto& name : stages)
    for (const PlannedFile& f : StageRegistry::find(name)->plan(cfg, naming, cfg.stage(name)))
      if (f.access == PlannedFile::Access::Write && f.shared) {
        const fs::path lock = Naming::writer_lock(f.path);  // {dir}/.{family}.lock
        out.emplace(lock,
                    "the checkpoints " + (lock.parent_path() / (lock.stem().string().substr(1) + "_*.pt")).string());
      }
  return out;
}

}  // namespace

std::string Pipeline::plan_text() const {
  std::ostringstream out;
  out << "scenario " << naming_.scenario_name() << " (" << config_.file.string() << ")\n";
  out << "  report folder: " << naming_.report_dir().string() << "/\n";
  out << "  writes: " << naming_.resolved_config().string() << ", "
      << naming_.run_log().string() << ", " << naming_.manifests_dir().string() << "/\n";
  if (config_.upstream)
    out << "  starts from: " << config_.upstream->file.string() << " (scenario "
        << Naming(*config_.upstream).scenario_name() << ")\n";
  int i = 0;
  std::string previous;
  std::map<fs::path, std::string> rewritten;  // files that stages running before this one write, and by which
  for (const auto& name : config_.stages) {
    const StageState st = state_of(config_, naming_, name, previous);
    previous = st.fingerprint;
    if (!options_.only.empty() && name != options_.only) continue;
    const std::vector<PlannedFile> files = StageRegistry::find(name)->plan(config_, naming_, config_.stage(name));
    std::string why = options_.force ? "--force" : why_run(naming_.manifest(name), st);
    // Its fingerprint covers what the files it reads hold now; a stage before it may rewrite them first.
    if (why.empty())
      for (const auto& f : files)
        if (auto it = rewritten.find(f.path); f.upstream && it != rewritten.end()) {
          why = "if " + it->second + " writes a different " + f.path.filename().string();
          break;
        }
    if (!why.empty())
      for (const auto& f : files)
        if (f.access == PlannedFile::Access::Write) rewritten.emplace(f.path, name);
    out << "  " << ++i << ". " << name << (why.empty() ? ": up to date" : ": runs, " + why) << "\n";
    for (const auto& f : files)
      out << "       " << (f.access == PlannedFile::Access::Read ? "reads  " : "writes ") << f.path.string() << "  ("
          << f.what << ")\n";
  }
  for (const std::string& why : refusals(config_, naming_, selected_stages(), options_.force))
    out << "  refuses to run: " << why << "\n";
  return out.str();
}

namespace {

std::shared_ptr<spdlog::logger> make_logger(const fs::path& log_file, bool console) {
  std::vector<spdlog::sink_ptr> sinks;
  if (console) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file.string(), false));
  auto logger = std::make_shared<spdlog::logger>("expctl", sinks.begin(), sinks.end());
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  logger->flush_on(spdlog::level::info);
  return logger;
}

// Ranks other than 0 of a data-parallel run write no files: warnings and errors on the console, marked.
std::shared_ptr<spdlog::logger> make_rank_logger(int rank, bool console) {
  std::vector<spdlog::sink_ptr> sinks;
  if (console) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto logger = std::make_shared<spdlog::logger>("expctl", sinks.begin(), sinks.end());
  logger->set_pattern("[rank " + std::to_string(rank) + "] [%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  logger->set_level(spdlog::level::warn);
  return logger;
}

std::string now_iso() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", std::localtime(&t));
  return buf;
}

// The locks a run holds from before its first stage to its end (main rank only).
struct RunLocks {
  std::optional<ScenarioLock> scenario;                     ///< one run of a scenario at a time
  std::vector<std::unique_ptr<ScenarioLock>> shared_names;  ///< names other scenarios write too
};

// What the main rank does before any stage: the report folder, the scenario's lock and the locks of shared output
// names (held to the end, then checked for other owners before any stage works), the refusals, the log file, and
// the temporary files of killed runs (tens of MB each; a live process's are kept, see files.h). Returns the log.
std::shared_ptr<spdlog::logger> take_the_scenario(const ScenarioConfig& config, const Naming& naming,
                                                  const RunOptions& options, const std::vector<std::string>& stages,
                                                  RunLocks& locks) {
  const fs::path dir = naming.report_dir();
  fs::create_directories(naming.manifests_dir());
  locks.scenario.emplace(naming.scenario_lock(), naming.scenario_name());
  for (const auto& [file, what] : writer_locks(config, naming, stages))
    locks.shared_names.push_back(std::make_unique<ScenarioLock>(file, naming.scenario_name(), what));
  if (auto why = refusals(config, naming, stages, options.force); !why.empty()) throw Error(join(why, "\n"));
  auto log = make_logger(naming.run_log(), options.console_log);
  for (const auto& p :
       remove_stale_temp_files({dir, naming.checkpoint_dir(), naming.models_dir(), naming.datasets_dir()}))
    log->info("removed {}, left by a process that is gone", p.string());
  return log;
}

// A finished stage's manifest: what it ran under (fingerprint, settings, inputs, the stages before it), when, for
// how long, and what it wrote.
void write_manifest(const fs::path& manifest_path, const std::string& stage, const ScenarioConfig& config,
                    const Naming& naming, const StageState& st, const std::string& started, double seconds,
                    const std::vector<fs::path>& outputs) {
  nlohmann::ordered_json m;
  m["stage"] = stage;
  m["scenario"] = naming.scenario_name();
  m["file"] = fs::weakly_canonical(config.file).string();
  m["fingerprint"] = st.fingerprint;
  m["settings"] = st.settings;
  m["inputs"] = st.inputs;
  m["previous"] = st.previous;
  m["started"] = started;
  m["finished"] = now_iso();
  m["seconds"] = seconds;
  m["outputs"] = nlohmann::json::array();
  for (const auto& o : outputs) m["outputs"].push_back(output_record(o));
  write_file_atomic(manifest_path, m.dump(2) + "\n");
}

// The resolved configuration and the first log lines of a run (the main process only).
void announce(const ScenarioConfig& config, const Naming& naming, spdlog::logger& log) {
  write_file_atomic(naming.resolved_config(), "# resolved configuration of " + config.file.string() +
                                                  " (defaults filled in)\n" + config.resolved_yaml());
  log.info("scenario {} from {}", naming.scenario_name(), config.file.string());
  if (parallel::active()) {
    const parallel::WorldInfo& w = parallel::world();
    log.info("data parallel: rank {} of {} ({}), backend {}, master {}:{}", w.rank, w.world_size, w.source,
             parallel::backend(), w.master_addr, w.master_port);
  }
}

// Whether stage `name`'s manifest says its outputs are what this configuration makes (said in the log either way).
bool manifest_up_to_date(const std::string& name, const StageState& st, const fs::path& manifest_path,
                         spdlog::logger& log) {
  const std::string why = why_run(manifest_path, st);
  if (why.empty()) {
    log.info("stage {}: up to date (manifest {}); --force redoes it", name, manifest_path.string());
    return true;
  }
  if (fs::exists(manifest_path)) log.info("stage {}: running it again: {}", name, why);
  return false;
}

// Runs one stage and returns its seconds; a failure or a stop request is told to the other ranks and thrown.
double run_stage(const StageEntry& entry, StageContext& ctx, parallel::StageCoordinator& ranks, spdlog::logger& log) {
  const std::string& name = entry.info.name;
  log.info("stage {}: start", name);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    entry.create()->run(ctx);
  } catch (const std::exception& e) {
    log.error("stage {} failed: {}", name, e.what());
    ranks.failed(e.what());
    throw;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stop_requested()) {
    log.warn("stage {}: interrupted; rerun the same command to continue", name);
    ranks.failed("interrupted during stage " + name);
    throw Error("interrupted during stage " + name);
  }
  return seconds;
}

}  // namespace

void Pipeline::run() {
  // Several processes (data parallel): the coordinator says which of them runs what (see StageCoordinator);
  // with one process it does nothing.
  const std::unique_ptr<parallel::StageCoordinator> ranks =
      parallel::StageCoordinator::create(naming_.run_log().string());
  const bool main = ranks->main();

  RunLocks locks;
  std::shared_ptr<spdlog::logger> log;
  if (main) {
    try {
      log = take_the_scenario(config_, naming_, options_, selected_stages(), locks);
    } catch (const std::exception& e) {
      ranks->failed(e.what());
      throw;
    }
  } else {
    log = make_rank_logger(parallel::rank(), options_.console_log);
  }
  auto previous_default = spdlog::default_logger();
  spdlog::set_default_logger(log);
  struct RestoreLogger {
    std::shared_ptr<spdlog::logger> prev;
    ~RestoreLogger() { spdlog::set_default_logger(prev); }
  } restore{previous_default};
  StopSignals signals;

  try {
    if (main) announce(config_, naming_, *log);
    ranks->start();

    std::string previous;
    for (const auto& name : config_.stages) {
      const StageState st = state_of(config_, naming_, name, previous);
      previous = st.fingerprint;
      if (!options_.only.empty() && name != options_.only) continue;
      const fs::path manifest_path = naming_.manifest(name);
      const bool up_to_date = main && !options_.force && manifest_up_to_date(name, st, manifest_path, *log);
      if (ranks->agree_up_to_date(name, up_to_date)) continue;

      const StageEntry* entry = StageRegistry::find(name);
      if (!ranks->runs_here(name, entry->data_parallel)) continue;
      StageContext ctx{config_, naming_, config_.stage(name), options_, log, st.fingerprint, {}};
      const std::string started = now_iso();
      const double seconds = run_stage(*entry, ctx, *ranks, *log);
      if (!main) continue;
      ranks->finished(entry->data_parallel);
      write_manifest(manifest_path, name, config_, naming_, st, started, seconds, ctx.outputs);
      log->info("stage {}: done in {:.1f} s", name, seconds);
      ranks->done(entry->data_parallel);
    }
  } catch (const std::exception& e) {
    ranks->failed(e.what());
    throw;
  }
}

}  // namespace expctl
