#include "runner/core/pipeline.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/lock.h"
#include "runner/dist/coordinator.h"
#include "runner/dist/dist.h"
#include "runner/io/checksum.h"

namespace expctl {
namespace fs = std::filesystem;

// ---- stop signals ------------------------------------------------------------------------------

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }
}  // namespace

bool stop_requested() { return g_stop.load(); }
void request_stop() { g_stop.store(true); }

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
  // A model read from the user's own file (TorchScript) is what that file holds, not its name. Hashed for the
  // first stage only: each later fingerprint chains the one before it.
  if (previous.empty() && config_.model.has("file"))
    if (std::error_code ec; fs::is_regular_file(config_.model.get_string("file"), ec))
      j["model_file_sha256"] = io::sha256_file(config_.model.get_string("file"));
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
    out << "  " << ++i << ". " << name << "\n";
    for (const auto& f : e->plan(config_, naming_, config_.stage(name)))
      out << "       " << (f.access == PlannedFile::Access::Read ? "reads  " : "writes ") << f.path.string() << "  ("
          << f.what << ")\n";
  }
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
  // Several processes (data parallel): the coordinator says which of them runs what (see StageCoordinator);
  // with one process it does nothing.
  const fs::path dir = naming_.report_dir();
  const std::unique_ptr<dist::StageCoordinator> ranks = dist::StageCoordinator::create((dir / "run.log").string());
  const bool parallel = dist::active();
  const bool main = ranks->main();

  std::optional<ScenarioLock> lock;
  std::shared_ptr<spdlog::logger> log;
  if (main) {
    try {
      fs::create_directories(dir / "manifests");
      lock.emplace(dir / ".lock", naming_.scenario_name());
      log = make_logger(dir / "run.log", options_.console_log);
      // Temporary files of killed runs (tens of MB each); a live process's are kept (see files.h).
      for (const auto& p :
           remove_stale_temp_files({dir, naming_.checkpoint_dir(), naming_.models_dir(), naming_.datasets_dir()}))
        log->info("removed {}, left by a process that is gone", p.string());
    } catch (const std::exception& e) {
      ranks->failed(e.what());
      throw;
    }
  } else {
    log = make_rank_logger(dist::rank(), options_.console_log);
  }
  auto previous_default = spdlog::default_logger();
  spdlog::set_default_logger(log);
  struct RestoreLogger {
    std::shared_ptr<spdlog::logger> prev;
    ~RestoreLogger() { spdlog::set_default_logger(prev); }
  } restore{previous_default};
  SignalGuard signals;

  try {
    if (main) {
      write_file_atomic(dir / "resolved.yaml", "# resolved configuration of " + config_.file.string() +
                                                   " (defaults filled in)\n" + config_.resolved_yaml());
      log->info("scenario {} from {}", naming_.scenario_name(), config_.file.string());
      if (parallel) {
        const dist::WorldInfo& w = dist::world();
        log->info("data parallel: rank {} of {} ({}), backend {}, master {}:{}", w.rank, w.world_size, w.source,
                  dist::backend(), w.master_addr, w.master_port);
      }
    }
    ranks->start();

    std::string previous;
    for (const auto& name : config_.stages) {
      std::string fp = fingerprint_of(name, previous);
      previous = fp;
      if (!options_.only.empty() && name != options_.only) continue;
      const fs::path manifest_path = dir / "manifests" / (name + ".json");

      bool up_to_date = false;
      if (main && !options_.force && fs::exists(manifest_path)) {
        try {
          std::ifstream in(manifest_path);
          auto m = nlohmann::json::parse(in);
          bool outputs_present = true;
          for (const auto& o : m.at("outputs")) outputs_present = outputs_present && fs::exists(o.get<std::string>());
          if (m.at("fingerprint") == fp && outputs_present) {
            log->info("stage {}: up to date (manifest {}); --force redoes it", name, manifest_path.string());
            up_to_date = true;
          } else {
            log->info("stage {}: {} changed since the last run; running it again", name,
                      outputs_present ? "the configuration" : "an output file");
          }
        } catch (const std::exception& e) {
          log->warn("stage {}: unreadable manifest {} ({}); running the stage again", name, manifest_path.string(),
                    e.what());
        }
      }
      if (ranks->agree_up_to_date(name, up_to_date)) continue;

      const StageEntry* entry = StageRegistry::find(name);
      if (!ranks->runs_here(name, entry->data_parallel)) continue;
      StageContext ctx{config_, naming_, config_.stage(name), options_, log, fp, {}};
      log->info("stage {}: start", name);
      std::string started = now_iso();
      auto t0 = std::chrono::steady_clock::now();
      try {
        entry->create()->run(ctx);
      } catch (const std::exception& e) {
        log->error("stage {} failed: {}", name, e.what());
        ranks->failed(e.what());
        throw;
      }
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (stop_requested()) {
        log->warn("stage {}: interrupted; rerun the same command to continue", name);
        ranks->failed("interrupted during stage " + name);
        throw Error("interrupted during stage " + name);
      }
      if (!main) continue;
      ranks->finished(entry->data_parallel);
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
      ranks->done(entry->data_parallel);
    }
  } catch (const std::exception& e) {
    ranks->failed(e.what());
    throw;
  }
}

}  // namespace expctl
