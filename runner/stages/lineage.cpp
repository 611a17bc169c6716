#include "runner/stages/lineage.h"

#include <map>

#include "runner/core/error.h"
#include "runner/models/checkpoint.h"

namespace expctl {
namespace fs = std::filesystem;

namespace {

std::string same_file_text(const fs::path& file) { return fs::weakly_canonical(file).string(); }

// "scenario X (file)" as a checkpoint's meta records it.
std::string maker_of(const nlohmann::json& meta) {
  std::string who = "scenario " + meta.value("scenario", std::string("(unrecorded)"));
  if (meta.contains("scenario_file")) who += " (" + meta.value("scenario_file", std::string()) + ")";
  return who;
}

}  // namespace

std::vector<std::string> foreign_checkpoints(const ScenarioConfig& cfg, const Naming& naming,
                                             const std::vector<PlannedFile>& plan, bool force) {
  if (force) return {};
  const std::string me = naming.scenario_name(), my_file = same_file_text(cfg.file);
  struct Found {
    fs::path first;
    std::string maker;
    int more = 0;
  };
  std::map<fs::path, Found> by_family;  // writer lock -> first foreign file
  for (const PlannedFile& f : plan) {
    std::error_code ec;
    if (f.access != PlannedFile::Access::Write || !f.shared || !fs::exists(f.path, ec)) continue;
    std::string maker;
    try {
      const nlohmann::json meta = models::read_checkpoint(f.path).meta;
      const bool mine = meta.value("scenario", std::string()) == me &&
                        (!meta.contains("scenario_file") || meta.value("scenario_file", std::string()) == my_file);
      if (mine) continue;
      maker = maker_of(meta);
    } catch (const std::exception& e) {
      maker = "something that is not a readable checkpoint (" + std::string(e.what()) + ")";
    }
    auto [it, fresh] = by_family.try_emplace(Naming::writer_lock(f.path), Found{f.path, maker});
    if (!fresh) ++it->second.more;
  }
  std::vector<std::string> out;
  for (const auto& [lock, found] : by_family)
    out.push_back(found.first.string() +
                  (found.more ? " (and " + std::to_string(found.more) + " more of its epochs)" : std::string()) +
                  " was written by " + found.maker + "; scenario " + me + " (" + cfg.file.string() +
                  ") would overwrite it. Give this scenario names of its own (another scenario.test_scenario, or "
                  "paths.checkpoints), or pass --force to replace it (scenarios that start from it then run again).");
  return out;
}

std::string made_otherwise(const ScenarioConfig& cfg, const ScenarioConfig& maker, const std::string& stage,
                           const fs::path& checkpoint) {
  std::error_code ec;
  if (!fs::is_regular_file(checkpoint, ec)) return "";
  nlohmann::json meta;
  try {
    meta = models::read_checkpoint(checkpoint).meta;
  } catch (const std::exception& e) {
    return std::string(e.what()) + " (the fine-tuned model that " + cfg.file.string() + " starts from)";
  }
  const std::string expected = stage_fingerprint(maker, stage);
  const std::string recorded = meta.value("fingerprint", std::string());
  if (recorded == expected) return "";
  const bool same_maker = meta.value("scenario", std::string()) == Naming(maker).scenario_name() &&
                          meta.value("scenario_file", same_file_text(maker.file)) == same_file_text(maker.file);
  return checkpoint.string() + " was made by " + maker_of(meta) +
         (same_maker ? " with other settings than " : ", not by ") + maker.file.string() +
         " as scenario.starts_from of " + cfg.file.string() + " resolves it now (fingerprint " +
         recorded.substr(0, 12) + "... recorded, " + expected.substr(0, 12) +
         "... expected). Make it again with `expctl run " + maker.file.string() +
         "` (with the same --set options as this run), or point scenario.starts_from at the scenario that made it.";
}

}  // namespace expctl
