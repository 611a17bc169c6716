// DeepGauge's coverage criteria (Ma et al., ASE 2018) beside DeepXplore's Neuron Coverage: the scores of the
// kmnc, nbc, snac and tknc pruners (one file each) and the model-level test coverage the report prints.
//
// A neuron is a channel of an activation point (a ReLU output), valued by its spatial mean, as in DeepGauge's
// reference code; Neurons::Positions makes every (channel, position) a neuron instead (activation_stats.h). Its
// profile [low_n, high_n] is the range of its values on the *profile* images (by default training images, drawn
// apart from the calibration images: coverage::measure_stats). Then, over the *test* (calibration) inputs x:
//
// | criterion | neuron n is hit by x when                                | model coverage              |
// |-----------|-----------------------------------------------------------|-----------------------------|
// | KMNC      | v = n(x) lies in [low, high] and high > low; its section  | sections hit / (k · |N|)    |
// |           | is j = min(k − 1, ⌊k · (v − low) / (high − low)⌋)         |                             |
// | NBC       | v < low (lower corner) or v > high (upper corner)          | corners hit / (2 · |N|)     |
// | SNAC      | v > high                                                  | neurons hit / |N|           |
// | TKNC      | n is among the k highest values of its activation point   | neurons hit / |N|           |
// |           | for x; among equal values the lower index ranks first      |                             |
//
// Boundaries: a value exactly on low or high is inside the range (no corner; KMNC section 0 or k − 1); a value
// exactly on a section edge low + j·(high − low)/k belongs to section j. A neuron whose profiled range is a single
// point (high == low: a channel the profile never moved, a dead ReLU) has no sections. The pruners' channel scores
// are frequencies over the inputs, never 0/1 indicators: KMNC the share of the neuron's k sections hit, NBC the
// share of inputs outside [low, high], SNAC above high, TKNC in the top k (Positions: averaged over the channel's
// positions). The memory of a pass is O(neurons × k) for KMNC and O(neurons) otherwise, whatever the inputs.
//
//     auto profile = coverage::measure_stats(model, train_images, 128, points);
//     auto hits = coverage::measure_hits(model, test_images, 128, &profile, HitsOptions{}, points, "report");
//     double kmnc = coverage::model_coverage(hits, Criterion::KMNC);
//     torch::Tensor scores = hits.at("layer2.1").channel_scores(Criterion::TKNC);   // double [C]
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "plugins/coverage/activation_stats.h"
#include "runner/models/network.h"

namespace expctl::coverage {

enum class Criterion { KMNC, NBC, SNAC, TKNC };

/// "kmnc", "nbc", "snac", "tknc".
std::string criterion_name(Criterion c);

struct HitsOptions {
  int64_t sections = 100;  ///< KMNC's k
  int64_t top_k = 10;      ///< TKNC's k
  Neurons neurons = Neurons::Channels;
};

/// The hits of one activation point over the inputs seen, on the CPU.
struct PointHits {
  int64_t images = 0;
  int64_t channels = 0;   ///< C; neurons M = C (Channels) or C × positions (Positions)
  int64_t sections = 0;   ///< KMNC's k
  bool profiled = false;  ///< measured against a profile: false leaves section, below and above empty (TKNC only)
  torch::Tensor section;  ///< bool [M, k]: section j of neuron n was hit by some input
  torch::Tensor below;    ///< double [M]: inputs with v < low
  torch::Tensor above;    ///< double [M]: inputs with v > high
  torch::Tensor top;      ///< double [M]: inputs for which the neuron was among the point's top k
  torch::Tensor sum;      ///< double [M]: Σ v (the pruners' tie-break: the higher mean is kept)

  /// The criterion's frequency per neuron, double [M] (see the table above). Throws expctl::Error for KMNC, NBC and
  /// SNAC when the hits were not measured against a profile.
  torch::Tensor neuron_scores(Criterion c) const;
  /// neuron_scores averaged over each channel's neurons, double [C].
  torch::Tensor channel_scores(Criterion c) const;
  /// The mean value per channel, double [C].
  torch::Tensor channel_means() const;
};

/// A ForwardObserver that counts the hits of every watched point against `profile` (the profile images'
/// statistics, measured with the same Neurons; null: TKNC only). Keeps no activations.
class HitsObserver : public models::ForwardObserver {
 public:
  HitsObserver(const std::map<std::string, ChannelStats>* profile, HitsOptions options,
               const std::vector<std::string>& points);
  void on_activation(const std::string& point, const torch::Tensor& y) override;
  /// The hits so far, on the CPU, by point (points never seen are absent).
  std::map<std::string, PointHits> result() const;

 private:
  struct Acc {
    torch::Tensor low, high;  // [M] on the activations' device
    PointHits hits;           // tensors on the activations' device until result()
  };
  HitsOptions options_;
  std::map<std::string, const ChannelStats*> profile_;
  std::map<std::string, Acc> acc_;
};

/// Runs `images` (normalised float [N, C, H, W]) through `model` in batches of `batch_size` in eval and inference
/// mode (the mode is restored) and returns the hits of every point of `points` against `profile` (null: TKNC only,
/// see HitsObserver). Throws
/// expctl::Error naming `who` when the images are empty, a point is never reached or not profiled, or its neuron
/// count differs from the profile's.
std::map<std::string, PointHits> measure_hits(models::Network model, const torch::Tensor& images, int64_t batch_size,
                                              const std::map<std::string, ChannelStats>* profile, HitsOptions options,
                                              const std::vector<std::string>& points, const std::string& who);

/// The model's coverage over every point of `hits` (the "model coverage" column above), in [0, 1].
double model_coverage(const std::map<std::string, PointHits>& hits, Criterion c);

}  // namespace expctl::coverage
