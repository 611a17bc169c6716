// Rank coordination in two small objects, so that the pipeline and the training loop read as single-process code:
// - StageCoordinator: which process runs which stage of a scenario, and what rank 0 tells the others
//   (Pipeline::run, runner/pipeline/pipeline.cpp);
// - TrainingCoordinator: what the processes of a data-parallel training run share (train(),
//   runner/training/trainer.cpp): resume point, start weights, gradients and step totals, stop flag, BN buffers.
// With one process both do nothing.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace expctl::parallel {

/// The stage protocol of a data-parallel scenario. Rank 0 takes the lock, writes every file and decides which
/// stages run; it tells the others through the store ("go", then per stage "skip"/"run" and, after a stage only
/// rank 0 runs, "done"; "failed: why" instead when it fails). Data-parallel stages (training) run on every rank;
/// the others run on rank 0 while the rest wait, and later stages read rank 0's files. A failure inside a
/// data-parallel stage ends the failing process, and the others' next collective fails (no hang).
class StageCoordinator {
 public:
  /// The data-parallel form when parallel::active(), else the single-process one. `log_file`: rank 0's log, named
  /// in the other ranks' errors.
  static std::unique_ptr<StageCoordinator> create(std::string log_file);
  virtual ~StageCoordinator() = default;

  /// The process that takes the lock, logs to the file and writes the manifests.
  virtual bool main() const { return true; }
  /// Rank 0 is ready ("go"); the others wait for it here, and throw when it failed before the first stage.
  virtual void start() {}
  /// Rank 0's answer to "is `stage` up to date?" on every process (`up_to_date` is rank 0's own).
  virtual bool agree_up_to_date(const std::string& stage, bool up_to_date) { return up_to_date; }
  /// Whether this process runs `stage` itself. A rank other than 0 does not run a stage that is not data
  /// parallel: it waits here until rank 0 says it is done (and throws when rank 0 failed in it).
  virtual bool runs_here(const std::string& stage, bool data_parallel) { return true; }
  /// This process finished `stage` (rank 0, before writing its manifest).
  virtual void finished(bool data_parallel) {}
  /// Rank 0 has written the manifest of a stage that only it ran: the others go on.
  virtual void done(bool data_parallel) {}
  /// This process failed (`why`): rank 0 tells the others that are waiting for it.
  virtual void failed(const std::string& why) {}
};

/// One training step's totals over every process.
struct StepTotals {
  torch::Tensor loss_sum;  ///< double scalar on the device: the loss summed over the step's images
  torch::Tensor correct;   ///< long scalar on the device: correct top-1 predictions
  int64_t images = 0;      ///< images in the step, all processes together
};

class TrainingCoordinator {
 public:
  /// The data-parallel form when parallel::active(), else the single-process one. `stop_requested` tells whether
  /// this process was asked to stop (SIGINT/SIGTERM).
  static std::unique_ptr<TrainingCoordinator> create(std::function<bool()> stop_requested);
  virtual ~TrainingCoordinator() = default;

  /// The process that logs and writes files (rank 0; the only one in a single process).
  virtual bool main() const { return true; }
  virtual int64_t rank() const { return 0; }
  virtual int64_t ranks() const { return 1; }

  /// Every process must resume from the same epoch (0: none): throws naming each one's otherwise. `folder` is
  /// where the checkpoints are, for the message.
  virtual void agree_on_resume(int64_t epoch, const std::string& folder) {}
  /// Before the first step: every process takes rank 0's parameters and buffers, and gradients are synced from
  /// now on.
  virtual void start(torch::nn::Module& model) {}
  /// After backward, before the optimizer step: gradients averaged over the processes, and the step's totals.
  /// `check`: a step where the caller reads the totals on the host anyway (the stop flag is read then on CUDA).
  virtual StepTotals after_backward(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels,
                                    bool check);
  /// Whether the run stops before the next step: this process was asked to (single process), or any process was
  /// (data parallel: all agree, after the same step).
  virtual bool should_stop() const { return stop_requested_(); }
  /// Before evaluating: rank 0's BN running statistics go to every process (as DDP's broadcast_buffers).
  virtual void before_evaluation(torch::nn::Module& model) {}

 protected:
  explicit TrainingCoordinator(std::function<bool()> stop_requested) : stop_requested_(std::move(stop_requested)) {}
  std::function<bool()> stop_requested_;
};

}  // namespace expctl::parallel
