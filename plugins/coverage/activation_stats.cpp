// One pass of activation statistics per channel (see activation_stats.h).
#include "plugins/coverage/activation_stats.h"

#include <algorithm>
#include <limits>

#include "runner/core/error.h"
#include "runner/models/mode_guard.h"

namespace expctl::coverage {

torch::Tensor ChannelStats::mean() const { return images ? sum / double(images) : torch::zeros_like(sum); }

torch::Tensor ChannelStats::std() const {
  if (!images) return torch::zeros_like(sum);
  const torch::Tensor m = mean();
  return (sum_squares / double(images) - m * m).clamp_min(0).sqrt();
}

torch::Tensor ChannelStats::zero_fraction() const {
  return images ? zeros / double(images * positions) : torch::zeros_like(zeros);
}

torch::Tensor neuron_values(const torch::Tensor& y, Neurons neurons) {
  const torch::Tensor flat = y.detach().reshape({y.size(0), y.size(1), -1}).to(torch::kDouble);
  return neurons == Neurons::Channels ? flat.mean(2) : flat.reshape({y.size(0), -1});
}

StatsObserver::StatsObserver(const std::vector<std::string>& points, Neurons neurons)
    : points_(points), neurons_(neurons) {}

void StatsObserver::on_activation(const std::string& point, const torch::Tensor& y) {
  if (std::find(points_.begin(), points_.end(), point) == points_.end()) return;
  if (y.dim() < 2) throw Error("activation statistics: activation '" + point + "' has no channel dimension");
  const int64_t n = y.size(0), c = y.size(1);
  const torch::Tensor flat = y.detach().reshape({n, c, -1});
  const torch::Tensor a = neuron_values(y, neurons_);  // [N, M]: each neuron's value per image
  const torch::Tensor zeros = flat.eq(0).sum(torch::IntArrayRef{0, 2}).to(torch::kDouble);
  auto it = acc_.find(point);
  if (it == acc_.end()) {  // empty statistics: the update below is the same for every batch
    ChannelStats s;
    s.positions = flat.size(2);
    s.channels = c;
    const int64_t m = a.size(1);
    s.sum = torch::zeros({m}, a.options());
    s.sum_squares = torch::zeros({m}, a.options());
    s.low = torch::full({m}, std::numeric_limits<double>::infinity(), a.options());
    s.high = torch::full({m}, -std::numeric_limits<double>::infinity(), a.options());
    s.zeros = torch::zeros({c}, a.options());
    it = acc_.emplace(point, s).first;
  }
  ChannelStats& s = it->second;
  if (s.channels != c || s.positions != flat.size(2))
    throw Error("activation statistics: activation '" + point + "' changed its shape between batches");
  s.images += n;
  s.sum += a.sum(0);
  s.sum_squares += (a * a).sum(0);
  s.low = torch::minimum(s.low, std::get<0>(a.min(0)));
  s.high = torch::maximum(s.high, std::get<0>(a.max(0)));
  s.zeros += zeros;
}

std::map<std::string, ChannelStats> StatsObserver::result() const {
  std::map<std::string, ChannelStats> out;
  for (const auto& [point, s] : acc_) {
    ChannelStats c = s;
    for (torch::Tensor* t : {&c.sum, &c.sum_squares, &c.low, &c.high, &c.zeros}) *t = t->to(torch::kCPU);
    out.emplace(point, c);
  }
  return out;
}

void observe(models::Network model, const torch::Tensor& images, int64_t batch_size, models::ForwardObserver& observer,
             const std::string& who) {
  if (!images.defined() || images.dim() != 4 || images.size(0) == 0)
    throw Error(who + ": calibration images must be a non-empty float tensor [N, C, H, W]");
  if (!images.is_floating_point())
    throw Error(who + ": calibration images must be normalised floats, got " +
                std::string(c10::toString(images.scalar_type())));
  if (batch_size < 1) throw Error(who + ": calibration batch size must be at least 1");
  models::EvalModeGuard eval(*model);
  torch::InferenceMode inference;
  const torch::Device device = model->device();
  const int64_t n = images.size(0);
  for (int64_t b0 = 0; b0 < n; b0 += batch_size)
    model->forward(images.slice(0, b0, std::min(n, b0 + batch_size)).to(device), &observer);
}

std::map<std::string, ChannelStats> measure_stats(models::Network model, const torch::Tensor& images,
                                                  int64_t batch_size, const std::vector<std::string>& points,
                                                  const std::string& who, Neurons neurons) {
  StatsObserver observer(points, neurons);
  observe(model, images, batch_size, observer, who);
  std::map<std::string, ChannelStats> stats = observer.result();
  require_reached(stats, points, who);
  return stats;
}

}  // namespace expctl::coverage
