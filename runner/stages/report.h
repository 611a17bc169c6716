// The report stage's keys, declared once (the stage itself is registered in report.cpp; batch_limits.cpp checks
// its large latency batch against memory).
#pragma once
#include <cstdint>

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
};

const OptionBinder<ReportOptions>& report_binder();

}  // namespace expctl
