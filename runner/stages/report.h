// The report stage's keys, declared once (the stage itself is registered in report.cpp; batch_limits.cpp checks
// its large latency batch against memory).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runner/core/options_binder.h"

namespace expctl {

struct ReportOptions {
  /// latency.form: which form of each model is timed. deployed: frozen TorchScript, batch norms folded, optimized
  /// for inference (runner/models/deployment.h); eager: the network as it trains; both: deployed, eager beside it.
  enum class LatencyForm { Deployed, Eager, Both } form = LatencyForm::Deployed;
  /// latency.bf16: a bf16 row for every model (its deployed form computing in bf16, its accuracy measured in bf16).
  /// auto: where bf16 is native (CUDA, a CPU with AVX512_BF16, AMX-BF16 or Arm BF16); on; off.
  enum class Bf16 { Auto, On, Off } bf16 = Bf16::Auto;
  int64_t warmup = 10;               ///< latency.warmup: untimed passes before timing
  int64_t repeats = 50;              ///< latency.repeats: timed passes at batch 1
  int64_t large_batch = 128;         ///< latency.large_batch
  int64_t large_batch_repeats = 10;  ///< latency.large_batch_repeats
  bool plot = true;                  ///< draw the charts (gnuplot)
  bool export_torchscript = true;    ///< write the final model as TorchScript, eager and deployed
  /// coverage: the test coverage criteria measured on every model (nc, kmnc, nbc, snac, tknc; report_coverage.h),
  /// against the loaded model's ranges on coverage_profile training images; none by default.
  std::vector<std::string> coverage;
  int64_t coverage_profile = 1024;  ///< training images the loaded model's neuron ranges are taken from
  int64_t coverage_k = 1000;        ///< KMNC's sections (DeepGauge's k)
  int64_t coverage_top_k = 2;       ///< TKNC's k
  double coverage_threshold = 0.1;  ///< NC's threshold t (the neuron_coverage pruner's default)
};

const OptionBinder<ReportOptions>& report_binder();

}  // namespace expctl
