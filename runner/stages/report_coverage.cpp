// report.coverage: model-level test coverage of every row (see report_coverage.h).
#include "runner/stages/report_coverage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "plugins/coverage/deepgauge.h"
#include "plugins/neuron_coverage/neuron_coverage.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/data/registry.h"
#include "runner/models/channel_groups.h"
#include "runner/models/mode_guard.h"
#include "runner/stages/report.h"

namespace expctl {
namespace {

// Forwards every image of `split` (normalised batch by batch) through `model` with `observer`.
void stream(models::Network model, const data::Split& split, int64_t batch, torch::Device device,
            models::ForwardObserver& observer) {
  models::EvalModeGuard eval(*model);
  torch::InferenceMode inference;
  for (int64_t b0 = 0; b0 < split.size(); b0 += batch) {
    const torch::Tensor x = data::normalize(split.pixels(b0, std::min(split.size(), b0 + batch)), split.norm);
    model->forward(x.to(device), &observer);
  }
}

// The loaded model's profile restricted to the channels a pruned model kept.
std::map<std::string, coverage::ChannelStats> restricted(const std::map<std::string, coverage::ChannelStats>& profile,
                                                         const std::map<std::string, torch::Tensor>& at_points) {
  std::map<std::string, coverage::ChannelStats> out = profile;
  for (const auto& [point, keep] : at_points) {
    auto it = out.find(point);
    if (it == out.end()) continue;
    coverage::ChannelStats& s = it->second;
    for (torch::Tensor* t : {&s.sum, &s.sum_squares, &s.low, &s.high, &s.zeros}) *t = t->index_select(0, keep);
    s.channels = keep.size(0);
  }
  return out;
}

}  // namespace

std::map<std::string, torch::Tensor> kept_at_points(const std::vector<models::ChannelGroup>& groups,
                                                    const std::map<std::string, torch::Tensor>& kept,
                                                    const std::map<std::string, int64_t>& widths) {
  std::map<std::string, std::vector<bool>> removed;  // by point: the channels a group of it lost
  for (const auto& g : groups) {
    auto it = kept.find(g.name);
    if (it == kept.end()) continue;
    std::vector<bool> lost(size_t(g.size), true);
    const torch::Tensor k = it->second.to(torch::kCPU, torch::kLong).contiguous();
    for (int64_t i = 0; i < k.size(0); ++i) {
      const int64_t c = k[i].item<int64_t>();
      if (c < 0 || c >= g.size)
        throw Error("report.coverage: group '" + g.name + "' keeps channel " + std::to_string(c) + " of " +
                    std::to_string(g.size));
      lost[size_t(c)] = false;
    }
    for (size_t j = 0; j < g.activation_points.size(); ++j) {
      auto w = widths.find(g.activation_points[j]);
      if (w == widths.end()) continue;
      const int64_t offset = j < g.activation_offsets.size() ? g.activation_offsets[j] : 0;
      if (offset + g.size > w->second)
        throw Error("report.coverage: group '" + g.name + "' does not fit activation '" + w->first + "'");
      auto& r = removed.emplace(w->first, std::vector<bool>(size_t(w->second), false)).first->second;
      for (int64_t c = 0; c < g.size; ++c)
        if (lost[size_t(c)]) r[size_t(offset + c)] = true;
    }
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [point, r] : removed) {
    std::vector<int64_t> keep;
    for (size_t c = 0; c < r.size(); ++c)
      if (!r[c]) keep.push_back(int64_t(c));
    if (keep.size() < r.size()) out[point] = torch::tensor(keep, torch::kLong);
  }
  return out;
}

namespace {

// Both observers see every activation.
class Both : public models::ForwardObserver {
 public:
  Both(models::ForwardObserver& a, models::ForwardObserver& b) : a_(a), b_(b) {}
  void on_activation(const std::string& point, const torch::Tensor& y) override {
    a_.on_activation(point, y);
    b_.on_activation(point, y);
  }

 private:
  models::ForwardObserver &a_, &b_;
};

}  // namespace

nlohmann::json measure_model_coverage(const ScenarioConfig& cfg, const data::Split& test, const ReportOptions& p,
                                      const std::vector<CoverageSubject>& subjects, torch::Device device,
                                      spdlog::logger& log) {
  if (p.coverage.empty() || subjects.empty()) return nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t batch = p.large_batch;
  // The loaded model's profile, on training images (DeepGauge profiles on training data).
  const data::Split train = data::load_dataset(cfg, /*train=*/true);
  const data::Split profile_images =
      data::split_off(train, std::min(p.coverage_profile, train.size()), static_cast<uint64_t>(cfg.run.seed)).first;
  models::Network loaded = subjects.front().model;
  const std::vector<std::string> points = loaded->activation_points();
  coverage::StatsObserver profiler(points);
  stream(loaded, profile_images, batch, device, profiler);
  const std::map<std::string, coverage::ChannelStats> profile = profiler.result();
  std::vector<std::string> measured;  // the points the forward pass reached
  std::map<std::string, int64_t> widths;
  for (const auto& pt : points)
    if (auto it = profile.find(pt); it != profile.end()) {
      measured.push_back(pt);
      widths[pt] = it->second.channels;
    }
  const std::vector<models::ChannelGroup> groups = models::channel_groups(loaded);

  coverage::HitsOptions o;
  o.sections = p.coverage_k;
  o.top_k = p.coverage_top_k;
  nlohmann::json rows = nlohmann::json::array();
  for (const CoverageSubject& s : subjects) {
    const auto profile_kept = restricted(profile, kept_at_points(groups, s.kept, widths));
    coverage::HitsObserver hits(&profile_kept, o, measured);
    neuron_coverage::CoverageObserver nc(p.coverage_threshold, measured);
    Both both(hits, nc);
    try {
      stream(s.model, test, batch, device, both);
    } catch (const Error& e) {
      throw Error(std::string("report.coverage: ") + e.what() +
                  (!s.pruned ? std::string()
                             : " (a pruned model's channels are mapped to the loaded model's through "
                               "prune_metrics.json's kept_channels; rerun the prune stage if an older expctl "
                               "wrote it)"));
    }
    const auto h = hits.result();
    nlohmann::json row = nlohmann::json::object();
    for (const std::string& c : p.coverage) {
      if (c == "nc") {
        double covered = 0, total = 0;
        for (const auto& [pt, pc] : nc.result()) {
          covered += (pc.covered > 0).sum().item<double>();
          total += double(pc.covered.size(0));
        }
        row[c] = total > 0 ? covered / total : 0.0;
      }
      for (const auto k :
           {coverage::Criterion::KMNC, coverage::Criterion::NBC, coverage::Criterion::SNAC, coverage::Criterion::TKNC})
        if (c == coverage::criterion_name(k)) row[c] = coverage::model_coverage(h, k);
    }
    log.info("test coverage: {}", row.dump());
    rows.push_back(row);
  }
  return {{"criteria", p.coverage},
          {"neurons", "channel (spatial mean)"},
          {"activation_points", measured.size()},
          {"profile_images", profile_images.size()},
          {"profile_source", profile_images.source},
          {"test_images", test.size()},
          {"kmnc_k", p.coverage_k},
          {"tknc_k", p.coverage_top_k},
          {"nc_threshold", p.coverage_threshold},
          {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
          {"rows", rows}};
}

}  // namespace expctl
