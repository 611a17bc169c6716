// report.coverage (issue #29): the test coverage of every model of the report's table, criterion by criterion
// (DeepXplore's NC; DeepGauge's KMNC, NBC, SNAC, TKNC: plugins/coverage/deepgauge.h), measured on the test images
// the rows' accuracy was measured on, against the neuron ranges of the first row's model (the loaded model) on
// training images. A pruned model's neurons are the loaded model's neurons it kept: their ranges are the loaded
// model's, so that a pruned row's coverage says how much of the loaded model's tested behaviour is left.
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/models/channel_groups.h"
#include "runner/models/network.h"

namespace spdlog {
class logger;
}

namespace expctl {

struct ScenarioConfig;
struct ReportOptions;
namespace data {
struct Split;
}

/// One model of the table: the network, and for a structurally pruned one the channels of the loaded model's groups
/// it kept (group name -> int64 indices; a group not listed kept every channel; empty: the loaded model itself, or a
/// model pruned by masks).
struct CoverageSubject {
  models::Network model{nullptr};
  std::map<std::string, torch::Tensor> kept;
  bool pruned = false;  ///< made by the prune stage (an error then points at prune_metrics.json's kept_channels)
};

/// The settings and {"rows": [{"nc": 0.42, "kmnc": ...}, ...]} for `subjects` in order (the first is the loaded
/// model, profiled on the scenario's training images), measured on `test`, the criteria of p.coverage only, each a
/// fraction in [0, 1]. Throws expctl::Error when a pruned model's activations do not have the widths its kept channels
/// give.
nlohmann::json measure_model_coverage(const ScenarioConfig& cfg, const data::Split& test, const ReportOptions& p,
                                      const std::vector<CoverageSubject>& subjects, torch::Device device,
                                      spdlog::logger& log);

/// For every activation point of the loaded model (its width in `widths`), the indices of its channels a model keeps
/// when it keeps `kept` of the loaded model's channel `groups` (points that keep every channel are absent).
std::map<std::string, torch::Tensor> kept_at_points(const std::vector<models::ChannelGroup>& groups,
                                                    const std::map<std::string, torch::Tensor>& kept,
                                                    const std::map<std::string, int64_t>& widths);

}  // namespace expctl
