#include "runner/stages/trainer.h"

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
#include "runner/core/naming.h"
#include "runner/core/pipeline.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"

namespace expctl {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

nlohmann::json EpochRecord::to_json() const {
  return {{"epoch", epoch},
          {"lr", lr},
          {"train_loss", train_loss},
          {"train_accuracy", train_accuracy},
          {"test_loss", test_loss},
          {"test_accuracy", test_accuracy},
          {"seconds", seconds},
          {"images_per_second", images_per_second},
          {"eval_images_per_second", eval_images_per_second}};
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
  return r;
}

torch::Device resolve_device(const std::string& spec) {
  if (std::string why = device_problem(spec); !why.empty()) throw Error("runtime.device: " + why);
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  return torch::Device(spec);
}

torch::Device resolve_device(const std::string& spec, const dist::WorldInfo& world) {
  torch::Device d = resolve_device(spec);
  if (world.world_size > 1 && d.is_cuda() && !d.has_index()) return torch::Device(torch::kCUDA, world.local_rank);
  return d;
}

torch::Device prepare_runtime(const ScenarioConfig& cfg, spdlog::logger& log) {
  const dist::WorldInfo& world = dist::world();
  torch::Device device = resolve_device(cfg.runtime.get_string("device"), world);
  int64_t requested = cfg.runtime.get_int("threads");
  // Processes of one machine share its cores; a launcher that binds each to its own cores (Slurm) has already
  // narrowed what usable_cores() sees.
  const int cores = metrics::usable_cores();
  if (requested == 0 && world.local_world_size > 1 && unsigned(cores) >= std::thread::hardware_concurrency())
    requested = std::max(1, cores / world.local_world_size);
  int threads = metrics::configure_threads(requested);
  at::globalContext().setFlushDenormal(true);
  log.info("device {}, {} CPU threads, LibTorch {}", device.str(), threads, compat::torch_version());
  return device;
}

metrics::EvalResult evaluate_all_ranks(models::ResNet& model, const data::Split& split, int64_t batch_size,
                                       torch::Device device) {
  if (!dist::active() || split.size() == 0) return metrics::evaluate(model, split, batch_size, device);
  const int64_t n = split.size(), w = dist::world_size(), r = dist::rank();
  const int64_t begin = r * n / w, end = (r + 1) * n / w;
  metrics::EvalResult part;
  if (end > begin) {
    data::Split shard = split;
    shard.images = split.images.slice(0, begin, end);
    shard.labels = split.labels.slice(0, begin, end);
    part = metrics::evaluate(model, shard, batch_size, device);
  }
  std::vector<torch::Tensor> sums{
      torch::tensor({part.loss * double(part.count), double(part.correct), double(part.count)},
                    torch::TensorOptions().dtype(torch::kDouble))
          .to(dist::device())};
  dist::all_reduce_sum(sums);
  auto total = sums[0].to(torch::kCPU);
  metrics::EvalResult out;
  out.count = std::llround(total[2].item<double>());
  out.correct = std::llround(total[1].item<double>());
  out.accuracy = 100.0 * double(out.correct) / double(out.count);
  out.loss = total[0].item<double>() / double(out.count);
  return out;
}

void apply_masks(models::ResNet& model, const std::map<std::string, torch::Tensor>& masks) {
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
std::unique_ptr<torch::optim::SGD> make_optimizer(models::ResNet& model, const Params& p) {
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& kv : model->named_parameters()) (kv.value().dim() > 1 ? decay : no_decay).push_back(kv.value());
  auto opts = torch::optim::SGDOptions(p.get_float("optimizer.lr"))
                  .momentum(p.get_float("optimizer.momentum"))
                  .nesterov(p.get_bool("optimizer.nesterov"))
                  .weight_decay(p.get_float("optimizer.weight_decay"));
  auto no_decay_opts = opts;
  no_decay_opts.weight_decay(0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::SGDOptions>(opts));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::SGDOptions>(no_decay_opts));
  return std::make_unique<torch::optim::SGD>(groups, opts);
}

// Learning rate at global step `t` of `total`: linear warm-up, then the schedule down from the peak.
double lr_at(const Params& p, int64_t t, int64_t total, int64_t warmup) {
  const double peak = p.get_float("optimizer.lr");
  if (t < warmup) return peak * double(t + 1) / double(warmup);
  const double q = total > warmup ? double(t - warmup) / double(total - warmup) : 1.0;
  const std::string& s = p.get_string("schedule");
  if (s == "cosine") return peak * 0.5 * (1.0 + std::cos(M_PI * q));
  if (s == "onecycle") return peak * (1.0 - q);
  return peak;
}

// freeze_bn: BatchNorm layers normalise with their running statistics and leave them as they are, while their
// affine weights still learn.
void freeze_batchnorm(models::ResNet& model) {
  for (auto& m : model->modules(/*include_self=*/false))
    if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get()) != nullptr) m->eval();
}

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

// Moves 4-D weights to channels_last: cuDNN's fastest convolution kernels want NHWC.
void to_channels_last(models::ResNet& model) {
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
  if (removed > 0) job.log->info("--force: removed {} checkpoint(s) of the previous run; training from scratch", removed);
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

// Every rank must resume from the same epoch: different answers mean the processes do not see the same files.
void agree_on_resume(const TrainJob& job, const Resume& resume) {
  std::vector<double> epochs = dist::all_gather(double(resume.epoch));
  bool same = true;
  std::string list;
  for (size_t r = 0; r < epochs.size(); ++r) {
    same = same && epochs[r] == epochs[0];
    list += (r ? ", " : "") + std::string("rank ") + std::to_string(r) + ": " +
            (epochs[r] > 0 ? "epoch " + std::to_string(std::llround(epochs[r])) : std::string("none"));
  }
  if (!same)
    throw Error("the data-parallel processes found different checkpoints to resume from (" + list + ", e.g. " +
                job.checkpoint_path(1).parent_path().string() +
                "): the checkpoint and report folders must be on a file system every process sees");
}

class ProgressBar {
 public:
  ProgressBar(int64_t epoch, int64_t epochs, int64_t steps, bool enabled = true)
      : epoch_(epoch),
        epochs_(epochs),
        steps_(steps),
        tty_(enabled && ::isatty(STDERR_FILENO) == 1),
        start_(std::chrono::steady_clock::now()) {}
  void update(int64_t step, double loss, double acc, int64_t images) {
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    if (step + 1 < steps_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? images / secs : 0;
    double eta = step + 1 > 0 ? secs / double(step + 1) * double(steps_ - step - 1) : 0;
    int filled = int(30.0 * double(step + 1) / double(steps_));
    std::fprintf(stderr, "\r  epoch %lld/%lld [%-30s] %lld/%lld loss %.4f acc %5.1f%% %6.0f img/s ETA %4.0fs",
                 (long long)epoch_, (long long)epochs_, std::string(filled, '=').c_str(), (long long)(step + 1),
                 (long long)steps_, loss, acc, rate, eta);
    if (step + 1 == steps_) std::fprintf(stderr, "\r%*s\r", 110, "");
    std::fflush(stderr);
  }

 private:
  int64_t epoch_, epochs_, steps_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_{};
};

}  // namespace

TrainJob make_train_job(const StageContext& ctx, const std::string& stage, models::ResNet model,
                        const data::Split& train, const data::Split& test, torch::Device device,
                        std::function<fs::path(int64_t)> checkpoint_path) {
  const ScenarioConfig& cfg = ctx.config;
  TrainJob job;
  job.model = std::move(model);
  job.train = &train;
  job.test = &test;
  job.params = &ctx.params;
  job.augment = {cfg.dataset.get_int("augment.crop_padding"), cfg.dataset.get_bool("augment.hflip")};
  job.seed = static_cast<uint64_t>(cfg.runtime.get_int("seed"));
  job.device = device;
  job.checkpoint_path = std::move(checkpoint_path);
  job.interrupt_path = ctx.naming.report_dir() / (stage + "_interrupted.pt");
  job.meta = {{"stage", stage}, {"scenario", ctx.naming.scenario_name()}};
  job.fingerprint = ctx.fingerprint;
  job.fresh = ctx.options.force;
  job.log = ctx.log;
  return job;
}

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
  out["resumed_from_epoch"] = result.resumed_from;
  if (dist::active()) out["processes"] = dist::world_size();  // images_per_second counts all of them
  out["peak_memory_mb"] = metrics::peak_memory_mb();
  if (const metrics::CudaMemory gpu = metrics::cuda_peak_memory(device); gpu.known) {
    out["cuda_peak_allocated_mb"] = gpu.peak_allocated_mb;
    out["cuda_peak_reserved_mb"] = gpu.peak_reserved_mb;
  }
  out["history"] = nlohmann::ordered_json::array();
  for (const auto& h : result.history) out["history"].push_back(nlohmann::ordered_json(h.to_json()));
  return out;
}

TrainResult train(TrainJob& job) {
  const Params& p = *job.params;
  const int64_t epochs = p.get_int("epochs");
  const auto planned = checkpoint_epochs(epochs, p.get_int("save_every"));
  const bool cuda = job.device.is_cuda();
  std::string precision = p.get_string("precision");
  if (precision == "auto") precision = cuda ? "bf16" : "fp32";
  if (precision == "bf16" && !cuda) {
    job.log->warn("precision bf16 is used on CUDA only; training in fp32 on the CPU");
    precision = "fp32";
  }
  const bool bf16 = precision == "bf16";
  if (cuda) at::globalContext().setBenchmarkCuDNN(true);
  const bool freeze_bn = p.get_bool("freeze_bn");

  // Data parallel: `ranks` processes share every global batch of batch_size samples; only rank 0 writes files.
  const bool parallel = dist::active();
  const int64_t ranks = parallel ? dist::world_size() : 1;
  const bool main = dist::is_main();
  const int64_t global_batch = p.get_int("batch_size");
  if (global_batch % ranks != 0)
    throw Error(job.meta.value("stage", std::string("training")) + ".batch_size: " + std::to_string(global_batch) +
                " is not divisible by the " + std::to_string(ranks) +
                " data-parallel processes (batch_size is the global batch; each process takes an equal share)");

  TrainResult result;
  // Fresh: every rank skips the search (rank 0 may be removing the files the others would look at).
  if (job.fresh && main) remove_previous_run(job, epochs);
  Resume resume = job.fresh ? Resume{} : find_resume(job, epochs);
  if (parallel && !job.fresh) agree_on_resume(job, resume);
  nlohmann::json extra = nlohmann::json::object();
  std::unique_ptr<torch::optim::SGD> optimizer;
  if (resume.epoch > 0) {
    models::Checkpoint ck;
    job.model = models::load_checkpoint(resume.path, &ck);
    job.model->to(job.device);
    if (cuda) to_channels_last(job.model);
    optimizer = make_optimizer(job.model, p);
    auto state = models::load_training_state(resume.path, *optimizer);
    for (const auto& r : state.extra.value("history", nlohmann::json::array()))
      result.history.push_back(EpochRecord::from_json(r));
    result.resumed_from = resume.epoch;
    job.log->info("resuming from {} (epoch {} of {})", resume.path.string(), resume.epoch, epochs);
  } else {
    job.model->to(job.device);
    if (cuda) to_channels_last(job.model);
    optimizer = make_optimizer(job.model, p);
  }
  std::map<std::string, torch::Tensor> masks;
  for (const auto& [name, m] : job.masks) masks[name] = m.to(job.device, torch::kFloat);
  apply_masks(job.model, masks);
  auto params = job.model->named_parameters();
  std::optional<dist::GradientSync> sync;
  if (parallel) {
    // Every rank starts from rank 0's weights and buffers; identical averaged gradients keep them identical.
    std::vector<torch::Tensor> state = job.model->parameters();
    for (auto& b : job.model->buffers()) state.push_back(b);
    dist::broadcast(state, 0);
    sync.emplace(job.model->parameters(), /*extra_values=*/3);  // loss sum, correct, stop flag
  }

  data::LoaderOptions lo;
  lo.batch_size = global_batch / ranks;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.seed = job.seed;
  lo.augment = job.augment;
  lo.rank = parallel ? dist::rank() : 0;
  lo.world_size = ranks;
  data::Loader loader(*job.train, lo);
  if (loader.num_batches() == 0)
    throw Error("the training split has " + std::to_string(job.train->size()) + " images, fewer than one batch of " +
                std::to_string(global_batch) + "; lower batch_size");
  const int64_t steps = loader.num_batches();
  const int64_t total = epochs * steps;
  const int64_t warmup = std::llround(p.get_float("warmup_epochs") * double(steps));
  auto ce = F::CrossEntropyFuncOptions().label_smoothing(p.get_float("label_smoothing"));

  auto save = [&](const fs::path& path, int64_t epoch, const EpochRecord& rec) {
    if (!main) return;  // the other ranks hold the same weights and optimizer state
    nlohmann::json meta = job.meta;
    meta["epoch"] = epoch;
    meta["accuracy"] = rec.test_accuracy;
    meta["loss"] = rec.test_loss;
    meta["fingerprint"] = job.fingerprint;
    meta["state_id"] = new_state_id();
    models::StateDict mask_dict;
    for (const auto& [name, m] : job.masks) mask_dict.insert(name, m.to(torch::kCPU, torch::kBool));
    models::save_checkpoint(path, job.model, meta, mask_dict);
    nlohmann::json extra;
    extra["fingerprint"] = job.fingerprint;
    extra["checkpoint_state_id"] = meta["state_id"];
    extra["history"] = nlohmann::json::array();
    for (const auto& r : result.history) extra["history"].push_back(r.to_json());
    models::save_training_state(path, *optimizer, epoch, extra);
  };

  bool stop = false;  // data parallel: some rank was asked to stop (all agree, after the same step)
  auto stopping = [&] { return parallel ? stop : stop_requested(); };
  for (int64_t epoch = resume.epoch + 1; epoch <= epochs; ++epoch) {
    job.model->train();
    if (freeze_bn) freeze_batchnorm(job.model);
    loader.set_epoch(epoch - 1);
    ProgressBar bar(epoch, epochs, steps, main);
    auto t0 = std::chrono::steady_clock::now();
    auto loss_sum = torch::zeros({}, torch::TensorOptions().device(job.device).dtype(torch::kDouble));
    auto correct = torch::zeros({}, torch::TensorOptions().device(job.device).dtype(torch::kLong));
    int64_t seen = 0;
    double lr = 0;
    for (int64_t j = 0; j < steps; ++j) {
      if (stopping()) break;
      data::Batch b = loader.batch(j);
      torch::Tensor x = cuda ? b.images.contiguous(at::MemoryFormat::ChannelsLast) : b.images;
      lr = lr_at(p, (epoch - 1) * steps + j, total, warmup);
      set_lr(*optimizer, lr);
      optimizer->zero_grad();
      torch::Tensor logits;
      {
        std::optional<compat::CudaAutocast> autocast;
        if (bf16) autocast.emplace(at::kBFloat16);
        logits = job.model->forward(x);
      }
      torch::Tensor loss = F::cross_entropy(logits.to(torch::kFloat), b.labels, ce);
      loss.backward();
      const int64_t n = b.labels.size(0);
      const bool check = j % 20 == 0 || j + 1 == steps;
      if (parallel) {
        // Gradients averaged; this step's loss sum, hits and stop flags summed over the ranks in the same all-reduce.
        torch::Tensor stats = torch::stack(
            {loss.detach().to(torch::kFloat) * double(n), logits.argmax(1).eq(b.labels).sum().to(torch::kFloat),
             torch::full({}, stop_requested() ? 1.0 : 0.0, torch::TensorOptions().device(job.device))});
        sync->run(stats);
        loss_sum += stats[0].to(torch::kDouble);
        correct += stats[1].round().to(torch::kLong);
        seen += n * ranks;
        if (!cuda || check) stop = stats[2].item<float>() > 0;  // reading it syncs with the device
      }
      if (!masks.empty()) {
        torch::NoGradGuard no_grad;
        for (const auto& [name, m] : masks)
          if (auto& g = params[name].mutable_grad(); g.defined()) g.mul_(m);
      }
      optimizer->step();
      apply_masks(job.model, masks);  // momentum and decay cannot revive a pruned weight
      if (!parallel) {
        loss_sum += loss.detach().to(torch::kDouble) * double(n);
        correct += logits.argmax(1).eq(b.labels).sum();
        seen += n;
      }
      // Checking finiteness syncs with the device: every 20 steps is enough to stop a diverged run early. Data
      // parallel, the sums are global, so every rank sees the same value and stops at the same step.
      if (check) {
        double mean = loss_sum.item<double>() / double(seen);
        if (std::string why = divergence(mean); !why.empty())
          throw Error("training diverged: the loss is " + why + " at epoch " + std::to_string(epoch) + ", step " +
                      std::to_string(j + 1) + " (lr " + std::to_string(lr) + "); lower optimizer.lr or raise warmup_epochs");
        bar.update(j, mean, 100.0 * double(correct.item<int64_t>()) / double(seen), seen);
      }
    }
    if (stopping()) {
      if (parallel) request_stop();  // the pipeline then sees the interruption on every rank
      if (epoch - 1 > resume.epoch && !result.history.empty() &&
          std::find(planned.begin(), planned.end(), epoch - 1) == planned.end()) {
        save(job.interrupt_path, epoch - 1, result.history.back());
        if (main)
          job.log->warn("interrupted in epoch {}; saved epoch {} to {}; rerun to continue", epoch, epoch - 1,
                        job.interrupt_path.string());
      } else if (main) {
        job.log->warn("interrupted in epoch {}; rerun to continue from the last checkpoint", epoch);
      }
      result.interrupted = true;
      break;
    }
    double train_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EpochRecord rec;
    rec.epoch = epoch;
    rec.lr = lr;
    rec.train_loss = loss_sum.item<double>() / double(seen);
    rec.train_accuracy = 100.0 * double(correct.item<int64_t>()) / double(seen);
    if (parallel) {
      // Running statistics differ between ranks (each saw its own shard): rank 0's count, as DDP's broadcast_buffers.
      std::vector<torch::Tensor> buffers = job.model->buffers();
      dist::broadcast(buffers, 0);
    }
    auto t1 = std::chrono::steady_clock::now();
    metrics::EvalResult ev = evaluate_all_ranks(job.model, *job.test, p.get_int("eval_batch_size"), job.device);
    rec.eval_images_per_second =
        double(ev.count) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    // The weights can blow up in the last steps of an epoch, or only the BN running statistics (used in eval mode):
    // then only the test loss shows it, and nothing of this epoch is saved. A finite but huge test loss is not
    // refused: after a few steps on little data, running statistics that have not settled give test losses of 1e5
    // in runs that then learn normally.
    if (!std::isfinite(ev.loss))
      throw Error("training diverged: the test loss is " + divergence(ev.loss) + " after epoch " +
                  std::to_string(epoch) + " (training loss " + std::to_string(rec.train_loss) + ", lr " +
                  std::to_string(lr) + "); lower optimizer.lr or raise warmup_epochs");
    if (ev.loss > kDivergedLoss)
      job.log->warn("epoch {}: test loss {:.3g} (training loss {:.4f}): the BN running statistics have not settled, "
                    "or the run is diverging",
                    epoch, ev.loss, rec.train_loss);
    rec.test_loss = ev.loss;
    rec.test_accuracy = ev.accuracy;
    rec.seconds = train_secs;
    rec.images_per_second = double(seen) / train_secs;
    result.history.push_back(rec);
    job.log->info("epoch {}/{}  lr {:.5f}  loss {:.4f}  train {:.2f}%  test {:.2f}%  {:.0f} img/s  {:.1f} s", epoch,
                  epochs, rec.lr, rec.train_loss, rec.train_accuracy, rec.test_accuracy, rec.images_per_second,
                  rec.seconds);
    if (std::find(planned.begin(), planned.end(), epoch) != planned.end()) {
      save(job.checkpoint_path(epoch), epoch, rec);
      job.log->info("saved {}", job.checkpoint_path(epoch).string());
    }
  }
  if (!result.interrupted && main) {
    std::error_code ec;
    fs::remove(job.interrupt_path, ec);
    fs::remove(models::training_state_path(job.interrupt_path), ec);
  }
  for (int64_t e : planned)
    if (fs::exists(job.checkpoint_path(e))) result.checkpoints.push_back(job.checkpoint_path(e));
  return result;
}

}  // namespace expctl
