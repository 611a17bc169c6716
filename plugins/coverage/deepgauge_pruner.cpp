// The DeepGauge pruners' shared entry (see deepgauge_pruner.h).
#include "plugins/coverage/deepgauge_pruner.h"

#include <memory>

#include "plugins/baselines/baselines.h"
#include "runner/core/error.h"
#include "runner/core/options_binder.h"

namespace expctl::coverage {

namespace {

// The pruner's own keys, bound to HitsOptions: k means KMNC's sections or TKNC's top k; NBC and SNAC have none.
std::shared_ptr<const OptionBinder<HitsOptions>> binder_for(Criterion criterion) {
  auto b = std::make_shared<OptionBinder<HitsOptions>>();
  if (criterion == Criterion::KMNC)
    b->add(&HitsOptions::sections, "k", "sections each neuron's profiled range [low, high] is cut into")
        .min(1)
        .max(100000);
  if (criterion == Criterion::TKNC)
    b->add(&HitsOptions::top_k, "k",
           "a channel counts for an image when it is among the k highest of its "
           "activation point")
        .min(1)
        .max(100000);
  b->add_enum(&HitsOptions::neurons, "neurons", {{"channel", Neurons::Channels}, {"position", Neurons::Positions}},
              "channel: a channel is one neuron, valued by its spatial mean (DeepGauge's reference code); position: "
              "every position of every channel is a neuron, and a channel scores its positions' mean");
  return b;
}

// The exact definition, for `expctl describe`.
std::string definition(Criterion c) {
  const std::string neuron =
      "A neuron is a channel of a ReLU output, valued by its spatial mean for one image (neurons: position: each "
      "position of each channel, a channel scoring its positions' mean). ";
  const std::string range =
      "Its range [low, high] is its lowest and highest value on the profile images (prune.profile: training images "
      "by default, never the calibration images); a value on low or high is inside the range. ";
  const std::string ties =
      " Channels of equal score: the higher mean value on the calibration images is kept, then the lower index.";
  switch (c) {
    case Criterion::KMNC:
      return neuron + range +
             "KMNC: the range is cut into k sections; a calibration value v in [low, high] lies in section j = min(k "
             "- 1, floor(k (v - low) / (high - low))), so a value on a section edge is in the section above it; a "
             "range that is a single point has no sections. Score: the share of the k sections the calibration "
             "images hit." +
             ties;
    case Criterion::NBC:
      return neuron + range + "NBC: score = the share of calibration images whose value is below low or above high." +
             ties;
    case Criterion::SNAC:
      return neuron + range + "SNAC: score = the share of calibration images whose value is above high." + ties;
    default:
      return neuron +
             "TKNC: for each calibration image, the k neurons of an activation point with the highest values are its "
             "top k (equal values: the lower index first). Score: the share of calibration images that put the "
             "neuron in the top k. No profile is needed." +
             ties;
  }
}

}  // namespace

PrunerEntry deepgauge_entry(Criterion criterion, const std::string& code, const std::string& summary) {
  const std::string name = criterion_name(criterion);
  const bool profiles = criterion != Criterion::TKNC;
  const auto keys = binder_for(criterion);
  auto options = [keys, name](const Params* p) { return p ? keys->read(*p, name) : HitsOptions{}; };
  auto label = [options, code, criterion](const Params& p) {
    const HitsOptions o = options(&p);
    std::string l = code;
    if (criterion == Criterion::KMNC) l += " (k = " + std::to_string(o.sections) + ")";
    if (criterion == Criterion::TKNC) l += " (k = " + std::to_string(o.top_k) + ")";
    return l + (o.neurons == Neurons::Positions ? ", positions" : "");
  };
  baselines::Scorer scorer = [=](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
    const HitsOptions o = options(r.params);
    const std::vector<std::string> points = baselines::activation_points(groups);
    std::map<std::string, ChannelStats> profile;
    if (profiles) {
      if (!r.profile.defined() || r.profile.size(0) == 0)
        throw Error(name + ": needs profile images to take each neuron's range from: set prune.profile.samples");
      profile = measure_stats(r.model, r.profile, r.batch_size, points, name + " (profile)", o.neurons);
    }
    const auto hits =
        measure_hits(r.model, r.calibration, r.batch_size, profiles ? &profile : nullptr, o, points, name);
    std::map<std::string, torch::Tensor> score, mean;
    for (const auto& [point, h] : hits) {
      score.emplace(point, h.channel_scores(criterion));
      mean.emplace(point, h.channel_means());
    }
    baselines::Scores out(baselines::scores_by_group(groups, score, name));
    out.tie = baselines::scores_by_group(groups, mean, name);
    out.criterion = r.params ? label(*r.params) : code;
    return out;
  };
  PrunerEntry e = baselines::baseline_entry(name, code, summary, 512, "their coverage is measured", scorer, label);
  e.info.params.append(keys->table());
  e.info.details = definition(criterion) + " " + e.info.details;
  if (profiles) {
    set_profile_default(e.info, kProfileSamples, "each neuron's range [low, high] is taken from them");
    e.info.check = [name](const Params& params, const std::string& prefix, std::vector<Diagnostic>& diags) {
      const auto& keys = prune_stage_binder();
      if (keys.read(params, prefix).profile_samples > 0) return;
      diags.push_back({keys.value(params, &PruneStageOptions::profile_samples).mark,
                       prefix + "." + keys.key(&PruneStageOptions::profile_samples),
                       "must be at least 1: " + name + " takes each neuron's range from the profile images"});
    };
  }
  return e;
}

}  // namespace expctl::coverage
