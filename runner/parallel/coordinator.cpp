#include "runner/parallel/coordinator.h"

#include <optional>
#include <vector>

#include "runner/core/error.h"
#include "runner/parallel/process_group.h"

namespace expctl::parallel {
namespace {

class DataParallel : public TrainingCoordinator {
 public:
  using TrainingCoordinator::TrainingCoordinator;
  bool main() const override { return is_main(); }
  int64_t rank() const override { return parallel::rank(); }
  int64_t ranks() const override { return world_size(); }

  void agree_on_resume(int64_t epoch, const std::string& folder) override {
    std::vector<double> epochs = all_gather(double(epoch));
    bool same = true;
    std::string list;
    for (size_t r = 0; r < epochs.size(); ++r) {
      same = same && epochs[r] == epochs[0];
      list += (r ? ", " : "") + std::string("rank ") + std::to_string(r) + ": " +
              (epochs[r] > 0 ? "epoch " + std::to_string(std::llround(epochs[r])) : std::string("none"));
    }
    if (!same)
      throw Error("the data-parallel processes found different checkpoints to resume from (" + list + ", e.g. " +
                  folder + "): the checkpoint and report folders must be on a file system every process sees");
  }

  void start(torch::nn::Module& model) override {
    // Every rank starts from rank 0's weights and buffers; identical averaged gradients keep them identical.
    std::vector<torch::Tensor> state = model.parameters();
    for (auto& b : model.buffers()) state.push_back(b);
    broadcast(state, 0);
    sync_.emplace(model.parameters(), /*extra_values=*/3);  // loss sum, correct, stop flag
  }

  StepTotals after_backward(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels,
                            bool check) override {
    // Gradients averaged; this step's loss sum, hits and stop flags summed over the ranks in the same all-reduce.
    const int64_t n = labels.size(0);
    torch::Tensor stats =
        torch::stack({loss.detach().to(torch::kFloat) * double(n), logits.argmax(1).eq(labels).sum().to(torch::kFloat),
                      torch::full({}, stop_requested_() ? 1.0 : 0.0, torch::TensorOptions().device(loss.device()))});
    sync_->run(stats);
    // Reading the flag syncs with the device: on CUDA only on the steps the caller syncs anyway.
    if (!loss.is_cuda() || check) stop_ = stop_ || stats[2].item<float>() > 0;
    return {stats[0].to(torch::kDouble), stats[1].round().to(torch::kLong), n * ranks()};
  }

  bool should_stop() const override { return stop_; }

  void before_evaluation(torch::nn::Module& model) override {
    // Running statistics differ between ranks (each saw its own shard): rank 0's count.
    std::vector<torch::Tensor> buffers = model.buffers();
    broadcast(buffers, 0);
  }

 private:
  std::optional<GradientSync> sync_;
  bool stop_ = false;
};

class DataParallelStages : public StageCoordinator {
 public:
  explicit DataParallelStages(std::string log_file) : log_file_(std::move(log_file)), peers_waiting_(is_main()) {}
  bool main() const override { return is_main(); }

  void start() override {
    if (is_main())
      share_from_main("go");
    else
      hear_from_main("");
  }

  bool agree_up_to_date(const std::string& stage, bool up_to_date) override {
    if (is_main()) {
      share_from_main(up_to_date ? "skip" : "run");
      return up_to_date;
    }
    return hear_from_main(stage) == "skip";
  }

  bool runs_here(const std::string& stage, bool data_parallel) override {
    if (data_parallel) {
      peers_waiting_ = false;  // they run it too: they are in its collectives, not waiting
      return true;
    }
    if (is_main()) return true;
    hear_from_main(stage);  // "done": rank 0 ran it; its files are there for the stages after it
    return false;
  }

  void finished(bool /*data_parallel*/) override {
    // The others are past the stage (a data-parallel one) or still waiting (one of rank 0's): both wait now.
    if (is_main()) peers_waiting_ = true;
  }

  void done(bool data_parallel) override {
    if (is_main() && !data_parallel) share_from_main("done");
  }

  void failed(const std::string& why) override {
    if (!peers_waiting_) return;
    peers_waiting_ = false;
    try {
      share_from_main("failed: " + why, /*wait_for_readers=*/true);
    } catch (const std::exception&) {
      // they are gone already
    }
  }

 private:
  // On ranks other than 0: rank 0's next message; throws when it says rank 0 failed.
  std::string hear_from_main(const std::string& stage) {
    std::string msg = share_from_main("");
    if (msg.rfind("failed: ", 0) == 0)
      throw Error("rank 0 failed " + (stage.empty() ? std::string("before the first stage") : "in stage " + stage) +
                  "; see its log " + log_file_ + ": " + msg.substr(8));
    return msg;
  }

  std::string log_file_;
  bool peers_waiting_;  // the other ranks wait for a message from this one (rank 0)
};

}  // namespace

std::unique_ptr<StageCoordinator> StageCoordinator::create(std::string log_file) {
  if (active()) return std::make_unique<DataParallelStages>(std::move(log_file));
  return std::make_unique<StageCoordinator>();  // one process: every step does nothing
}

StepTotals TrainingCoordinator::after_backward(const torch::Tensor& loss, const torch::Tensor& logits,
                                               const torch::Tensor& labels, bool /*check*/) {
  const int64_t n = labels.size(0);
  return {loss.detach().to(torch::kDouble) * double(n), logits.argmax(1).eq(labels).sum(), n};
}

std::unique_ptr<TrainingCoordinator> TrainingCoordinator::create(std::function<bool()> stop_requested) {
  if (active()) return std::unique_ptr<TrainingCoordinator>(new DataParallel(std::move(stop_requested)));
  return std::unique_ptr<TrainingCoordinator>(new TrainingCoordinator(std::move(stop_requested)));
}

}  // namespace expctl::parallel
