// Wanda pruner (Sun et al. 2023): score |W_ij| * ||X_j||_2, prune the lowest fraction within each output row;
// extended to convolutions (X_j = an (in_channel, kh, kw) patch element over samples and positions).
//
// | key                    | default       | meaning                                                      |
// |------------------------|---------------|--------------------------------------------------------------|
// | sparsity               | 0.5           | fraction of weights (or channels, structured) removed        |
// | mode                   | unstructured  | unstructured, n:m, structured (Wanda-sp)                     |
// | n, m                   | 2, 4          | N:M pattern: keep n of every m consecutive inputs            |
// | score                  | wanda         | wanda: |W|*||X||; magnitude: |W| (baseline)                  |
// | exclude                | [conv1]       | layers never pruned                                          |
// | calibration.split      | test          | split the calibration images come from                       |
// | calibration.samples    | 128           | number of calibration images                                 |
//
//     prune: {pruner: wanda, sparsity: 0.5, mode: unstructured}
#include "runner/core/registry.h"

namespace expctl {
namespace {

PluginInfo info() {
  PluginInfo p;
  p.kind = "pruner";
  p.name = "wanda";
  p.code = "W";
  p.summary = "weights x activation norms; unstructured, N:M or structured (Wanda-sp); magnitude baseline";
  ParamTable& t = p.params;
  t.add_float("sparsity", 0.5, "fraction of weights removed (of channels, in structured mode)").min(0).below(1);
  t.add_enum("mode", "unstructured", {"unstructured", "n:m", "structured"}, "sparsity pattern");
  t.add_int("n", 2, "N of N:M: weights zeroed in each group of m consecutive inputs (2:4 zeroes 2 of every 4)").min(1);
  t.add_int("m", 4, "M of N:M: group size along the input dimension").min(2).max(64);
  t.add_enum("score", "wanda", {"wanda", "magnitude"}, "wanda: |W|*||X||_2; magnitude: |W| only (baseline)");
  t.add_list("exclude", {"conv1"}, "layers never pruned");
  t.add_enum("calibration.split", "test", {"test", "train"}, "split the calibration images come from");
  t.add_int("calibration.samples", 128, "number of calibration images").min(1).max(1000000);
  t.add_int("calibration.batch_size", 64, "batch size for calibration forward passes").min(1).max(65536);
  p.unavailable = "Wanda pruning lands with issue #6";
  return p;
}

}  // namespace

EXPCTL_REGISTER_PLUGIN(info());

}  // namespace expctl
