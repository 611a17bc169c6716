// taylor: first-order Taylor expansion of the loss around each channel's activation (Molchanov et al., ICLR 2017).
// See baselines.h.
#include <algorithm>
#include <set>

#include "plugins/baselines/baselines.h"
#include "runner/core/error.h"
#include "runner/core/registry.h"
#include "runner/models/mode_guard.h"

namespace expctl::baselines {
namespace {

const std::string kWho = "taylor";

// Keeps the activations of the watched points of one forward pass, with their gradients retained.
class KeepActivations : public models::ForwardObserver {
 public:
  explicit KeepActivations(const std::set<std::string>& points) : points_(points) {}
  void on_activation(const std::string& point, const torch::Tensor& y) override {
    if (!points_.count(point)) return;
    if (y.dim() < 2) throw Error(kWho + ": activation '" + point + "' has no channel dimension");
    torch::Tensor kept = y;
    kept.retain_grad();
    kept_[point] = kept;
  }
  std::map<std::string, torch::Tensor>& kept() { return kept_; }

 private:
  std::set<std::string> points_;
  std::map<std::string, torch::Tensor> kept_;
};

// Switches off requires_grad of every parameter and restores it on every exit path.
class NoParameterGrads {
 public:
  explicit NoParameterGrads(models::Network model) : model_(model) {
    for (auto& p : model_->parameters()) {
      flags_.push_back(p.requires_grad());
      p.requires_grad_(false);
    }
  }
  ~NoParameterGrads() {
    size_t i = 0;
    for (auto& p : model_->parameters()) p.requires_grad_(flags_[i++]);
  }
  NoParameterGrads(const NoParameterGrads&) = delete;
  NoParameterGrads& operator=(const NoParameterGrads&) = delete;

 private:
  models::Network model_;
  std::vector<bool> flags_;
};

}  // namespace

std::map<std::string, torch::Tensor> taylor_scores(models::Network model, const torch::Tensor& images,
                                                   const torch::Tensor& labels, int64_t batch_size,
                                                   const std::vector<std::string>& points) {
  if (!images.defined() || images.dim() != 4 || images.size(0) == 0 || !images.is_floating_point())
    throw Error(kWho + ": calibration images must be a non-empty float tensor [N, C, H, W]");
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != images.size(0))
    throw Error(kWho + ": needs one label per calibration image (" + std::to_string(images.size(0)) + " images, " +
                (labels.defined() ? std::to_string(labels.numel()) : std::string("no")) + " labels)");
  if (batch_size < 1) throw Error(kWho + ": calibration batch size must be at least 1");
  const std::set<std::string> watched(points.begin(), points.end());
  std::map<std::string, torch::Tensor> sums;  // double [C] on the model's device
  models::EvalModeGuard eval(*model);
  NoParameterGrads no_parameter_grads(model);
  torch::AutoGradMode grad(true);
  const torch::Device device = model->device();
  const int64_t n = images.size(0);
  for (int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const int64_t b1 = std::min(n, b0 + batch_size);
    // The input carries the gradient: the parameters do not need one, so backward computes activation gradients
    // only and leaves the model's .grad fields alone.
    const torch::Tensor x = images.slice(0, b0, b1).to(device).detach().requires_grad_(true);
    KeepActivations keep(watched);
    const torch::Tensor logits = model->forward(x, &keep);
    // Summed, not averaged: each image's gradient is then the gradient of its own loss, whatever the batch size.
    torch::nn::functional::cross_entropy(
        logits, labels.slice(0, b0, b1).to(device, torch::kLong),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
        .backward();
    for (auto& [point, a] : keep.kept()) {
      if (!a.grad().defined()) throw Error(kWho + ": no gradient reached activation '" + point + "'");
      // Per image and channel: |mean over positions of a * dL/da| (the paper's criterion), then summed over images.
      const torch::Tensor per_image =
          (a.detach() * a.grad()).reshape({a.size(0), a.size(1), -1}).to(torch::kDouble).mean(2).abs().sum(0);
      auto it = sums.find(point);
      if (it == sums.end()) {
        sums.emplace(point, per_image);
      } else if (it->second.size(0) != per_image.size(0)) {
        throw Error(kWho + ": activation '" + point + "' changed its channel count between batches");
      } else {
        it->second += per_image;
      }
    }
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : points) {
    auto it = sums.find(p);
    if (it == sums.end()) throw Error(kWho + ": activation point '" + p + "' was never reached by the forward pass");
    out[p] = it->second.to(torch::kCPU) / static_cast<double>(n);
  }
  return out;
}

namespace {

PrunerEntry entry() {
  return baseline_entry(
      "taylor", "TY",
      "structured: remove the channels whose first-order Taylor estimate |activation x gradient| of the loss change "
      "is smallest on calibration images (Molchanov et al. 2017)",
      512, "their loss gradients are measured",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        const auto per_point =
            taylor_scores(r.model, r.calibration, r.calibration_labels, r.batch_size, activation_points(groups));
        return scores_by_group(groups, per_point, kWho);
      },
      [](const Params&) { return std::string("Taylor"); });
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::baselines
