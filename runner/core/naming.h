// Every name and path a scenario reads or writes is computed here, and only here.
//
//   scenario name   {TS}_{Method}_{Model}_{Dataset}                 TS1_Wanda_ResNet18_CIFAR10
//   checkpoints     {checkpoints}/{TS}/{Model}_{Dataset}_FT_{E}.pt   checkpoints/TS1/ResNet18_CIFAR10_FT_5.pt
//                   {checkpoints}/{TS}/{Model}_{Dataset}_FTAP_{code}_{E}.pt   ..._FTAP_NC_5.pt, ..._FTAP_W_10.pt
//   report folder   {checkpoints}/{scenario name}/   run.log, resolved.yaml, .lock, manifests/{stage}.json,
//                   {stage}_metrics.json, initial.pt, pruned.pt, {stage}_interrupted.pt, report.{md,csv,json},
//                   model.torchscript.pt, charts
//
// A sweep cell (expctl sweep) keeps all its files in its own folder, so cells never collide with each other or
// with the plain run:   {checkpoints}/{scenario name}/sweep/{cell id}/   (report, pruned.pt, FT/FTAP checkpoints)
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace expctl {

struct ScenarioConfig;

/// Names and paths of one scenario. Every component was validated as a safe file name.
class Naming {
 public:
  explicit Naming(const ScenarioConfig& cfg);

  const std::string& test_scenario() const { return ts_; }
  const std::string& method() const { return method_; }
  const std::string& model() const { return model_; }
  const std::string& dataset() const { return dataset_; }

  /// {TS}_{Method}_{Model}_{Dataset}
  std::string scenario_name() const;
  /// The sweep cell id ("sparsity=0.3"), or "" for a plain run.
  const std::string& cell() const { return cell_; }
  /// {checkpoints}/{scenario name}/ : report, resolved config, log, manifests, lock
  /// (a sweep cell: {checkpoints}/{scenario name}/sweep/{cell id}/).
  std::filesystem::path report_dir() const;
  /// Fine-tuning checkpoint: {checkpoints}/{TS}/{Model}_{Dataset}_FT_{epoch}.pt
  std::filesystem::path finetune_checkpoint(int64_t epoch) const;
  /// Fine-tuning-after-pruning checkpoint: {checkpoints}/{TS}/{Model}_{Dataset}_FTAP_{code}_{epoch}.pt
  std::filesystem::path recover_checkpoint(const std::string& pruner_code, int64_t epoch) const;
  /// Epochs of the fine-tuning checkpoints present on disk, ascending.
  std::vector<int64_t> existing_finetune_epochs() const;
  /// The pruned model before recovery: {checkpoints}/{scenario name}/pruned.pt
  std::filesystem::path pruned_checkpoint() const;

  // The files of the report folder.
  /// {report}/{stage}_metrics.json: what a stage measured.
  std::filesystem::path stage_metrics(const std::string& stage) const;
  /// {report}/manifests/: one {stage}.json per finished stage (manifest()).
  std::filesystem::path manifests_dir() const;
  /// {report}/manifests/{stage}.json: what a finished stage ran under and wrote.
  std::filesystem::path manifest(const std::string& stage) const;
  /// {report}/run.log, {report}/resolved.yaml (the configuration with defaults filled in), {report}/.lock
  std::filesystem::path run_log() const;
  std::filesystem::path resolved_config() const;
  std::filesystem::path scenario_lock() const;
  /// {report}/initial.pt: the model before fine-tuning.
  std::filesystem::path initial_model() const;
  /// {report}/{stage}_interrupted.pt: a training stage's state when a signal stopped it.
  std::filesystem::path interrupt_state(const std::string& stage) const;
  /// {report}/report.{md,csv,json} for `extension` "md", "csv" or "json".
  std::filesystem::path report_file(const std::string& extension) const;
  /// {report}/model.torchscript.pt: the final model for Python (torch.jit.load).
  std::filesystem::path exported_model() const;
  /// {report}/model.deployed.pt: the final model frozen, batch norms folded (runner/models/deployment.h).
  std::filesystem::path deployed_model() const;
  /// {report}/training_curves.png and {report}/pruning_layers.png: the report's charts (gnuplot writes the script
  /// and data beside each: same stem, .gp and .dat).
  std::filesystem::path training_curves_chart() const;
  std::filesystem::path pruning_chart() const;
  /// {datasets}/.download.lock: held by the process that downloads, so that others sharing the folder wait.
  std::filesystem::path download_lock() const;
  /// The files of a summary folder (a sweep's or a comparison's, under reports_dir()): {dir}/summary.{md,csv,json}
  /// for `extension` "md", "csv" or "json"; {dir}/equal_macs.csv; the charts {dir}/accuracy_vs_macs.png and
  /// {dir}/accuracy_vs_latency.png (`against`: "macs" or "latency").
  static std::filesystem::path summary_file(const std::filesystem::path& dir, const std::string& extension);
  static std::filesystem::path equal_macs_table(const std::filesystem::path& dir);
  static std::filesystem::path summary_chart(const std::filesystem::path& dir, const std::string& against);
  /// The lock that writers of a shared checkpoint name take: "{dir}/{Model}_{Dataset}_FT_5.pt" ->
  /// "{dir}/.{Model}_{Dataset}_FT.lock" (one per family of epochs).
  static std::filesystem::path writer_lock(const std::filesystem::path& checkpoint);
  /// Folder of downloaded model weights and of data sets.
  std::filesystem::path models_dir() const { return models_dir_; }
  std::filesystem::path datasets_dir() const { return datasets_dir_; }
  /// Cross-scenario reports: {reports}/{TS}/
  std::filesystem::path reports_dir() const;
  /// A sweep's summary folder: {reports}/{TS}/{scenario_name()}_sweep/
  std::filesystem::path sweep_summary_dir() const;
  /// `expctl compare`'s folder for these methods: {reports}/{TS}/compare_{A}_vs_{B}.../
  std::filesystem::path comparison_dir(const std::vector<std::string>& methods) const;
  /// Folder of the fine-tuning checkpoints: {checkpoints}/{TS}/ (also for the cells of a pruning sweep, which
  /// start from the shared fine-tuned model; a cell of a fine-tuning sweep: its own folder). FTAP checkpoints of
  /// a cell go to its own folder.
  std::filesystem::path checkpoint_dir() const;

 private:
  std::string ts_, method_, model_, dataset_, cell_;
  bool cell_finetunes_ = false;
  std::filesystem::path checkpoints_, models_dir_, datasets_dir_, reports_;
};

/// Epochs at which a run of `epochs` epochs saves a checkpoint: every `save_every`, and the last one.
std::vector<int64_t> checkpoint_epochs(int64_t epochs, int64_t save_every);

}  // namespace expctl
