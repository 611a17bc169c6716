#include "runner/core/naming.h"

#include <algorithm>

#include "runner/core/config.h"

namespace expctl {

Naming::Naming(const ScenarioConfig& cfg)
    : ts_(cfg.test_scenario()),
      method_(cfg.method()),
      model_(cfg.model_label),
      dataset_(cfg.dataset_name()),
      cell_(cfg.sweep_cell),
      cell_finetunes_(!cfg.sweep_cell.empty() && cfg.has_stage("finetune")),
      checkpoints_(cfg.dirs.checkpoints),
      models_dir_(cfg.dirs.models),
      datasets_dir_(cfg.dirs.datasets),
      reports_(cfg.dirs.reports) {}

std::string Naming::scenario_name() const { return ts_ + "_" + method_ + "_" + model_ + "_" + dataset_; }

std::filesystem::path Naming::report_dir() const {
  return cell_.empty() ? checkpoints_ / scenario_name() : checkpoints_ / scenario_name() / "sweep" / cell_;
}

std::filesystem::path Naming::stage_metrics(const std::string& stage) const {
  return report_dir() / (stage + "_metrics.json");
}
std::filesystem::path Naming::manifests_dir() const { return report_dir() / "manifests"; }
std::filesystem::path Naming::manifest(const std::string& stage) const { return manifests_dir() / (stage + ".json"); }
std::filesystem::path Naming::run_log() const { return report_dir() / "run.log"; }
std::filesystem::path Naming::resolved_config() const { return report_dir() / "resolved.yaml"; }
std::filesystem::path Naming::scenario_lock() const { return report_dir() / ".lock"; }
std::filesystem::path Naming::initial_model() const { return report_dir() / "initial.pt"; }
std::filesystem::path Naming::interrupt_state(const std::string& stage) const {
  return report_dir() / (stage + "_interrupted.pt");
}
std::filesystem::path Naming::report_file(const std::string& extension) const {
  return report_dir() / ("report." + extension);
}
std::filesystem::path Naming::exported_model() const { return report_dir() / "model.torchscript.pt"; }
std::filesystem::path Naming::deployed_model() const { return report_dir() / "model.deployed.pt"; }
std::filesystem::path Naming::training_curves_chart() const { return report_dir() / "training_curves.png"; }
std::filesystem::path Naming::pruning_chart() const { return report_dir() / "pruning_layers.png"; }
std::filesystem::path Naming::sweep_summary_dir() const { return reports_dir() / (scenario_name() + "_sweep"); }
std::filesystem::path Naming::comparison_dir(const std::vector<std::string>& methods) const {
  std::string name = "compare";
  for (size_t i = 0; i < methods.size(); ++i) name += (i ? "_vs_" : "_") + methods[i];
  return reports_dir() / name;
}
std::filesystem::path Naming::download_lock() const { return datasets_dir_ / ".download.lock"; }
std::filesystem::path Naming::summary_file(const std::filesystem::path& dir, const std::string& extension) {
  return dir / ("summary." + extension);
}
std::filesystem::path Naming::equal_macs_table(const std::filesystem::path& dir) { return dir / "equal_macs.csv"; }
std::filesystem::path Naming::summary_chart(const std::filesystem::path& dir, const std::string& against) {
  return dir / ("accuracy_vs_" + against + ".png");
}

// A cell of a pruning sweep reads the shared fine-tuned model; only a cell that fine-tunes keeps its own.
std::filesystem::path Naming::checkpoint_dir() const { return cell_finetunes_ ? report_dir() : checkpoints_ / ts_; }

std::filesystem::path Naming::finetune_checkpoint(int64_t epoch) const {
  return checkpoint_dir() / (model_ + "_" + dataset_ + "_FT_" + std::to_string(epoch) + ".pt");
}

std::filesystem::path Naming::recover_checkpoint(const std::string& pruner_code, int64_t epoch) const {
  return (cell_.empty() ? checkpoint_dir() : report_dir()) /
         (model_ + "_" + dataset_ + "_FTAP_" + pruner_code + "_" + std::to_string(epoch) + ".pt");
}

std::vector<int64_t> Naming::existing_finetune_epochs() const {
  std::vector<int64_t> out;
  const std::string prefix = model_ + "_" + dataset_ + "_FT_";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(checkpoint_dir(), ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".pt") continue;
    std::string num = name.substr(prefix.size(), name.size() - prefix.size() - 3);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    out.push_back(std::stoll(num));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::filesystem::path Naming::writer_lock(const std::filesystem::path& checkpoint) {
  // "..._FT_12.pt" -> "..._FT": every epoch of one run shares the lock.
  std::string stem = checkpoint.stem().string();
  const auto cut = stem.find_last_of('_');
  if (cut != std::string::npos && cut + 1 < stem.size() &&
      stem.find_first_not_of("0123456789", cut + 1) == std::string::npos)
    stem.erase(cut);
  return checkpoint.parent_path() / ("." + stem + ".lock");
}

std::filesystem::path Naming::pruned_checkpoint() const { return report_dir() / "pruned.pt"; }

std::filesystem::path Naming::reports_dir() const { return reports_ / ts_; }

std::vector<int64_t> checkpoint_epochs(int64_t epochs, int64_t save_every) {
  std::vector<int64_t> out;
  if (save_every > 0)
    for (int64_t e = save_every; e <= epochs; e += save_every) out.push_back(e);
  if (epochs > 0 && (out.empty() || out.back() != epochs)) out.push_back(epochs);
  return out;
}

}  // namespace expctl
