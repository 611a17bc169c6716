// DeepGauge's criteria: hits against a profile, per neuron, streamed (see deepgauge.h).
#include "plugins/coverage/deepgauge.h"

#include <algorithm>

#include "runner/core/error.h"

namespace expctl::coverage {

std::string criterion_name(Criterion c) {
  switch (c) {
    case Criterion::KMNC:
      return "kmnc";
    case Criterion::NBC:
      return "nbc";
    case Criterion::SNAC:
      return "snac";
    default:
      return "tknc";
  }
}

torch::Tensor PointHits::neuron_scores(Criterion c) const {
  if (c != Criterion::TKNC && !profiled)
    throw Error("coverage: " + criterion_name(c) + " needs the neurons' profiled ranges, and none was measured");
  if (images == 0) return torch::zeros_like(top);
  switch (c) {
    case Criterion::KMNC:
      return section.sum(1).to(torch::kDouble) / double(sections);
    case Criterion::NBC:
      return (below + above) / double(images);
    case Criterion::SNAC:
      return above / double(images);
    default:
      return top / double(images);
  }
}

torch::Tensor PointHits::channel_scores(Criterion c) const { return neuron_scores(c).view({channels, -1}).mean(1); }

torch::Tensor PointHits::channel_means() const {
  return images ? sum.view({channels, -1}).mean(1) / double(images) : torch::zeros({channels}, torch::kDouble);
}

HitsObserver::HitsObserver(const std::map<std::string, ChannelStats>* profile, HitsOptions options,
                           const std::vector<std::string>& points)
    : options_(options) {
  if (options_.sections < 1) throw Error("coverage: k (sections) must be at least 1");
  if (options_.top_k < 1) throw Error("coverage: k (top) must be at least 1");
  for (const auto& p : points) {
    const ChannelStats* prof = nullptr;
    if (profile) {
      auto it = profile->find(p);
      if (it == profile->end()) throw Error("coverage: activation '" + p + "' has no profile");
      prof = &it->second;
    }
    profile_.emplace(p, prof);
  }
}

void HitsObserver::on_activation(const std::string& point, const torch::Tensor& y) {
  auto pit = profile_.find(point);
  if (pit == profile_.end()) return;
  if (y.dim() < 2) throw Error("coverage: activation '" + point + "' has no channel dimension");
  const torch::Tensor v = neuron_values(y, options_.neurons);  // [N, M]
  const int64_t n = v.size(0), m = v.size(1), k = options_.sections;
  const ChannelStats* prof = pit->second;
  if (prof && (prof->low.size(0) != m || prof->channels != y.size(1)))
    throw Error("coverage: activation '" + point + "' has " + std::to_string(m) + " neurons (" +
                std::to_string(y.size(1)) + " channels) but its profile has " + std::to_string(prof->low.size(0)) +
                " (" + std::to_string(prof->channels) + " channels)");
  auto it = acc_.find(point);
  if (it == acc_.end()) {
    Acc a;
    PointHits& h = a.hits;
    h.channels = y.size(1);
    h.sections = k;
    h.profiled = prof != nullptr;
    if (prof) {
      a.low = prof->low.to(v.device());
      a.high = prof->high.to(v.device());
      h.section = torch::zeros({m, k}, v.options().dtype(torch::kBool));
      h.below = torch::zeros({m}, v.options());
      h.above = torch::zeros({m}, v.options());
    }
    h.top = torch::zeros({m}, v.options());
    h.sum = torch::zeros({m}, v.options());
    it = acc_.emplace(point, a).first;
  }
  Acc& a = it->second;
  PointHits& h = a.hits;
  if (h.sum.size(0) != m) throw Error("coverage: activation '" + point + "' changed its shape between batches");
  h.images += n;
  h.sum += v.sum(0);
  // TKNC: the k highest values of the point per input; a stable descending sort ranks the lower index first among
  // equal values.
  if (options_.top_k >= m) {
    h.top += double(n);
  } else {
    const torch::Tensor order = std::get<1>(torch::sort(v, /*stable=*/true, /*dim=*/1, /*descending=*/true));
    const torch::Tensor chosen = order.slice(1, 0, options_.top_k).reshape({-1});
    h.top.index_add_(0, chosen, torch::ones({chosen.size(0)}, v.options()));
  }
  if (!prof) return;
  const torch::Tensor low = a.low.unsqueeze(0), high = a.high.unsqueeze(0);
  h.below += (v < low).sum(0).to(torch::kDouble);
  h.above += (v > high).sum(0).to(torch::kDouble);
  // KMNC: section j = min(k − 1, ⌊k·(v − low)/(high − low)⌋) for v in [low, high] of a range wider than a point.
  const torch::Tensor width = high - low;
  const torch::Tensor inside = (v >= low) & (v <= high) & (width > 0);
  const torch::Tensor j =
      torch::floor((v - low) * double(k) / torch::where(width > 0, width, torch::ones_like(width))).clamp(0, k - 1);
  const torch::Tensor flat_index =
      torch::arange(m, v.options().dtype(torch::kLong)).unsqueeze(0) * k + j.to(torch::kLong);
  h.section.view({-1}).index_put_({flat_index.masked_select(inside)}, true);
}

std::map<std::string, PointHits> HitsObserver::result() const {
  std::map<std::string, PointHits> out;
  for (const auto& [point, a] : acc_) {
    PointHits h = a.hits;
    for (torch::Tensor* t : {&h.section, &h.below, &h.above, &h.top, &h.sum})
      if (t->defined()) *t = t->to(torch::kCPU).clone();
    out.emplace(point, h);
  }
  return out;
}

std::map<std::string, PointHits> measure_hits(models::Network model, const torch::Tensor& images, int64_t batch_size,
                                              const std::map<std::string, ChannelStats>* profile, HitsOptions options,
                                              const std::vector<std::string>& points, const std::string& who) {
  std::map<std::string, PointHits> hits;
  try {
    HitsObserver observer(profile, options, points);
    observe(model, images, batch_size, observer, who);
    hits = observer.result();
  } catch (const Error& e) {
    const std::string what = e.what();
    throw Error(what.rfind(who + ": ", 0) == 0 ? what : who + ": " + what);
  }
  require_reached(hits, points, who);
  return hits;
}

double model_coverage(const std::map<std::string, PointHits>& hits, Criterion c) {
  double hit = 0, total = 0;
  for (const auto& [point, h] : hits) {
    if (c != Criterion::TKNC && !h.profiled)
      throw Error("coverage: " + criterion_name(c) + " needs the neurons' profiled ranges, and none was measured");
    const double m = double(h.top.size(0));
    switch (c) {
      case Criterion::KMNC:
        hit += h.section.sum().item<double>();
        total += m * double(h.sections);
        break;
      case Criterion::NBC:
        hit += (h.below > 0).sum().item<double>() + (h.above > 0).sum().item<double>();
        total += 2 * m;
        break;
      case Criterion::SNAC:
        hit += (h.above > 0).sum().item<double>();
        total += m;
        break;
      case Criterion::TKNC:
        hit += (h.top > 0).sum().item<double>();
        total += m;
        break;
    }
  }
  return total > 0 ? hit / total : 0.0;
}

}  // namespace expctl::coverage
