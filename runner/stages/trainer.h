// The training loop shared by the finetune and recover stages: SGD (Nesterov) with warm-up and a cosine,
// one-cycle or constant schedule, label smoothing, weight decay off BN/biases, bf16 autocast and channels_last
// on CUDA, checkpoints every save_every epochs and at the last, resume from the newest checkpoint, SIGINT/SIGTERM
// handling, pruning masks kept at zero, a NaN/inf guard, and a progress bar.
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/params.h"
#include "runner/data/dataset.h"
#include "runner/data/loader.h"
#include "runner/models/resnet.h"

namespace spdlog {
class logger;
}

namespace expctl {

/// One finished epoch.
struct EpochRecord {
  int64_t epoch = 0;
  double lr = 0, train_loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0;
  double seconds = 0, images_per_second = 0;  ///< training time of the epoch (evaluation excluded)
  double eval_images_per_second = 0;          ///< test-split evaluation throughput
  nlohmann::json to_json() const;
  static EpochRecord from_json(const nlohmann::json& j);
};

/// What to train and where its checkpoints go.
struct TrainJob {
  models::ResNet model;                ///< trained in place (replaced by the resumed model when resuming)
  const data::Split* train = nullptr;  ///< on `device`
  const data::Split* test = nullptr;   ///< evaluated after every epoch
  const Params* params = nullptr;      ///< the stage block (see add_training_params)
  data::Augmentation augment;          ///< from the data set's parameters
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  /// Checkpoint file of an epoch ({...}_FT_{e}.pt or {...}_FTAP_{code}_{e}.pt).
  std::function<std::filesystem::path(int64_t epoch)> checkpoint_path;
  /// Where an interrupted run leaves its state (in the report folder), so the checkpoint folder only ever
  /// holds the epochs the scenario asked for.
  std::filesystem::path interrupt_path;
  /// Weights to keep at zero: parameter name -> bool mask (true = keep). Empty for dense training.
  std::map<std::string, torch::Tensor> masks;
  /// Written into every checkpoint's meta (with epoch and accuracy); `fingerprint` must identify the config.
  nlohmann::json meta = nlohmann::json::object();
  std::string fingerprint;
  std::shared_ptr<spdlog::logger> log;
};

struct TrainResult {
  std::vector<EpochRecord> history;                ///< every epoch so far (also those before a resume)
  int64_t resumed_from = 0;                        ///< epoch the run continued from (0: fresh)
  bool interrupted = false;                        ///< stopped by SIGINT/SIGTERM; state saved, rerun continues
  std::vector<std::filesystem::path> checkpoints;  ///< checkpoint files of this job (all epochs, also earlier runs)
};

struct StageContext;
/// A TrainJob filled in from a training stage's context: its block as params, the data set's augmentation, the
/// seed, fingerprint and log, meta {"stage", "scenario"}, and interrupt state in {report dir}/{stage}_interrupted.pt.
TrainJob make_train_job(const StageContext& ctx, const std::string& stage, models::ResNet model,
                        const data::Split& train, const data::Split& test, torch::Device device,
                        std::function<std::filesystem::path(int64_t epoch)> checkpoint_path);

/// What the finetune and recover stages write to their metrics file: the accuracy before (as measured by the
/// caller) and after, the last checkpoint, where training resumed and the per-epoch history.
nlohmann::ordered_json training_summary(const TrainResult& result, const std::string& scenario,
                                        const torch::Device& device, const nlohmann::json& before,
                                        const std::filesystem::path& last_checkpoint);

/// Trains job.model. Throws Error on a non-finite loss (naming the epoch and step) and when a resume file
/// does not fit.
TrainResult train(TrainJob& job);

/// Sets every masked weight to zero (mask false) in place.
void apply_masks(models::ResNet& model, const std::map<std::string, torch::Tensor>& masks);

/// "auto" -> CUDA when available, else CPU; "cpu", "cuda", "cuda:N".
torch::Device resolve_device(const std::string& spec);

struct ScenarioConfig;
/// Sets up what every LibTorch stage needs from `runtime`: the device, the thread count (0: one per core) and
/// flushing of denormals; logs them and returns the device.
torch::Device prepare_runtime(const ScenarioConfig& cfg, spdlog::logger& log);

}  // namespace expctl
