#include "runner/training/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "runner/core/compat.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/naming.h"
#include "runner/core/progress.h"
#include "runner/core/stop.h"
#include "runner/data/registry.h"
#include "runner/metrics/environment.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "runner/parallel/coordinator.h"
#include "runner/training/training_params.h"

namespace expctl {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

nlohmann::json EpochRecord::to_json() const {
  nlohmann::json j = {{"epoch", epoch},
                      {"lr", lr},
                      {"train_loss", train_loss},
                      {"train_accuracy", train_accuracy},
                      {"test_loss", test_loss},
                      {"test_accuracy", test_accuracy},
                      {"seconds", seconds},
                      {"images_per_second", images_per_second},
                      {"eval_images_per_second", eval_images_per_second},
                      {"steps", steps},
                      {"data_wait_seconds", data_wait_seconds},
                      {"forward_seconds", forward_seconds},
                      {"backward_seconds", backward_seconds},
                      {"optimizer_seconds", optimizer_seconds},
                      {"cpu_seconds", cpu_seconds},
                      {"system_time_share", system_time_share},
                      {"page_faults", page_faults}};
  if (decoded_images > 0) {
    j["decoded_images"] = decoded_images;
    j["decode_images_per_second"] = decode_images_per_second;
  }
  return j;
}

EpochRecord EpochRecord::from_json(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.lr = j.at("lr");
  r.train_loss = j.at("train_loss");
  r.train_accuracy = j.at("train_accuracy");
  r.test_loss = j.at("test_loss");
  r.test_accuracy = j.at("test_accuracy");
  r.seconds = j.at("seconds");
  r.images_per_second = j.at("images_per_second");
  r.eval_images_per_second = j.value("eval_images_per_second", 0.0);
  r.steps = j.value("steps", int64_t(0));  // records of earlier versions lack the health figures
  r.data_wait_seconds = j.value("data_wait_seconds", 0.0);
  r.forward_seconds = j.value("forward_seconds", 0.0);
  r.backward_seconds = j.value("backward_seconds", 0.0);
  r.optimizer_seconds = j.value("optimizer_seconds", 0.0);
  r.cpu_seconds = j.value("cpu_seconds", 0.0);
  r.system_time_share = j.value("system_time_share", 0.0);
  r.page_faults = j.value("page_faults", int64_t(0));
  r.decoded_images = j.value("decoded_images", int64_t(0));
  r.decode_images_per_second = j.value("decode_images_per_second", 0.0);
  return r;
}

std::string EpochRecord::health_warning() const {
  std::ostringstream s;
  s << std::fixed << std::setprecision(0);
  if (system_time_share > 0.10)
    s << "the kernel took " << 100 * system_time_share << "% of the CPU time (" << page_faults
      << " page faults): memory is mapped and unmapped at every step; is EXPCTL_MALLOC=default set, or is the "
         "machine short of memory?";
  if (seconds > 0 && data_wait_seconds > 0.1 * seconds)
    s << (s.tellp() > 0 ? " " : "") << "the steps waited " << std::setprecision(1) << data_wait_seconds << " s of "
      << seconds << " s for data" << (decoded_images > 0 ? ": raise dataset.workers or dataset.prefetch" : "");
  return s.str();
}

metrics::EvalResult evaluate_all_ranks(models::Network model, const data::Split& split, int64_t batch_size,
                                       torch::Device device) {
  if (!parallel::active() || split.size() == 0) return metrics::evaluate(model, split, batch_size, device);
  const int64_t n = split.size(), w = parallel::world_size(), r = parallel::rank();
  const int64_t begin = r * n / w, end = (r + 1) * n / w;
  metrics::EvalResult part;
  if (end > begin) {
    const data::Split shard = split.slice(begin, end);
    part = metrics::evaluate(model, shard, batch_size, device);
  }
  std::vector<torch::Tensor> sums{
      torch::tensor({part.loss * double(part.count), double(part.correct), double(part.count)},
                    torch::TensorOptions().dtype(torch::kDouble))
          .to(parallel::device())};
  parallel::all_reduce_sum(sums);
  auto total = sums[0].to(torch::kCPU);
  metrics::EvalResult out;
  out.count = std::llround(total[2].item<double>());
  out.correct = std::llround(total[1].item<double>());
  out.accuracy = 100.0 * double(out.correct) / double(out.count);
  out.loss = total[0].item<double>() / double(out.count);
  return out;
}

void apply_masks(models::Network model, const std::map<std::string, torch::Tensor>& masks) {
  if (masks.empty()) return;
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  for (const auto& [name, mask] : masks) {
    auto* p = params.find(name);
    if (!p) throw Error("pruning mask for '" + name + "': the model has no such parameter");
    p->mul_(mask.to(p->device()));
  }
}

namespace {

// Weight decay on conv/linear weights only: decaying BN scales and biases hurts accuracy and does not regularise.
std::unique_ptr<torch::optim::SGD> make_optimizer(models::Network model, const TrainingOptions& o) {
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& kv : model->named_parameters()) (kv.value().dim() > 1 ? decay : no_decay).push_back(kv.value());
  auto opts = torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay);
  auto no_decay_opts = opts;
  no_decay_opts.weight_decay(0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::SGDOptions>(opts));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::SGDOptions>(no_decay_opts));
  return std::make_unique<torch::optim::SGD>(groups, opts);
}

// Learning rate at global step `t` of `total`: linear warm-up, then the schedule down from the peak.
double lr_at(const TrainingOptions& o, int64_t t, int64_t total, int64_t warmup) {
  const double peak = o.lr;
  if (t < warmup) return peak * double(t + 1) / double(warmup);
  const double q = total > warmup ? double(t - warmup) / double(total - warmup) : 1.0;
  const std::string& s = o.schedule;
  if (s == "cosine") return peak * 0.5 * (1.0 + std::cos(M_PI * q));
  if (s == "onecycle") return peak * (1.0 - q);
  return peak;
}

// freeze_bn: BatchNorm layers normalise with their running statistics and leave them as they are, while their
// affine weights still learn.
void freeze_batchnorm(models::Network model) {
  for (auto& m : model->modules(/*include_self=*/false))
    if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get()) != nullptr) m->eval();
}

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

// Moves 4-D weights to channels_last: cuDNN's and oneDNN's fastest convolution kernels want NHWC.
void to_channels_last(models::Network model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

struct Resume {
  fs::path path;
  int64_t epoch = 0;
};

// The files of this job that a resume could pick up: every epoch's checkpoint and the interrupt file.
std::vector<fs::path> resume_candidates(const TrainJob& job, int64_t epochs) {
  std::vector<fs::path> out;
  for (int64_t e = 1; e <= epochs; ++e) out.push_back(job.checkpoint_path(e));
  out.push_back(job.interrupt_path);
  return out;
}

// Why `path` cannot be resumed from ("" when it can): it must be written for this configuration, and its training
// state saved with this very checkpoint. A kill between writing a checkpoint and its state leaves the state of an
// earlier run (of another configuration) beside a new checkpoint; the id written into both tells them apart.
std::string resume_mismatch(const TrainJob& job, const fs::path& path, const models::Checkpoint& ck) {
  if (ck.meta.value("fingerprint", "") != job.fingerprint) return "written for another configuration";
  const nlohmann::json extra = models::peek_training_state(path).extra;
  const std::string id = ck.meta.value("state_id", "");
  if (id.empty() || extra.value("checkpoint_state_id", "") != id || extra.value("fingerprint", "") != job.fingerprint)
    return "its training state " + models::training_state_path(path).string() +
           " was saved with another checkpoint (an interrupted save, or an earlier run)";
  return "";
}

// The newest checkpoint of this job that can be resumed from (see resume_mismatch).
Resume find_resume(const TrainJob& job, int64_t epochs) {
  Resume best;
  for (const fs::path& path : resume_candidates(job, epochs)) {
    if (!fs::exists(path) || !fs::exists(models::training_state_path(path))) continue;
    try {
      auto ck = models::read_checkpoint(path);
      if (std::string why = resume_mismatch(job, path, ck); !why.empty()) {
        job.log->warn("{}: {}; not resuming from it", path.string(), why);
        continue;
      }
      int64_t e = ck.meta.value("epoch", int64_t(0));
      if (e > best.epoch) best = {path, e};
    } catch (const std::exception& ex) {
      job.log->warn("{}: unreadable ({}); not resuming from it", path.string(), ex.what());
    }
  }
  return best;
}

// --force: the previous run's checkpoints and states go before training starts, so an interrupted forced run can
// only ever be continued from its own epochs.
void remove_previous_run(const TrainJob& job, int64_t epochs) {
  int removed = 0;
  for (const fs::path& path : resume_candidates(job, epochs)) {
    std::error_code ec;
    removed += fs::remove(path, ec) ? 1 : 0;
    fs::remove(models::training_state_path(path), ec);
  }
  if (removed > 0)
    job.log->info("--force: removed {} checkpoint(s) of the previous run; training from scratch", removed);
}

// A random id written into a checkpoint's meta and into its training state (see resume_mismatch).
std::string new_state_id() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << rd() << rd() << rd() << rd();
  return s.str();
}

// "" while `loss` is a sane training value, else how it diverged: "NaN", "infinite", "1.2e+19 (above 1e+04)".
std::string divergence(double loss) {
  if (std::isnan(loss)) return "NaN";
  if (std::isinf(loss)) return "infinite";
  if (loss > kDivergedLoss) {
    std::ostringstream s;
    s << std::setprecision(3) << loss << " (above " << kDivergedLoss << ")";
    return s.str();
  }
  return "";
}

/// One epoch's line of the progress bar: steps, loss, accuracy, images per second and the time left.
class EpochProgress {
 public:
  EpochProgress(int64_t epoch, int64_t epochs, int64_t steps, bool enabled)
      : epoch_(epoch), epochs_(epochs), steps_(steps), bar_(enabled), start_(std::chrono::steady_clock::now()) {}
  void update(int64_t step, double loss, double acc, int64_t images) {
    if (!bar_.on_terminal()) return;
    const bool last = step + 1 == steps_;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0 ? images / secs : 0;
    const double eta = secs / double(step + 1) * double(steps_ - step - 1);
    char text[128];
    std::snprintf(text, sizeof text, "%lld/%lld loss %.4f acc %5.1f%% %6.0f img/s ETA %4.0fs", (long long)(step + 1),
                  (long long)steps_, loss, acc, rate, eta);
    bar_.draw("  epoch " + std::to_string(epoch_) + "/" + std::to_string(epochs_), double(step + 1) / double(steps_),
              text, last);
    if (last) bar_.finish(/*keep=*/false);  // the epoch's log line replaces it
  }

 private:
  int64_t epoch_, epochs_, steps_;
  ProgressBar bar_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

nlohmann::ordered_json training_summary(const TrainResult& result, const std::string& scenario,
                                        const torch::Device& device, const nlohmann::json& before,
                                        const fs::path& last_checkpoint) {
  const EpochRecord& last = result.history.back();
  nlohmann::ordered_json out;
  out["scenario"] = scenario;
  out["device"] = device.str();
  out["before"] = before;
  out["after"] = {{"accuracy", last.test_accuracy}, {"loss", last.test_loss}, {"epoch", last.epoch}};
  out["checkpoint"] = last_checkpoint.string();
  out["checkpoint_sha256"] = content_id(last_checkpoint);  // the report checks it measures this very file
  out["resumed_from_epoch"] = result.resumed_from;
  out["precision"] = result.precision.to_json();
  if (parallel::active()) out["processes"] = parallel::world_size();  // images_per_second counts all of them
  out["peak_memory_mb"] = metrics::peak_memory_mb();
  if (const metrics::CudaMemory gpu = metrics::cuda_peak_memory(device); gpu.known) {
    out["cuda_peak_allocated_mb"] = gpu.peak_allocated_mb;
    out["cuda_peak_reserved_mb"] = gpu.peak_reserved_mb;
  }
  out["history"] = nlohmann::ordered_json::array();
  for (const auto& h : result.history) out["history"].push_back(nlohmann::ordered_json(h.to_json()));
  return out;
}

TrainPrecision choose_precision(const std::string& requested, bool channels_last, const torch::Device& device,
                                const metrics::Bf16Support& cpu) {
  TrainPrecision p;
  p.requested = requested;
  p.channels_last = channels_last;
  if (requested == "fp32") {
    p.why = "asked for";
  } else if (requested == "bf16") {
    p.bf16 = true;
    p.why = device.is_cuda() || cpu.native ? "asked for"
                                           : "asked for, although this CPU has no native bf16 (" + cpu.what +
                                                 "): LibTorch emulates it, much slower than fp32";
  } else if (device.is_cuda()) {
    p.bf16 = true;
    p.why = "auto: CUDA";
  } else if (cpu.native) {
    p.bf16 = true;
    p.why = "auto: the CPU computes bf16 natively (" + cpu.what + ")";
  } else {
    p.why = "auto: " + cpu.what + " on this CPU; emulated bf16 would be slower than fp32";
  }
  return p;
}

std::string TrainPrecision::name() const {
  return std::string(bf16 ? "bf16 autocast" : "fp32") + (channels_last ? " + channels_last" : "");
}

nlohmann::json TrainPrecision::to_json() const {
  return {{"requested", requested},
          {"forward", bf16 ? "bf16 autocast" : "fp32"},
          {"channels_last", channels_last},
          {"why", why},
          {"weights", "fp32"}};
}

namespace {

// One training run, in the parts train() strings together: set-up (precision, resume, optimizer, masks, loader),
// epochs, steps, evaluation and saving. Rank coordination is the coordinator's: with one process it does nothing.
class Trainer {
 public:
  explicit Trainer(TrainJob& job)
      : job_(job),
        p_(training_options(*job.params)),
        epochs_(p_.epochs),
        planned_(checkpoint_epochs(epochs_, p_.save_every)),
        coord_(parallel::TrainingCoordinator::create([] { return stop_requested(); })) {}

  TrainResult run() {
    setup();
    for (int64_t epoch = resume_.epoch + 1; epoch <= epochs_; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      EpochTotals totals = train_epoch(epoch);
      if (coord_->should_stop()) {
        save_interrupted(epoch);
        break;
      }
      EpochRecord rec = finish_epoch(epoch, totals, std::chrono::steady_clock::now() - t0);
      if (std::find(planned_.begin(), planned_.end(), epoch) != planned_.end()) {
        save(job_.checkpoint_path(epoch), epoch, rec);
        if (coord_->main()) job_.log->info("saved {}", job_.checkpoint_path(epoch).string());
      }
    }
    if (!result_.interrupted && coord_->main()) {
      std::error_code ec;
      fs::remove(job_.interrupt_path, ec);
      fs::remove(models::training_state_path(job_.interrupt_path), ec);
    }
    for (int64_t e : planned_)
      if (fs::exists(job_.checkpoint_path(e))) result_.checkpoints.push_back(job_.checkpoint_path(e));
    return std::move(result_);
  }

 private:
  struct EpochTotals {
    torch::Tensor loss_sum, correct;
    int64_t seen = 0, steps = 0;
    double lr = 0;
    double data = 0, forward = 0, backward = 0, optimizer = 0;  // seconds in each phase of the steps
    metrics::ProcessUsage usage;                                // the process's CPU time and faults in the steps
  };
  using Clock = std::chrono::steady_clock;
  static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

  // ---- set-up ----
  void setup() {
    const bool cuda = job_.device.is_cuda();
    const metrics::Bf16Support cpu = metrics::cpu_bf16_support();
    precision_ = choose_precision(p_.precision, p_.channels_last, job_.device, cpu);
    result_.precision = precision_;
    if (coord_->main()) {
      if (precision_.bf16 && !cuda && !cpu.native)
        job_.log->warn("training precision: {} ({})", precision_.name(), precision_.why);
      else
        job_.log->info("training precision: {} ({})", precision_.name(), precision_.why);
    }
    if (cuda) at::globalContext().setBenchmarkCuDNN(true);

    const int64_t global_batch = p_.batch_size;
    if (global_batch % coord_->ranks() != 0)
      throw Error(job_.meta.value("stage", std::string("training")) + ".batch_size: " + std::to_string(global_batch) +
                  " is not divisible by the " + std::to_string(coord_->ranks()) +
                  " data-parallel processes (batch_size is the global batch; each process takes an equal share)");

    // Fresh: every rank skips the search (rank 0 may be removing the files the others would look at).
    if (job_.fresh && coord_->main()) remove_previous_run(job_, epochs_);
    resume_ = job_.fresh ? Resume{} : find_resume(job_, epochs_);
    if (!job_.fresh) coord_->agree_on_resume(resume_.epoch, job_.checkpoint_path(1).parent_path().string());
    if (resume_.epoch > 0) {
      job_.model = models::load_checkpoint(resume_.path);
      prepare_model();
      auto state = models::load_training_state(resume_.path, *optimizer_);
      for (const auto& r : state.extra.value("history", nlohmann::json::array()))
        result_.history.push_back(EpochRecord::from_json(r));
      result_.resumed_from = resume_.epoch;
      job_.log->info("resuming from {} (epoch {} of {})", resume_.path.string(), resume_.epoch, epochs_);
    } else {
      prepare_model();
    }
    for (const auto& [name, m] : job_.masks) masks_[name] = m.to(job_.device, torch::kFloat);
    apply_masks(job_.model, masks_);
    params_ = job_.model->named_parameters();
    coord_->start(*job_.model);

    data::LoaderOptions lo;
    lo.batch_size = global_batch / coord_->ranks();
    lo.shuffle = true;
    lo.drop_last = true;
    lo.seed = job_.seed;
    lo.augment = job_.augment;
    lo.prefetch = job_.prefetch;
    lo.rank = coord_->rank();
    lo.world_size = coord_->ranks();
    loader_.emplace(*job_.train, lo);
    if (loader_->num_batches() == 0)
      throw Error("the training split has " + std::to_string(job_.train->size()) + " images, fewer than one batch of " +
                  std::to_string(global_batch) + "; lower batch_size");
    steps_ = loader_->num_batches();
    warmup_ = std::llround(p_.warmup_epochs * double(steps_));
    ce_ = F::CrossEntropyFuncOptions().label_smoothing(p_.label_smoothing);
  }

  // The model on its device in its memory format, and a new optimizer for its parameters (fp32 master weights).
  void prepare_model() {
    job_.model->to(job_.device);
    if (precision_.channels_last) to_channels_last(job_.model);
    optimizer_ = make_optimizer(job_.model, p_);
  }

  // ---- one epoch ----
  EpochTotals train_epoch(int64_t epoch) {
    job_.model->train();
    if (p_.freeze_bn) freeze_batchnorm(job_.model);
    loader_->set_epoch(epoch - 1);
    EpochProgress bar(epoch, epochs_, steps_, coord_->main());
    EpochTotals t;
    t.loss_sum = torch::zeros({}, torch::TensorOptions().device(job_.device).dtype(torch::kDouble));
    t.correct = torch::zeros({}, torch::TensorOptions().device(job_.device).dtype(torch::kLong));
    const metrics::ProcessUsage usage0 = metrics::process_usage();
    for (int64_t j = 0; j < steps_; ++j) {
      if (coord_->should_stop()) break;
      t.lr = lr_at(p_, (epoch - 1) * steps_ + j, epochs_ * steps_, warmup_);
      // Checking finiteness syncs with the device: every 20 steps is enough to stop a diverged run early. Data
      // parallel, the sums are global, so every rank sees the same value and stops at the same step.
      const bool check = j % 20 == 0 || j + 1 == steps_;
      const Clock::time_point waiting = Clock::now();
      const data::Batch batch = loader_->batch(j);
      t.data += since(waiting);
      const parallel::StepTotals step = train_step(batch, t.lr, check, t);
      ++t.steps;
      t.loss_sum += step.loss_sum;
      t.correct += step.correct;
      t.seen += step.images;
      if (check) {
        const double mean = t.loss_sum.item<double>() / double(t.seen);
        if (std::string why = divergence(mean); !why.empty())
          throw Error("training diverged: the loss is " + why + " at epoch " + std::to_string(epoch) + ", step " +
                      std::to_string(j + 1) + " (lr " + std::to_string(t.lr) +
                      "); lower optimizer.lr or raise warmup_epochs");
        bar.update(j, mean, 100.0 * double(t.correct.item<int64_t>()) / double(t.seen), t.seen);
      }
    }
    const metrics::ProcessUsage usage1 = metrics::process_usage();
    t.usage.user_seconds = usage1.user_seconds - usage0.user_seconds;
    t.usage.system_seconds = usage1.system_seconds - usage0.system_seconds;
    t.usage.minor_faults = usage1.minor_faults - usage0.minor_faults;
    t.usage.major_faults = usage1.major_faults - usage0.major_faults;
    return t;
  }

  // ---- one step: forward (autocast when bf16), backward, gradient sync, masked update ----
  // Adds the wall time of its phases to `t` (on the CPU, where operations finish before they return).
  parallel::StepTotals train_step(const data::Batch& b, double lr, bool check, EpochTotals& t) {
    Clock::time_point mark = Clock::now();
    const torch::Tensor x = precision_.channels_last ? b.images.contiguous(at::MemoryFormat::ChannelsLast) : b.images;
    set_lr(*optimizer_, lr);
    // Gradients dropped rather than zeroed (as PyTorch's zero_grad() does by default since 2.0): backward then
    // writes each one into a fresh buffer instead of filling 4 bytes per parameter with zeros and adding to them.
    job_.model->zero_grad(/*set_to_none=*/true);
    torch::Tensor logits;
    {
      std::optional<compat::Autocast> autocast;
      if (precision_.bf16) autocast.emplace(job_.device.type(), at::kBFloat16);
      logits = job_.model->forward(x);
    }
    const torch::Tensor loss = F::cross_entropy(logits.to(torch::kFloat), b.labels, ce_);
    t.forward += since(mark);
    mark = Clock::now();
    loss.backward();
    parallel::StepTotals totals = coord_->after_backward(loss, logits, b.labels, check);
    t.backward += since(mark);  // with the gradient all-reduce when data parallel
    mark = Clock::now();
    if (!masks_.empty()) {
      torch::NoGradGuard no_grad;
      for (const auto& [name, m] : masks_)
        if (auto& g = params_[name].mutable_grad(); g.defined()) g.mul_(m);
    }
    optimizer_->step();
    apply_masks(job_.model, masks_);  // momentum and decay cannot revive a pruned weight
    t.optimizer += since(mark);
    return totals;
  }

  // ---- end of an epoch: evaluation (fp32), the guards, the record ----
  EpochRecord finish_epoch(int64_t epoch, const EpochTotals& t, std::chrono::steady_clock::duration took) {
    const double train_secs = std::chrono::duration<double>(took).count();
    EpochRecord rec;
    rec.epoch = epoch;
    rec.lr = t.lr;
    rec.train_loss = t.loss_sum.item<double>() / double(t.seen);
    rec.train_accuracy = 100.0 * double(t.correct.item<int64_t>()) / double(t.seen);
    coord_->before_evaluation(*job_.model);
    const auto t1 = std::chrono::steady_clock::now();
    metrics::EvalResult ev = evaluate_all_ranks(job_.model, *job_.test, p_.eval_batch_size, job_.device);
    rec.eval_images_per_second =
        double(ev.count) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    // The weights can blow up in the last steps of an epoch, or only the BN running statistics (used in eval mode):
    // then only the test loss shows it, and nothing of this epoch is saved. A finite but huge test loss is not
    // refused: after a few steps on little data, running statistics that have not settled give test losses of 1e5
    // in runs that then learn normally.
    if (!std::isfinite(ev.loss))
      throw Error("training diverged: the test loss is " + divergence(ev.loss) + " after epoch " +
                  std::to_string(epoch) + " (training loss " + std::to_string(rec.train_loss) + ", lr " +
                  std::to_string(t.lr) + "); lower optimizer.lr or raise warmup_epochs");
    if (ev.loss > kDivergedLoss)
      job_.log->warn(
          "epoch {}: test loss {:.3g} (training loss {:.4f}): the BN running statistics have not settled, "
          "or the run is diverging",
          epoch, ev.loss, rec.train_loss);
    rec.test_loss = ev.loss;
    rec.test_accuracy = ev.accuracy;
    rec.seconds = train_secs;
    rec.images_per_second = double(t.seen) / train_secs;
    rec.steps = t.steps;
    rec.data_wait_seconds = t.data;
    if (!job_.device.is_cuda()) {
      rec.forward_seconds = t.forward;
      rec.backward_seconds = t.backward;
      rec.optimizer_seconds = t.optimizer;
    }
    rec.cpu_seconds = t.usage.user_seconds + t.usage.system_seconds;
    rec.system_time_share = rec.cpu_seconds > 0 ? t.usage.system_seconds / rec.cpu_seconds : 0.0;
    rec.page_faults = t.usage.minor_faults + t.usage.major_faults;
    if (job_.train->streamed()) {
      const data::StreamStats now = loader_->stream_stats();
      rec.decoded_images = now.images - stream_seen_.images;
      const double decode = now.decode_seconds - stream_seen_.decode_seconds;
      rec.decode_images_per_second = decode > 0 ? double(rec.decoded_images) / decode : 0.0;
      stream_seen_ = now;
    }
    result_.history.push_back(rec);
    job_.log->info("epoch {}/{}  lr {:.5f}  loss {:.4f}  train {:.2f}%  test {:.2f}%  {:.0f} img/s  {:.1f} s", epoch,
                   epochs_, rec.lr, rec.train_loss, rec.train_accuracy, rec.test_accuracy, rec.images_per_second,
                   rec.seconds);
    log_health(rec);
    return rec;
  }

  // "epoch 3: 1210 steps: data 4.1 s, forward 101.3 s, backward 212.0 s, optimizer 20.4 s; CPU 641 s, 6% in the
  // kernel; 459k page faults (379 per step)"; a warning when the epoch is unhealthy.
  void log_health(const EpochRecord& rec) {
    std::string phases = fmt::format("data {:.1f} s", rec.data_wait_seconds);
    if (!job_.device.is_cuda())
      phases += fmt::format(", forward {:.1f} s, backward {:.1f} s, optimizer {:.1f} s", rec.forward_seconds,
                            rec.backward_seconds, rec.optimizer_seconds);
    if (rec.decoded_images > 0)
      phases += fmt::format(" ({} images decoded at {:.0f} img/s)", rec.decoded_images, rec.decode_images_per_second);
    job_.log->info("epoch {}: {} steps: {}; CPU {:.0f} s, {:.0f}% in the kernel; {} page faults ({:.0f} per step)",
                   rec.epoch, rec.steps, phases, rec.cpu_seconds, 100 * rec.system_time_share, rec.page_faults,
                   rec.steps > 0 ? double(rec.page_faults) / double(rec.steps) : 0.0);
    if (std::string why = rec.health_warning(); !why.empty() && coord_->main())
      job_.log->warn("epoch {} was slow: {}", rec.epoch, why);
  }

  // ---- saving ----
  void save(const fs::path& path, int64_t epoch, const EpochRecord& rec) {
    if (!coord_->main()) return;  // the other ranks hold the same weights and optimizer state
    nlohmann::json meta = job_.meta;
    meta["epoch"] = epoch;
    meta["accuracy"] = rec.test_accuracy;
    meta["loss"] = rec.test_loss;
    meta["fingerprint"] = job_.fingerprint;
    meta["state_id"] = new_state_id();
    models::StateDict mask_dict;
    for (const auto& [name, m] : job_.masks) mask_dict.insert(name, m.to(torch::kCPU, torch::kBool));
    models::save_checkpoint(path, job_.model, meta, mask_dict);  // fp32, contiguous
    nlohmann::json extra;
    extra["fingerprint"] = job_.fingerprint;
    extra["checkpoint_state_id"] = meta["state_id"];
    extra["history"] = nlohmann::json::array();
    for (const auto& r : result_.history) extra["history"].push_back(r.to_json());
    models::save_training_state(path, *optimizer_, epoch, extra);
  }

  // Stopped during `epoch`: the last finished epoch goes to the interrupt file unless it is a planned checkpoint.
  void save_interrupted(int64_t epoch) {
    request_stop();  // data parallel: the pipeline then sees the interruption on every rank
    const bool main = coord_->main();
    if (epoch - 1 > resume_.epoch && !result_.history.empty() &&
        std::find(planned_.begin(), planned_.end(), epoch - 1) == planned_.end()) {
      save(job_.interrupt_path, epoch - 1, result_.history.back());
      if (main)
        job_.log->warn("interrupted in epoch {}; saved epoch {} to {}; rerun to continue", epoch, epoch - 1,
                       job_.interrupt_path.string());
    } else if (main) {
      job_.log->warn("interrupted in epoch {}; rerun to continue from the last checkpoint", epoch);
    }
    result_.interrupted = true;
  }

  TrainJob& job_;
  const TrainingOptions p_;
  const int64_t epochs_;
  const std::vector<int64_t> planned_;
  std::unique_ptr<parallel::TrainingCoordinator> coord_;
  TrainPrecision precision_;
  TrainResult result_;
  Resume resume_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  std::map<std::string, torch::Tensor> masks_;
  torch::OrderedDict<std::string, torch::Tensor> params_;
  std::optional<data::Loader> loader_;
  data::StreamStats stream_seen_;  // the loader's figures at the end of the previous epoch
  int64_t steps_ = 0, warmup_ = 0;
  F::CrossEntropyFuncOptions ce_;
};

}  // namespace

TrainResult train(TrainJob& job) { return Trainer(job).run(); }

}  // namespace expctl
