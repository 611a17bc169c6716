#include "runner/core/pipeline.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <random>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/lock.h"

namespace expctl {
namespace fs = std::filesystem;

// ---- stop signals ------------------------------------------------------------------------------

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }
}  // namespace

bool stop_requested() { return g_stop.load(); }

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

std::string Pipeline::fingerprint_of(const std::string& stage, const std::string& previous) const {
  // What a stage's result depends on: the scenario's identity, model, data set, seed, paths and its own
  // block, chained with the stages before it. Threads and device do not change what is computed.
  nlohmann::ordered_json j;
  auto scen = config_.scenario.to_json();
  scen.erase("description");
  j["scenario"] = scen;
  j["model"] = config_.model.to_json();
  j["dataset"] = config_.dataset.to_json();
  j["seed"] = config_.runtime.get_int("seed");
  j["paths"] = config_.paths.to_json();
  j["stage"] = stage;
  j["params"] = config_.stage(stage).to_json();
  j["previous"] = previous;
  return sha256_hex(j.dump());
}

std::string Pipeline::plan_text() const {
  std::ostringstream out;
  out << "scenario " << naming_.scenario_name() << " (" << config_.file.string() << ")\n";
  out << "  report folder: " << naming_.report_dir().string() << "/\n";
  out << "  writes: " << (naming_.report_dir() / "resolved.yaml").string() << ", "
      << (naming_.report_dir() / "run.log").string() << ", " << (naming_.report_dir() / "manifests").string() << "/\n";
  if (config_.upstream)
    out << "  starts from: " << config_.upstream->file.string() << " (scenario "
        << Naming(*config_.upstream).scenario_name() << ")\n";
  int i = 0;
  for (const auto& name : selected_stages()) {
    const StageEntry* e = StageRegistry::find(name);
    out << "  " << ++i << ". " << name;
    if (!e->create) out << "  [not available in this build: " << e->info.unavailable << "]";
    out << "\n";
    for (const auto& f : e->plan(config_, naming_, config_.stage(name)))
      out << "       " << (f.access == PlannedFile::Access::Read ? "reads  " : "writes ") << f.path.string() << "  ("
          << f.what << ")\n";
  }
  return out.str();
}

void Pipeline::check_runnable() const {
  std::vector<std::string> missing;
  for (const auto& name : selected_stages()) {
    const StageEntry* e = StageRegistry::find(name);
    if (!e->create) missing.push_back("stage '" + name + "' is not available yet: " + e->info.unavailable);
  }
  if (!missing.empty())
    throw Error(config_.file.string() + ": cannot run " + naming_.scenario_name() + ":\n  " + join(missing, "\n  "));
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

std::string now_iso() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", std::localtime(&t));
  return buf;
}

struct SignalGuard {
  struct sigaction old_int {
  }, old_term{};
  SignalGuard() {
    g_stop.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

}  // namespace

void Pipeline::run() {
  check_runnable();
  const fs::path dir = naming_.report_dir();
  fs::create_directories(dir / "manifests");
  ScenarioLock lock(dir / ".lock", naming_.scenario_name());
  auto log = make_logger(dir / "run.log", options_.console_log);
  auto previous_default = spdlog::default_logger();
  spdlog::set_default_logger(log);
  struct RestoreLogger {
    std::shared_ptr<spdlog::logger> prev;
    ~RestoreLogger() { spdlog::set_default_logger(prev); }
  } restore{previous_default};
  SignalGuard signals;

  write_file_atomic(dir / "resolved.yaml", "# resolved configuration of " + config_.file.string() +
                                               " (defaults filled in)\n" + config_.resolved_yaml());
  log->info("scenario {} from {}", naming_.scenario_name(), config_.file.string());

  Artifacts artifacts;
  std::string previous;
  for (const auto& name : config_.stages) {
    std::string fp = fingerprint_of(name, previous);
    previous = fp;
    if (!options_.only.empty() && name != options_.only) continue;
    const fs::path manifest_path = dir / "manifests" / (name + ".json");

    if (!options_.force && fs::exists(manifest_path)) {
      try {
        std::ifstream in(manifest_path);
        auto m = nlohmann::json::parse(in);
        bool outputs_present = true;
        for (const auto& o : m.at("outputs")) outputs_present = outputs_present && fs::exists(o.get<std::string>());
        if (m.at("fingerprint") == fp && outputs_present) {
          log->info("stage {}: up to date (manifest {}); --force redoes it", name, manifest_path.string());
          continue;
        }
        log->info("stage {}: {} changed since the last run; running it again", name,
                  outputs_present ? "the configuration" : "an output file");
      } catch (const std::exception& e) {
        log->warn("stage {}: unreadable manifest {} ({}); running the stage again", name, manifest_path.string(),
                  e.what());
      }
    }

    const StageEntry* entry = StageRegistry::find(name);
    StageContext ctx{config_, naming_, config_.stage(name), artifacts, options_, log, fp, {}};
    log->info("stage {}: start", name);
    std::string started = now_iso();
    auto t0 = std::chrono::steady_clock::now();
    try {
      entry->create()->run(ctx);
    } catch (const std::exception& e) {
      log->error("stage {} failed: {}", name, e.what());
      throw;
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (stop_requested()) {
      log->warn("stage {}: interrupted; rerun the same command to continue", name);
      throw Error("interrupted during stage " + name);
    }
    nlohmann::ordered_json m;
    m["stage"] = name;
    m["scenario"] = naming_.scenario_name();
    m["fingerprint"] = fp;
    m["started"] = started;
    m["finished"] = now_iso();
    m["seconds"] = seconds;
    m["outputs"] = nlohmann::json::array();
    for (const auto& o : ctx.outputs) m["outputs"].push_back(o.string());
    write_file_atomic(manifest_path, m.dump(2) + "\n");
    log->info("stage {}: done in {:.1f} s", name, seconds);
  }
}

}  // namespace expctl
