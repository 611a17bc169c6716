// Cross-run summaries: one table (Markdown, CSV, JSON) and two gnuplot charts (accuracy against MACs and against
// latency, one curve per method) from the report.json files of finished runs. `expctl sweep` writes one per sweep,
// `expctl compare` one over several scenarios (Neuron Coverage against the Wanda variants and magnitude).
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace expctl::sweep {

/// One finished pruning run, read from its report.json.
struct RunSummary {
  std::string run;  ///< cell id, or "plain" for the scenario's own run
  std::string scenario;
  std::string label;                                         ///< method label ("Wanda 2:4")
  double sparsity = 0;                                       ///< requested sparsity (n/m for N:M)
  double acc_loaded = 0, acc_pruned = 0, acc_recovered = 0;  ///< top-1 %, on the images `measured_on` names
  /// What the accuracies were measured on (report.json "evaluation"): "the test split (10,000 images)", "500 test
  /// images, a class-balanced subset of the test split (dataset.test_subset: 500, seed 1)"; the short form for
  /// charts.
  std::string measured_on = "test images not recorded (a report.json of an older expctl)";
  std::string measured_on_short = "test images not recorded";
  double params = 0, size_mb = 0, compact_size_mb = 0;
  double macs = 0, nonzero_macs = 0;  ///< of the recovered model (the pruned one has the same shapes and masks)
  double base_macs = 0, base_latency_b1_ms = 0, base_latency_large_ms = 0;  ///< the loaded fine-tuned model
  double latency_b1_ms = 0;                                                 ///< median, batch 1
  double latency_large_ms = 0;                                              ///< median per image at the large batch
  int64_t large_batch = 0;
  bool masked = false;
  std::filesystem::path report;
};

/// Reads a pruning run's report.json; nullopt when the file is absent. Throws DataError naming the file when it
/// is not a pruning report (no "pruned" row), and the file and dotted key when a field is missing or not a number.
std::optional<RunSummary> read_run(const std::filesystem::path& report_json, const std::string& run);

/// One MAC level of the equal-cost comparison: each method's accuracy at these non-zero MACs.
struct EqualMacsRow {
  double macs = 0;  ///< non-zero MACs per image
  struct Cell {
    double accuracy = 0;        ///< recovered top-1 % (pruned when the run has no recovery)
    bool interpolated = false;  ///< true: linear in MACs between the method's two runs around this level
  };
  std::map<std::string, Cell> methods;  ///< by method label; absent: this level lies outside the method's runs
};

/// Places methods at equal cost: the levels are the non-zero MACs of every run (levels within 0.5% of each other
/// are one level, the mean of their MACs). At a level, a method with a run there (within 0.5%) shows that run's
/// accuracy; otherwise, when its runs lie on both sides, the accuracy interpolated linearly in MACs between its two
/// nearest runs around the level; never extrapolated. Several runs of a method at one level (seeds) are averaged.
/// Accuracy is the recovered one, the pruned one for runs without recovery. Levels ascending.
std::vector<EqualMacsRow> equal_macs(const std::vector<RunSummary>& runs);

/// Writes summary.md, summary.csv, summary.json and (with `plot`, through plot::draw: summary.gp, summary.dat)
/// accuracy_vs_macs.png and accuracy_vs_latency.png into `dir`; returns the files written. Rows are sorted by method,
/// then sparsity. With two or more methods, summary.md and summary.json also place them at equal MACs (equal_macs())
/// and equal_macs.csv holds that table. Throws Error when `runs` is empty.
std::vector<std::filesystem::path> write_summary(const std::filesystem::path& dir, const std::string& title,
                                                 const std::vector<RunSummary>& runs, bool plot);

}  // namespace expctl::sweep
