// Wanda pruner: |W| * ||X||_2 scores, unstructured / N:M masks or structured channel plans. See wanda.h.
#include "plugins/wanda/wanda.h"
#include "plugins/channel_selection.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "runner/core/compat.h"
#include "runner/core/error.h"
#include "runner/core/options_binder.h"
#include "runner/models/mode_guard.h"

namespace expctl::wanda {
namespace {

using Json = nlohmann::ordered_json;

/// A Conv2d or Linear of the model: its live weight (aliases the parameter) and, for a conv, its window.
struct LayerRef {
  torch::Tensor weight;
  bool conv = false;
  ConvGeometry geometry;
};

/// Thrown by the observer once the last layer of interest has seen its input: the rest of the forward pass
/// would only cost time. Not an std::exception, so nothing else can swallow it by accident.
struct StopForward {};

int64_t pair_first(const torch::ExpandingArray<2>& a) { return (*a)[0]; }
int64_t pair_second(const torch::ExpandingArray<2>& a) { return (*a)[1]; }

std::map<std::string, LayerRef> find_layers(models::Network model) {
  std::map<std::string, LayerRef> out;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    if (auto* conv = item.value()->as<torch::nn::Conv2dImpl>()) {
      const auto& o = conv->options;
      // The norms below assume a plain zero-padded, dense convolution; anything else would silently get wrong
      // scores, so refuse it by name.
      if (pair_first(o.dilation()) != 1 || pair_second(o.dilation()) != 1)
        throw Error("wanda: layer '" + name + "': only dilation 1 is supported");
      if (!compat::variant_get_if<torch::enumtype::kZeros>(o.padding_mode()))
        throw Error("wanda: layer '" + name + "': only zero padding is supported");
      ConvGeometry g;
      g.kernel_h = pair_first(o.kernel_size());
      g.kernel_w = pair_second(o.kernel_size());
      g.stride_h = pair_first(o.stride());
      g.stride_w = pair_second(o.stride());
      g.groups = o.groups();
      if (const auto* pad = compat::variant_get_if<torch::ExpandingArray<2>>(o.padding())) {
        g.pad_h = pair_first(*pad);
        g.pad_w = pair_second(*pad);
      } else if (!compat::variant_get_if<torch::enumtype::kValid>(o.padding())) {
        throw Error("wanda: layer '" + name + "': padding 'same' is not supported");
      }
      out[name] = LayerRef{conv->weight, true, g};
    } else if (auto* linear = item.value()->as<torch::nn::LinearImpl>()) {
      out[name] = LayerRef{linear->weight, false, {}};
    }
  }
  return out;
}

/// Accumulates the squared input norms of some layers over calibration batches, keeping nothing else.
class NormObserver : public models::ForwardObserver {
 public:
  NormObserver(const std::map<std::string, LayerRef>& layers, const std::set<std::string>& wanted,
               std::string stop_after)
      : layers_(layers), stop_after_(std::move(stop_after)) {
    for (const auto& name : wanted) sums_[name] = torch::Tensor();
  }

  void on_layer_input(const std::string& layer, const torch::Tensor& x) override {
    auto it = sums_.find(layer);
    if (it == sums_.end()) return;
    const LayerRef& ref = layers_.at(layer);
    torch::Tensor batch = ref.conv ? conv_input_sq_norms(x, ref.geometry) : linear_input_sq_norms(x);
    it->second = it->second.defined() ? it->second.add_(batch) : batch;
    if (layer == stop_after_) throw StopForward{};
  }

  std::map<std::string, torch::Tensor>& sums() { return sums_; }

 private:
  const std::map<std::string, LayerRef>& layers_;
  std::string stop_after_;
  std::map<std::string, torch::Tensor> sums_;
};

int64_t g_cache_limit = int64_t(1) << 30;

/// The calibration images in batches of request.batch_size, on the model's device.
std::vector<torch::Tensor> calibration_batches(models::Network model, const PruneRequest& request) {
  std::vector<torch::Tensor> out;
  const int64_t n = request.calibration.size(0);
  const int64_t batch = std::max<int64_t>(1, request.batch_size);
  for (int64_t begin = 0; begin < n; begin += batch)
    out.push_back(request.calibration.slice(0, begin, std::min(n, begin + batch)).to(model->device()));
  return out;
}

/// Squared input norms of `wanted` layers over `inputs`, each run through `run` (the model as it is now, earlier
/// layers already zeroed). `stop_after` is the last of them in forward order: the pass stops there.
std::map<std::string, torch::Tensor> observe_norms(
    const std::vector<torch::Tensor>& inputs, const std::map<std::string, LayerRef>& layers,
    const std::set<std::string>& wanted, const std::string& stop_after,
    const std::function<void(const torch::Tensor&, models::ForwardObserver*)>& run) {
  NormObserver observer(layers, wanted, stop_after);
  for (const torch::Tensor& x : inputs) {
    try {
      run(x, &observer);
    } catch (const StopForward&) {
    }
  }
  for (const auto& [name, sum] : observer.sums())
    if (!sum.defined()) throw Error("wanda: layer '" + name + "' received no input during the calibration forward");
  return std::move(observer.sums());
}

/// observe_norms() through the whole model, from the calibration images.
std::map<std::string, torch::Tensor> calibrate(models::Network model, const PruneRequest& request,
                                               const std::map<std::string, LayerRef>& layers,
                                               const std::set<std::string>& wanted, const std::string& stop_after) {
  return observe_norms(calibration_batches(model, request), layers, wanted, stop_after,
                       [&](const torch::Tensor& x, models::ForwardObserver* o) { model->forward(x, o); });
}

/// The sequential rule (each layer calibrated on the model with every earlier layer already pruned), walked
/// segment by segment (stem, blocks, head): the calibration activations at the current segment's input are kept,
/// so a layer's norms cost a pass through its own segment only, not through everything before it. That is about
/// two forward passes in all, where restarting from the images for every layer costs one per layer's depth.
/// The kept activations take the calibration set times the largest segment input; above kMaxCachedBytes the
/// pass restarts from the images for every layer instead (same result, more time); see
/// set_calibration_cache_limit().
class SequentialCalibration {
 public:

  SequentialCalibration(models::Network model, const PruneRequest& request,
                        const std::map<std::string, LayerRef>& layers)
      : model_(model), request_(request), layers_(layers) {
    acts_ = calibration_batches(model, request);
    // One image through every segment tells the largest activation per image.
    int64_t per_image = 0;
    torch::Tensor x = acts_.front().slice(0, 0, 1);
    for (int64_t i = 0; i < model->num_segments(); ++i) {
      per_image = std::max(per_image, int64_t(x.nbytes()));
      x = model->forward_segment(i, x);
    }
    cached_ = per_image * request.calibration.size(0) <= g_cache_limit;
  }

  bool cached() const { return cached_; }

  /// The squared input norms of `layer`, a layer of the current segment, with the model as it is now.
  torch::Tensor norms(const std::string& layer) {
    if (!cached_) return calibrate(model_, request_, layers_, {layer}, layer).at(layer);
    const int64_t seg = segment_;
    return observe_norms(
               acts_, layers_, {layer}, layer,
               [&](const torch::Tensor& x, models::ForwardObserver* o) { model_->forward_segment(seg, x, o); })
        .at(layer);
  }

  /// Moves on to the next segment: its input is the current one's output with the current (pruned) weights.
  void advance() {
    if (cached_ && segment_ + 1 < model_->num_segments())
      for (torch::Tensor& x : acts_) x = model_->forward_segment(segment_, x);
    ++segment_;
  }

 private:
  models::Network model_;
  const PruneRequest& request_;
  const std::map<std::string, LayerRef>& layers_;
  std::vector<torch::Tensor> acts_;
  int64_t segment_ = 0;
  bool cached_ = false;
};

/// Removes the `k` lowest entries of every row of `scores2d` [R, L] (stable: lower index first among ties).
torch::Tensor remove_lowest(const torch::Tensor& scores2d, int64_t k) {
  torch::Tensor mask = torch::ones(scores2d.sizes(), scores2d.options().dtype(torch::kBool));
  if (k <= 0) return mask;
  const torch::Tensor order = std::get<1>(scores2d.sort(/*stable=*/true, /*dim=*/1, /*descending=*/false));
  return mask.scatter_(1, order.slice(1, 0, k), false);
}

std::string layer_inputs_name(const LayerRef& ref) { return ref.conv ? "in_channels" : "in_features"; }

Json count_json(int64_t weights, int64_t zeros) {
  Json j;
  j["weights"] = weights;
  j["zeros"] = zeros;
  j["sparsity"] = weights ? static_cast<double>(zeros) / static_cast<double>(weights) : 0.0;
  return j;
}

Json settings_json(const Options& o, const PruneRequest& request, bool calibrated) {
  Json s;
  s["pruner"] = "wanda";
  s["mode"] = o.mode_name();
  s["score"] = o.magnitude ? "magnitude" : "wanda";
  if (o.mode == Options::Mode::NM) {
    s["n"] = o.n;
    s["m"] = o.m;
    s["sparsity"] = "ignored in n:m mode (n of every m zeroed)";
  } else {
    s["sparsity"] = o.sparsity;
  }
  s["exclude"] = o.exclude;
  s["calibration_images"] = calibrated ? request.calibration.size(0) : 0;
  return s;
}

// Layer names, and in structured mode channel-group names too.
void check_exclude(const Options& o, const std::vector<std::string>& layers, const PruneRequest& request) {
  std::vector<std::string> groups;
  if (o.mode == Options::Mode::Structured)
    for (const auto& g : request.groups.empty() ? models::channel_groups(request.model) : request.groups)
      groups.push_back(g.name);
  for (const auto& name : o.exclude)
    if (std::find(layers.begin(), layers.end(), name) == layers.end() &&
        std::find(groups.begin(), groups.end(), name) == groups.end())
      throw Error("wanda: exclude: unknown layer '" + name + "' (layers: " + join(layers) +
                  (groups.empty() ? std::string() : "; groups: " + join(groups)) + ")");
}

void require_calibration(const PruneRequest& request) {
  if (!request.calibration.defined() || request.calibration.dim() < 1 || request.calibration.size(0) == 0)
    throw Error("wanda: score 'wanda' needs calibration images, but the request has none");
}

PrunePlan prune_masks(PruneRequest& request, const Options& o, const std::vector<std::string>& order,
                      std::map<std::string, LayerRef>& layers) {
  PrunePlan plan;
  const bool nm = o.mode == Options::Mode::NM;
  const std::set<std::string> excluded(o.exclude.begin(), o.exclude.end());
  if (!o.magnitude) require_calibration(request);
  plan.stats["settings"] = settings_json(o, request, !o.magnitude);
  Json layer_stats = Json::object();
  int64_t pruned_weights = 0, pruned_zeros = 0;
  std::optional<SequentialCalibration> calibration;
  if (!o.magnitude) {
    calibration.emplace(request.model, request, layers);
    plan.stats["settings"]["calibration_activations"] =
        calibration->cached() ? "kept between segments"
                              : "recomputed from the images for every layer (too large to keep)";
  }
  std::vector<std::string> walked;  // the layers in segment order: must be `order`
  for (int64_t segment = 0; segment < request.model->num_segments(); ++segment) {
    if (segment > 0 && calibration) calibration->advance();
    for (const auto& name : request.model->segment_layers(segment)) {
      walked.push_back(name);
      LayerRef& ref = layers.at(name);
      Json ls;
      ls["mode"] = o.mode_name();
      if (excluded.count(name)) {
        ls["skipped"] = "excluded";
        layer_stats[name] = ls;
        continue;
      }
      if (nm && ref.weight.size(1) % o.m != 0) {
        ls["skipped"] = layer_inputs_name(ref) + " " + std::to_string(ref.weight.size(1)) +
                        " is not a multiple of m = " + std::to_string(o.m);
        layer_stats[name] = ls;
        continue;
      }
      // Sequential rule: this layer's norms come from a forward pass through the already-zeroed earlier layers.
      torch::Tensor sq;
      if (calibration) sq = calibration->norms(name);
      const torch::Tensor scores = wanda_scores(ref.weight, sq, ref.conv ? ref.geometry.groups : 1);
      const torch::Tensor mask = nm ? nm_mask(scores, o.n, o.m) : row_mask(scores, o.sparsity);
      ref.weight.masked_fill_(mask.logical_not(), 0);
      plan.masks[name + ".weight"] = mask;
      const int64_t zeros = (ref.weight == 0).sum().item<int64_t>();
      ls.update(count_json(ref.weight.numel(), zeros));
      if (nm) ls["pattern"] = std::to_string(o.n) + ":" + std::to_string(o.m);
      layer_stats[name] = ls;
      pruned_weights += ref.weight.numel();
      pruned_zeros += zeros;
    }
  }
  if (walked != order) throw Error("wanda: the model's segments do not list its layers in forward order");
  int64_t all_weights = 0, all_zeros = 0;
  for (const auto& name : order) {
    all_weights += layers.at(name).weight.numel();
    all_zeros += (layers.at(name).weight == 0).sum().item<int64_t>();
  }
  plan.stats["layers"] = layer_stats;
  plan.stats["overall"]["pruned_layers"] = count_json(pruned_weights, pruned_zeros);
  plan.stats["overall"]["all_layers"] = count_json(all_weights, all_zeros);
  return plan;
}

// Which channel groups may shrink (the others with the reason they may not), and which layers' input norms the
// prunable ones need.
struct StructuredScope {
  std::map<std::string, std::string> skip_reason;
  std::set<std::string> needed;
};

StructuredScope structured_scope(const std::vector<models::ChannelGroup>& groups,
                                 const std::map<std::string, LayerRef>& layers, const std::set<std::string>& excluded) {
  StructuredScope out;
  for (const auto& g : groups) {
    for (const auto* list : {&g.producers, &g.consumers})
      for (const auto& layer : *list)
        if (!layers.count(layer))
          throw Error("wanda: channel group '" + g.name + "' names layer '" + layer + "', which the model lacks");
    // Excluding a layer protects its outputs: the groups it produces. Its inputs may still shrink (an excluded
    // classifier keeps its classes and loses input features), as with Torch-Pruning's ignored_layers.
    auto& skip = out.skip_reason;
    if (excluded.count(g.name)) skip[g.name] = "excluded";
    for (const auto& layer : g.producers)
      if (excluded.count(layer) && !skip.count(g.name)) skip[g.name] = "produced by excluded layer " + layer;
    if (g.consumers.empty() && !skip.count(g.name)) skip[g.name] = "no consumer layer to score it";
    if (!skip.count(g.name)) out.needed.insert(g.consumers.begin(), g.consumers.end());
  }
  return out;
}

// The score of each channel of group `g`: the Wanda scores of every weight reading it, over all its consumers.
torch::Tensor group_channel_scores(const models::ChannelGroup& g, const std::map<std::string, LayerRef>& layers,
                                   const std::map<std::string, torch::Tensor>& norms, const Options& o) {
  torch::Tensor channel_scores;
  for (const auto& consumer : g.consumers) {
    const LayerRef& ref = layers.at(consumer);
    const torch::Tensor s = wanda_scores(ref.weight, o.magnitude ? torch::Tensor() : norms.at(consumer),
                                         ref.conv ? ref.geometry.groups : 1);
    // Every weight reading channel c, over output rows and kernel positions (and, after a flatten, the H×W
    // features of the channel; after a concatenation, only this group's slice of the inputs).
    const auto member = std::find_if(g.members.begin(), g.members.end(), [&](const models::GroupMember& m) {
      return m.tensor == consumer + ".weight" && m.dim == 1;
    });
    if (member == g.members.end())
      throw Error("wanda: channel group '" + g.name + "' lists consumer '" + consumer + "' but not its weight");
    torch::Tensor per_channel;
    try {
      per_channel = models::member_rows(s, *member, g.size).sum(1);
    } catch (const Error& e) {
      throw Error("wanda: channel group '" + g.name + "': consumer " + e.what());
    }
    channel_scores = channel_scores.defined() ? channel_scores + per_channel : per_channel;
  }
  return channel_scores;
}

// Channels kept on each layer's output and input side once the groups are pruned, and the layers of pruned groups.
struct KeptChannels {
  std::map<std::string, int64_t> out, in;
  std::set<std::string> touched;
};

// Per-layer and overall weights kept by the plan, into plan.stats ("layers", "overall").
void structured_layer_stats(const std::vector<std::string>& order, const std::map<std::string, LayerRef>& layers,
                            const std::set<std::string>& excluded, const KeptChannels& k, PrunePlan& plan) {
  Json layer_stats = Json::object();
  int64_t pruned_weights = 0, pruned_kept = 0, all_weights = 0, all_kept = 0;
  for (const auto& name : order) {
    const torch::Tensor& w = layers.at(name).weight;
    const int64_t out = w.size(0), in = w.size(1), per = w.numel() / (out * in);
    const int64_t kept = (k.out.count(name) ? k.out.at(name) : out) * (k.in.count(name) ? k.in.at(name) : in) * per;
    Json ls;
    ls["mode"] = "structured";
    ls["weights"] = w.numel();
    ls["weights_kept"] = kept;
    ls["sparsity"] = 1.0 - static_cast<double>(kept) / static_cast<double>(w.numel());
    if (excluded.count(name)) ls["excluded"] = true;
    layer_stats[name] = ls;
    all_weights += w.numel();
    all_kept += kept;
    if (k.touched.count(name)) {
      pruned_weights += w.numel();
      pruned_kept += kept;
    }
  }
  plan.stats["layers"] = layer_stats;
  auto removed_json = [](int64_t weights, int64_t kept) {
    Json j;
    j["weights"] = weights;
    j["weights_kept"] = kept;
    j["sparsity"] = weights ? 1.0 - static_cast<double>(kept) / static_cast<double>(weights) : 0.0;
    return j;
  };
  plan.stats["overall"]["pruned_layers"] = removed_json(pruned_weights, pruned_kept);
  plan.stats["overall"]["all_layers"] = removed_json(all_weights, all_kept);
}

PrunePlan prune_structured(PruneRequest& request, const Options& o, const std::vector<std::string>& order,
                           std::map<std::string, LayerRef>& layers) {
  PrunePlan plan;
  const std::set<std::string> excluded(o.exclude.begin(), o.exclude.end());
  const std::vector<models::ChannelGroup> groups =
      request.groups.empty() ? models::channel_groups(request.model) : request.groups;
  const StructuredScope scope = structured_scope(groups, layers, excluded);

  // One pass on the unpruned model: a group's channels are read by many layers at once (a whole residual stream),
  // so the per-layer sequential rule of the mask modes has no single place to apply here.
  std::map<std::string, torch::Tensor> norms;
  const bool calibrated = !o.magnitude && !scope.needed.empty();
  if (calibrated) {
    require_calibration(request);
    std::string last;
    for (const auto& name : order)
      if (scope.needed.count(name)) last = name;
    norms = calibrate(request.model, request, layers, scope.needed, last);
  }
  plan.stats["settings"] = settings_json(o, request, calibrated);

  Json group_stats = Json::object();
  KeptChannels kept;
  for (const auto& g : groups) {
    Json gs;
    if (auto skip = scope.skip_reason.find(g.name); skip != scope.skip_reason.end()) {
      gs["size"] = g.size;
      gs["kept"] = g.size;
      gs["skipped"] = skip->second;
      group_stats[g.name] = gs;
      continue;
    }
    const torch::Tensor channel_scores = group_channel_scores(g, layers, norms, o);
    const int64_t size = channel_scores.size(0);
    const int64_t removed = std::min(count_to_remove(o.sparsity, size), size - 1);
    const torch::Tensor keep_mask = remove_lowest(channel_scores.unsqueeze(0), removed).squeeze(0);
    const torch::Tensor keep = keep_mask.nonzero().view(-1).to(torch::kCPU, torch::kLong);  // ascending
    plan.keep[g.name] = keep;
    gs["size"] = size;
    gs["kept"] = keep.numel();
    gs["removed"] = removed;
    group_stats[g.name] = gs;
    for (const auto& p : g.producers) kept.out[p] = keep.numel();
    for (const auto& c : g.consumers) kept.in[c] = keep.numel();
    kept.touched.insert(g.producers.begin(), g.producers.end());
    kept.touched.insert(g.consumers.begin(), g.consumers.end());
  }
  plan.stats["groups"] = group_stats;
  structured_layer_stats(order, layers, excluded, kept, plan);
  return plan;
}

}  // namespace

torch::Tensor conv_input_sq_norms(const torch::Tensor& x, const ConvGeometry& g) {
  if (x.dim() != 4)
    throw Error("wanda: a Conv2d input must be 4-D [N, C, H, W], got " + std::to_string(x.dim()) + "-D");
  // Summing over samples first is exact (the norm is a plain sum) and leaves one [C, H, W] map to slice.
  torch::Tensor sq = x.detach().to(torch::kDouble).square().sum(0);
  if (g.pad_h || g.pad_w) sq = torch::constant_pad_nd(sq, {g.pad_w, g.pad_w, g.pad_h, g.pad_h}, 0);
  const int64_t hp = sq.size(1), wp = sq.size(2);
  if (hp < g.kernel_h || wp < g.kernel_w || g.stride_h < 1 || g.stride_w < 1)
    throw Error("wanda: a " + std::to_string(g.kernel_h) + "x" + std::to_string(g.kernel_w) +
                " kernel does not fit a padded input of " + std::to_string(hp) + "x" + std::to_string(wp));
  const int64_t oh = (hp - g.kernel_h) / g.stride_h + 1, ow = (wp - g.kernel_w) / g.stride_w + 1;
  torch::Tensor out = torch::empty({sq.size(0), g.kernel_h, g.kernel_w}, sq.options());
  // Patch element (kh, kw) sees exactly the input rows kh, kh + s, ..., kh + s*(oh-1) (and columns likewise).
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw)
      out.select(1, kh).select(1, kw).copy_(sq.slice(1, kh, kh + g.stride_h * (oh - 1) + 1, g.stride_h)
                                                .slice(2, kw, kw + g.stride_w * (ow - 1) + 1, g.stride_w)
                                                .sum({1, 2}));
  return out.reshape({-1});
}

torch::Tensor linear_input_sq_norms(const torch::Tensor& x) {
  if (x.dim() < 1) throw Error("wanda: a Linear input must have at least 1 dimension");
  return x.detach().to(torch::kDouble).square().reshape({-1, x.size(-1)}).sum(0);
}

torch::Tensor wanda_scores(const torch::Tensor& weight, const torch::Tensor& sq_norms, int64_t groups) {
  torch::Tensor s = weight.detach().to(torch::kDouble).abs();
  if (!sq_norms.defined()) return s;
  const int64_t rows = s.size(0), cols = s.numel() / std::max<int64_t>(1, rows);
  if (groups < 1 || rows % groups != 0)
    throw Error("wanda: " + std::to_string(groups) + " groups do not divide " + std::to_string(rows) + " rows");
  if (sq_norms.numel() != cols * groups)
    throw Error("wanda: " + std::to_string(sq_norms.numel()) + " input norms for a weight with " +
                std::to_string(cols) + " inputs per row" +
                (groups > 1 ? " in each of " + std::to_string(groups) + " groups" : std::string()));
  // [groups, cols] norms; every row of group k reads row k.
  const torch::Tensor norms = sq_norms.to(s.device(), torch::kDouble).sqrt().reshape({groups, 1, cols});
  return (s.reshape({groups, rows / groups, cols}) * norms).reshape(weight.sizes());
}

int64_t set_calibration_cache_limit(int64_t bytes) {
  return std::exchange(g_cache_limit, bytes);
}

int64_t count_to_remove(double fraction, int64_t count) {
  const auto k = static_cast<int64_t>(std::floor(fraction * static_cast<double>(count) + 0.5));
  return std::clamp<int64_t>(k, 0, count);
}

torch::Tensor row_mask(const torch::Tensor& scores, double sparsity) {
  if (scores.dim() < 1) throw Error("wanda: row_mask needs scores with at least 1 dimension");
  const int64_t rows = scores.size(0);
  const torch::Tensor flat = scores.reshape({rows, -1});
  return remove_lowest(flat, count_to_remove(sparsity, flat.size(1))).reshape(scores.sizes());
}

torch::Tensor nm_mask(const torch::Tensor& scores, int64_t n, int64_t m) {
  if (scores.dim() < 2) throw Error("wanda: n:m needs scores with an input dimension (at least 2-D)");
  if (m < 1 || n < 0 || n > m)
    throw Error("wanda: n:m needs 0 <= n <= m, got " + std::to_string(n) + ":" + std::to_string(m));
  if (scores.size(1) % m != 0)
    throw Error("wanda: n:m needs the input dimension (" + std::to_string(scores.size(1)) +
                ") to be a multiple of m = " + std::to_string(m));
  // Inputs last, so that each run of m consecutive elements is one group at a fixed (row, kh, kw).
  const torch::Tensor moved = scores.movedim(1, -1).contiguous();
  return remove_lowest(moved.view({-1, m}), n).view(moved.sizes()).movedim(-1, 1).contiguous();
}

namespace {

const OptionBinder<Options>& binder() {
  using Mode = Options::Mode;
  static const OptionBinder<Options> b = [] {
    OptionBinder<Options> b;
    b.add(&Options::sparsity, "sparsity",
          "fraction of each row's weights removed (of each group's channels, in structured mode); "
          "ignored in n:m mode")
        .min(0)
        .below(1);
    b.add_enum(&Options::mode, "mode",
               {{"unstructured", Mode::Unstructured}, {"n:m", Mode::NM}, {"structured", Mode::Structured}},
               "sparsity pattern");
    b.add(&Options::n, "n", "N of N:M: weights zeroed in each group of m consecutive inputs (2:4 zeroes 2 of every 4)")
        .min(1);
    b.add(&Options::m, "m", "M of N:M: group size along the input dimension").min(2).max(64);
    b.add_enum(&Options::magnitude, "score", {{"wanda", false}, {"magnitude", true}},
               "wanda: |W|*||X||_2; magnitude: |W| only (baseline)");
    b.add(&Options::exclude, "exclude",
          "layers never pruned (structured mode: their outputs are kept, their inputs may shrink; a group "
          "name keeps that group whole); first / last = the model's first and last conv/linear layer");
    return b;
  }();
  return b;
}

}  // namespace

Options Options::from_params(const Params& p) {
  Options o = binder().read(p, "wanda");
  if (o.mode == Mode::NM && !(o.n >= 0 && o.n < o.m))
    throw Error("wanda: n:m needs 0 <= n < m, got " + std::to_string(o.n) + ":" + std::to_string(o.m));
  return o;
}

std::string Options::mode_name() const {
  switch (mode) {
    case Mode::NM:
      return "n:m";
    case Mode::Structured:
      return "structured";
    default:
      return "unstructured";
  }
}

PrunePlan WandaPruner::prune(PruneRequest& request) {
  if (!request.params) throw Error("wanda: the prune request carries no parameters");
  Options o = Options::from_params(*request.params);
  if (!request.model) throw Error("wanda: the prune request carries no model");
  const std::vector<std::string> order = request.model->layer_names();
  o.exclude = selection::resolve_exclude(o.exclude, order);
  check_exclude(o, order, request);
  std::map<std::string, LayerRef> layers = find_layers(request.model);
  for (const auto& name : order)
    if (!layers.count(name)) throw Error("wanda: layer '" + name + "' is neither a Conv2d nor a Linear");

  torch::NoGradGuard no_grad;  // not InferenceMode: the masks must stay usable in autograd (recovery training)
  models::EvalModeGuard eval(*request.model);  // restored on exceptions too
  return o.mode == Options::Mode::Structured ? prune_structured(request, o, order, layers)
                                             : prune_masks(request, o, order, layers);
}

PrunerEntry entry() {
  PrunerEntry e;
  PluginInfo& p = e.info;
  p.kind = "pruner";
  p.name = "wanda";
  p.code = "W";
  p.summary = "weights x activation norms; unstructured, N:M or structured (Wanda-sp); magnitude baseline";
  p.details =
      "Scores |W_ij| * ||X_j||_2 (X_j: input feature j over all calibration tokens; for a conv, patch element "
      "(in_channel, kh, kw) over samples and output positions). unstructured: zero the lowest `sparsity` of each "
      "output row; n:m: zero n of every m consecutive input channels (convs: at each kernel position; layers whose "
      "inputs are not a multiple of m are skipped); both prune layers in forward order, each calibrated on the "
      "already-pruned model. structured: remove the lowest-scoring `sparsity` of each channel group's channels "
      "(channel score = sum of the scores of the weights reading it). exclude: in the mask modes a listed layer "
      "keeps all its weights; in structured mode it keeps its outputs (the group it produces stays whole) while "
      "its inputs may shrink, as with Torch-Pruning's ignored_layers (`fc` keeps its classes, the layer4 stream "
      "shrinks); a group name (`layer4`) keeps that group whole.";
  p.params = binder().table();
  set_calibration_defaults(p, 128, 64, "their activation norms weight the scores; unused by score: magnitude");
  p.check = [](const Params& params, const std::string& prefix, std::vector<Diagnostic>& diags) {
    const Options o = binder().read(params, prefix);
    if (o.mode != Options::Mode::NM) return;
    const int64_t n = o.n, m = o.m;
    if (n >= m)
      diags.push_back({binder().value(params, &Options::n).mark, prefix + "." + binder().key(&Options::n),
                       "must be less than m (" + std::to_string(m) +
                           ") in n:m mode: n is how many weights are "
                           "zeroed in each group of m, got " +
                           std::to_string(n)});
  };
  e.create = [] { return std::make_unique<WandaPruner>(); };
  e.method = [](const Params& p) {
    const Options o = binder().read(p, "wanda");
    MethodSettings m;
    m.label = o.magnitude ? "Magnitude" : "Wanda";
    if (o.mode == Options::Mode::NM) m.label += " " + std::to_string(o.n) + ":" + std::to_string(o.m);
    if (o.mode == Options::Mode::Structured) m.label += " structured";
    m.sparsity = o.mode == Options::Mode::NM ? double(o.n) / double(o.m) : o.sparsity;
    m.settings = {{"mode", o.mode_name()}, {"score", o.magnitude ? "magnitude" : "wanda"}};
    return m;
  };
  return e;
}

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::wanda
