// Neuron Coverage pruner (DeepXplore, Pei et al. 2017), structured: removes the least-covered channels.
//
// | key                    | default      | meaning                                                       |
// |------------------------|--------------|---------------------------------------------------------------|
// | sparsity               | 0.5          | fraction of channels removed                                  |
// | threshold              | 0.5          | a channel is covered when its scaled mean activation > t      |
// | scope                  | local        | local: per group; global: ranked across the network           |
// | aggregate              | mean         | how group members' coverage combine: mean, max, min           |
// | min_channels           | 8            | never keep fewer channels in a group                          |
// | round_to               | 8            | kept channel counts are multiples of this                     |
// | exclude                | [conv1, fc]  | layers never pruned                                           |
// | calibration.split      | test         | split the calibration images come from                        |
// | calibration.samples    | 512          | number of calibration images                                  |
//
//     prune: {pruner: neuron_coverage, sparsity: 0.5, threshold: 0.5, scope: local}
#include "runner/core/registry.h"

namespace expctl {
namespace {

PluginInfo info() {
  PluginInfo p;
  p.kind = "pruner";
  p.name = "neuron_coverage";
  p.code = "NC";
  p.summary = "structured: remove the channels least often covered on calibration inputs (DeepXplore)";
  ParamTable& t = p.params;
  t.add_float("sparsity", 0.5, "fraction of channels removed").min(0).below(1);
  t.add_float("threshold", 0.5, "coverage threshold t on the [0,1]-scaled mean activation of a channel")
      .min(0)
      .below(1);
  t.add_enum("scope", "local", {"local", "global"}, "local: sparsity per group; global: ranked across the network");
  t.add_enum("aggregate", "mean", {"mean", "max", "min"}, "how coverage of coupled layers (residual groups) combines");
  t.add_int("min_channels", 8, "never keep fewer channels in a group").min(1);
  t.add_int("round_to", 8, "kept channel counts are rounded to a multiple of this").min(1).max(1024);
  t.add_list("exclude", {"conv1", "fc"}, "layers never pruned (groups containing them are kept whole)");
  t.add_enum("calibration.split", "test", {"test", "train"}, "split the calibration images come from");
  t.add_int("calibration.samples", 512, "number of calibration images").min(1).max(1000000);
  t.add_int("calibration.batch_size", 128, "batch size for calibration forward passes").min(1).max(65536);
  p.unavailable = "Neuron Coverage pruning lands with issue #5";
  return p;
}

}  // namespace

EXPCTL_REGISTER_PLUGIN(info());

}  // namespace expctl
