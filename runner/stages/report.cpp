// report stage: measures every model of the scenario the same way (accuracy, size, MACs/FLOPs, latency)
// and writes the comparison table to the console and to report.md, report.csv and report.json.
#include "runner/core/pipeline.h"

namespace expctl {
namespace {

std::vector<PlannedFile> plan(const ScenarioConfig&, const Naming& n, const Params& p) {
  std::vector<PlannedFile> out;
  for (const char* f : {"report.md", "report.csv", "report.json"})
    out.push_back({PlannedFile::Access::Write, n.report_dir() / f, "report"});
  if (p.get_bool("plot"))
    out.push_back({PlannedFile::Access::Write, n.report_dir() / "training_curves.png", "loss/accuracy plot"});
  return out;
}

StageEntry entry() {
  StageEntry e;
  e.info.name = "report";
  e.info.summary = "measure accuracy, size, MACs/FLOPs and latency of every model; write the tables";
  ParamTable& t = e.info.params;
  t.add_int("latency.warmup", 10, "untimed forward passes before timing").min(0).max(10000);
  t.add_int("latency.repeats", 50, "timed forward passes (median, mean and p95 reported)").min(1).max(100000);
  t.add_int("latency.large_batch", 128, "the large batch size timed beside batch 1").min(1).max(65536);
  t.add_bool("plot", true, "draw the training curves (gnuplot)");
  e.info.unavailable = "metrics and reports land with issue #4";
  e.plan = plan;
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
