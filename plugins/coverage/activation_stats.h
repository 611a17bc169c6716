// The activation statistics behind the coverage-guided pruners (issue #29, in progress): one pass over a stream of
// images that keeps, for every watched activation point (a ReLU output), statistics per channel and never the
// activations themselves, so that its memory is O(channels) whatever the number of images.
//
// Channels are the neurons, as in DeepGauge's reference code: the value of channel c for one image is the spatial
// mean of its map, a_c = mean over positions of y[c, h, w]. Per channel the pass keeps the number of images, the sum
// and the sum of squares of a_c (mean, population std), its lowest and highest value (DeepGauge's low_n and high_n
// when the images are the profile split), and the number of elements that are exactly zero over every image and
// position (APoZ, Hu et al. 2016: the average percentage of zeros).
//
//     auto stats = coverage::measure_stats(model, images, 128, baselines::activation_points(groups));
//     torch::Tensor apoz = stats.at("layer2.1").zero_fraction();   // double [C]
//
// With Neurons::Positions every spatial position of every channel is a neuron of its own (DeepGauge's other
// reading of a conv layer): the statistics then hold one value per (channel, position), channel-major, and memory is
// O(channels × positions), still independent of the number of images.
//
// The pruners that score with them (one file each, registered in one line): apoz, mean_activation, and through the
// profile (low, high) kmnc, nbc and snac (deepgauge.h).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runner/core/error.h"
#include "runner/models/network.h"

namespace expctl::coverage {

/// What a neuron is: a channel (its spatial mean, the default) or one position of one channel.
enum class Neurons { Channels, Positions };

/// The values of the neurons of an activation y ([N, C, ...]; [N, C] for a linear layer's output): double [N, M]
/// with M = C (Channels: the mean over positions) or C × positions (Positions: channel-major).
torch::Tensor neuron_values(const torch::Tensor& y, Neurons neurons);

/// The statistics of one activation point, per neuron, on the CPU. Every tensor is double [M] (M = C for
/// Neurons::Channels, C × positions for Neurons::Positions), except `zeros`, which is always per channel [C].
struct ChannelStats {
  int64_t images = 0;         ///< images seen
  int64_t positions = 0;      ///< elements of one channel's map (H × W; 1 for a [N, C] activation)
  int64_t channels = 0;       ///< C
  torch::Tensor sum;          ///< Σ over images of a_c
  torch::Tensor sum_squares;  ///< Σ over images of a_c²
  torch::Tensor low, high;    ///< min and max over images of a_c
  torch::Tensor zeros;        ///< elements exactly 0, over every image and position

  torch::Tensor mean() const;           ///< sum / images
  torch::Tensor std() const;            ///< population standard deviation of a_c: sqrt(max(0, E[a²] − E[a]²))
  torch::Tensor zero_fraction() const;  ///< zeros / (images × positions): APoZ
};

/// A ForwardObserver accumulating ChannelStats for the watched points as batches stream through.
class StatsObserver : public models::ForwardObserver {
 public:
  explicit StatsObserver(const std::vector<std::string>& points, Neurons neurons = Neurons::Channels);
  void on_activation(const std::string& point, const torch::Tensor& y) override;
  /// The statistics so far, on the CPU, by point (points never seen are absent).
  std::map<std::string, ChannelStats> result() const;

 private:
  std::vector<std::string> points_;
  Neurons neurons_;
  std::map<std::string, ChannelStats> acc_;  // tensors on the activations' device until result()
};

/// Runs `images` (normalised float [N, C, H, W], moved to the model's device batch by batch) through `model` in
/// batches of `batch_size`, in eval and inference mode (the model's mode is restored), with `observer` watching: the
/// one pass behind every calibration statistic (activation statistics, DeepGauge's hits, Neuron Coverage). Throws
/// expctl::Error naming `who` when the images are empty, not 4-D or not floats, or batch_size is below 1.
void observe(models::Network model, const torch::Tensor& images, int64_t batch_size, models::ForwardObserver& observer,
             const std::string& who);

/// Throws expctl::Error naming `who` when a point of `points` is not in `measured` (never reached by the pass).
template <class T>
void require_reached(const std::map<std::string, T>& measured, const std::vector<std::string>& points,
                     const std::string& who) {
  for (const auto& p : points)
    if (!measured.count(p)) throw Error(who + ": activation point '" + p + "' was never reached by the forward pass");
}

/// Runs `images` (normalised float [N, C, H, W], moved to the model's device batch by batch) through `model` in
/// batches of `batch_size`, in eval and inference mode (the model's mode is restored), and returns the statistics
/// of every point of `points`. Throws expctl::Error naming `who` when the images are empty or not 4-D, batch_size is
/// below 1, or a point is never reached.
std::map<std::string, ChannelStats> measure_stats(models::Network model, const torch::Tensor& images,
                                                  int64_t batch_size, const std::vector<std::string>& points,
                                                  const std::string& who = "activation statistics",
                                                  Neurons neurons = Neurons::Channels);

}  // namespace expctl::coverage
