// The training loop shared by the finetune and recover stages: SGD (Nesterov) with warm-up and a cosine,
// one-cycle or constant schedule, label smoothing, weight decay off BN/biases, bf16 autocast and channels_last
// on CUDA, checkpoints every save_every epochs and at the last, resume from the newest checkpoint, SIGINT/SIGTERM
// handling, pruning masks kept at zero, a NaN/inf guard, and a progress bar.
//
// Data parallel (runner/parallel active, several processes): batch_size is the global batch, each rank trains on its
// shard of every global batch (batch_size / world size), gradients are averaged across ranks after backward,
// rank 0's weights and buffers are copied to every rank at the start and its BN buffers before each evaluation
// (as DDP's broadcast_buffers), evaluation is sharded, the logged statistics, the NaN guard and the stop flag are
// global, and only rank 0 writes checkpoints. The learning-rate schedule and data order depend on the global
// batch only, so a run resumes at any world size.
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/params.h"
#include "runner/data/loader.h"
#include "runner/data/split.h"
#include "runner/metrics/metrics.h"
#include "runner/models/network.h"
#include "runner/parallel/process_group.h"

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
  /// The epoch's health, so that a slow epoch explains itself (all over the training steps, evaluation excluded):
  /// - data_wait_seconds: wall time the steps waited for their batch (gathering, augmenting and normalising it,
  ///   and on a streamed split, images not decoded yet);
  /// - forward/backward/optimizer_seconds: wall time of the step's phases (CPU only: on CUDA they would time the
  ///   kernel launches, so they stay 0 there);
  /// - system_time_share: the process's kernel CPU time / its total CPU time (all threads), in [0, 1];
  /// - page_faults: minor + major page faults of the process.
  double data_wait_seconds = 0;
  double forward_seconds = 0, backward_seconds = 0, optimizer_seconds = 0;
  double cpu_seconds = 0, system_time_share = 0;
  int64_t page_faults = 0;
  int64_t steps = 0;
  /// Streamed training split only: images decoded this epoch and their decoding rate (per decoding call's wall
  /// time, all worker threads together).
  int64_t decoded_images = 0;
  double decode_images_per_second = 0;
  nlohmann::json to_json() const;
  static EpochRecord from_json(const nlohmann::json& j);
  /// What is wrong with this epoch's health, "" when nothing: a kernel share above 10% of the CPU time (memory
  /// mapped and unmapped at every step) or more than 10% of the epoch waiting for data.
  std::string health_warning() const;
};

/// What to train and where its checkpoints go.
struct TrainJob {
  models::Network model{nullptr};      ///< trained in place (replaced by the resumed model when resuming)
  const data::Split* train = nullptr;  ///< on `device`
  const data::Split* test = nullptr;   ///< evaluated after every epoch
  const Params* params = nullptr;      ///< the stage block (read by training_options())
  data::Augmentation augment;          ///< from the data set's parameters
  int64_t prefetch = 0;                ///< batches decoded ahead on a streamed split
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
  /// Start from scratch (--force): never resume, and remove this job's checkpoints and training states of earlier
  /// runs first, so no stale epoch of the previous run can be resumed from later.
  bool fresh = false;
  std::shared_ptr<spdlog::logger> log;
};

/// How a training run computes. Master weights, optimizer state, BN statistics, checkpoints and masks stay fp32
/// (masks exact zeros) whatever the precision; bf16 is autocast's, on the forward pass only.
struct TrainPrecision {
  std::string requested = "auto";  ///< the stage's `precision`: auto, fp32 or bf16
  bool bf16 = false;               ///< forward under bf16 autocast
  bool channels_last = false;      ///< weights and inputs in channels_last (NHWC)
  std::string why;                 ///< why this choice, for the log and the metrics file
  /// "bf16 autocast + channels_last", "fp32 + channels_last", "fp32".
  std::string name() const;
  nlohmann::json to_json() const;
};

namespace metrics {
struct Bf16Support;
}
/// The stage's `precision` on `device`: auto = bf16 autocast on CUDA and on CPUs that compute bf16 natively
/// (`cpu`), fp32 elsewhere; fp32 and bf16 are taken as asked. channels_last as asked (default on).
TrainPrecision choose_precision(const std::string& requested, bool channels_last, const torch::Device& device,
                                const metrics::Bf16Support& cpu);

struct TrainResult {
  std::vector<EpochRecord> history;                ///< every epoch so far (also those before a resume)
  int64_t resumed_from = 0;                        ///< epoch the run continued from (0: fresh)
  bool interrupted = false;                        ///< stopped by SIGINT/SIGTERM; state saved, rerun continues
  std::vector<std::filesystem::path> checkpoints;  ///< checkpoint files of this job (all epochs, also earlier runs)
  TrainPrecision precision;                        ///< what the training steps computed in
};

/// What the finetune and recover stages write to their metrics file: the accuracy before (as measured by the
/// caller) and after, the last checkpoint, where training resumed and the per-epoch history.
nlohmann::ordered_json training_summary(const TrainResult& result, const std::string& scenario,
                                        const torch::Device& device, const nlohmann::json& before,
                                        const std::filesystem::path& last_checkpoint);

/// A mean cross-entropy above this is divergence even when finite: logits thousands apart mean blown-up weights.
inline constexpr double kDivergedLoss = 1e4;

/// Trains job.model. Throws Error when the training loss diverges (not finite, or above kDivergedLoss; naming the
/// epoch and step) or the test loss is not finite (naming the epoch; a finite test loss above kDivergedLoss only
/// warns: unsettled BN running statistics give such values early in short runs) and when a resume file does not fit.
/// Resumes only from a checkpoint written for job.fingerprint whose training-state file was saved with that very
/// checkpoint.
TrainResult train(TrainJob& job);

/// Sets every masked weight to zero (mask false) in place.
void apply_masks(models::Network model, const std::map<std::string, torch::Tensor>& masks);

/// metrics::evaluate() over all data-parallel ranks: each evaluates its contiguous shard of `split` and the sums
/// are combined, so every rank returns the result for the whole split. A single process calls metrics::evaluate().
metrics::EvalResult evaluate_all_ranks(models::Network model, const data::Split& split, int64_t batch_size,
                                       torch::Device device);

}  // namespace expctl
