#include "runner/sweep/summary.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/json_file.h"
#include "runner/core/naming.h"
#include "runner/core/plot.h"
#include "runner/core/table.h"

namespace expctl::sweep {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

std::optional<JsonValue> row_named(const JsonValue& rows, const std::string& name) {
  for (const JsonValue& r : rows.items())
    if (r.has("model") && r["model"].string() == name) return r;
  return std::nullopt;
}

json number_or_null(double v) { return std::isnan(v) ? json(nullptr) : json(v); }

// One row of summary.md/.csv/.json; "masked" is for the Markdown table only.
json row_of(const RunSummary& r) {
  return {{"method", r.label},
          {"sparsity", number_or_null(r.sparsity)},
          {"run", r.run},
          {"scenario", r.scenario},
          {"accuracy_loaded", r.acc_loaded},
          {"accuracy_pruned", r.acc_pruned},
          {"accuracy_recovered", number_or_null(r.acc_recovered)},
          {"nonzero_params", r.params},
          {"size_mb", r.size_mb},
          {"compact_size_mb", r.compact_size_mb},
          {"macs", r.macs},
          {"nonzero_macs", r.nonzero_macs},
          {"latency_b1_median_ms", r.latency_b1_ms},
          {"large_batch", r.large_batch},
          {"latency_large_median_ms_per_image", r.latency_large_ms},
          {"report", r.report.string()},
          {"accuracy_measured_on", r.measured_on},
          {"masked", r.masked}};
}

Table summary_table(int64_t large, bool show_measured_on) {
  auto compact = [](const json& r) {
    return r["masked"].get<bool>() ? Table::fixed(r["compact_size_mb"].get<double>(), 2) : std::string("-");
  };
  return Table(
      {{"method", "method", "Method", nullptr, Align::Left},
       {"sparsity", "sparsity", "Sparsity", Table::fixed_cell("sparsity", 2)},
       {"run", "run", "Run", nullptr, Align::Left},
       {"scenario", "scenario"},
       {"accuracy_loaded", "accuracy_loaded"},
       {"accuracy_pruned", "accuracy_pruned", "Acc. pruned (%)", Table::fixed_cell("accuracy_pruned", 2)},
       {"accuracy_recovered", "accuracy_recovered", "Acc. recovered (%)", Table::fixed_cell("accuracy_recovered", 2)},
       {"nonzero_params", "nonzero_params", "Params (M)", Table::fixed_cell("nonzero_params", 2, 1e-6)},
       {"size_mb", "size_mb", "Size (MB)", Table::fixed_cell("size_mb", 2)},
       {"compact_size_mb", "compact_size_mb", "Compact (MB)", compact},
       {"macs", "macs", "MACs (M)", Table::fixed_cell("macs", 1, 1e-6)},
       {"nonzero_macs", "nonzero_macs", "Non-zero MACs (M)", Table::fixed_cell("nonzero_macs", 1, 1e-6)},
       {"latency_b1_median_ms", "latency_b1_median_ms", "Latency b1 (ms)",
        Table::fixed_cell("latency_b1_median_ms", 2)},
       {"large_batch", "large_batch"},
       {"latency_large_median_ms_per_image", "latency_large_median_ms_per_image",
        "Latency b" + std::to_string(large) + " (ms/img)", Table::fixed_cell("latency_large_median_ms_per_image", 3)},
       {"report", "report"},
       {"accuracy_measured_on", "accuracy_measured_on", show_measured_on ? "Accuracy measured on" : "", nullptr,
        Align::Left}});
}

// The images every run's accuracies were measured on, when they are the same for all; "" otherwise.
std::string common_measured_on(const std::vector<RunSummary>& runs, bool short_form) {
  for (const auto& r : runs)
    if (r.measured_on != runs.front().measured_on) return "";
  return short_form ? runs.front().measured_on_short : runs.front().measured_on;
}

// accuracy_vs_macs.png and accuracy_vs_latency.png: one gnuplot data block per method (sparsity, non-zero MACs
// (M), acc pruned, acc recovered, latencies), the last block the unpruned model.
bool plot_summary(const fs::path& dir, const std::string& title, const std::vector<RunSummary>& runs) {
  const RunSummary& base = runs.front();
  std::vector<std::string> labels;
  std::ostringstream dat;
  auto g = [](double v) { return std::isnan(v) ? std::string("NaN") : json(v).dump(); };
  for (const auto& r : runs) {
    if (labels.empty() || labels.back() != r.label) {
      if (!labels.empty()) dat << "\n\n";
      labels.push_back(r.label);
      dat << "# method " << labels.size() << "\n";
    }
    dat << g(r.sparsity) << " " << g(r.nonzero_macs / 1e6) << " " << g(r.acc_pruned) << " " << g(r.acc_recovered) << " "
        << g(r.latency_b1_ms) << " " << g(r.latency_large_ms) << "\n";
  }
  dat << "\n\n# unpruned\n"
      << g(base.base_macs / 1e6) << " " << g(base.base_latency_b1_ms) << " " << g(base.base_latency_large_ms) << " "
      << g(base.acc_loaded) << "\n";
  const std::string macs_png = Naming::summary_chart(dir, "macs").filename().string();
  const std::string latency_png = Naming::summary_chart(dir, "latency").filename().string();
  const std::string stem = Naming::summary_file(dir, "dat").stem().string();  // summary.gp, summary.dat
  const std::string d = plot::quote(stem + ".dat");
  auto unpruned = [&](int xcol) {
    return ", " + d + " index " + std::to_string(labels.size()) + " using " + std::to_string(xcol) +
           ":4 with points pt 3 ps 2 lc rgb 'black' title 'unpruned'";
  };
  auto curves = [&](const std::string& xcol, bool with_pruned) {
    std::ostringstream s;
    for (size_t i = 0; i < labels.size(); ++i) {
      s << (i ? ", " : "") << d << " index " << i << " using " << xcol << ":4 with linespoints lw 2 pt 7 lc " << i + 1
        << " title " << plot::quote(labels[i] + " (recovered)") << ", " << d << " index " << i << " using " << xcol
        << ":4:(sprintf('%.2f', $1)) with labels offset 0,1 font ',8' notitle";
      if (with_pruned)
        s << ", " << d << " index " << i << " using " << xcol << ":3 with linespoints dt 2 pt 6 lc " << i + 1
          << " title " << plot::quote(labels[i] + " (pruned)");
    }
    return s.str();
  };
  const std::string on = common_measured_on(runs, true);
  const std::string ylabel = "top-1 accuracy (%), " + (on.empty() ? "on each run's test images (summary.md)" : on);
  std::ostringstream gp;
  gp << "set terminal pngcairo noenhanced size 1000,620 font 'sans,10'\nset grid\nset key outside right top\n"
     << "set offsets graph 0.05, graph 0.05, graph 0.08, graph 0.05\n"
     << "set output " << plot::quote(macs_png) << "\n"
     << "set title " << plot::quote(title + ": accuracy against non-zero MACs (labels: sparsity)") << "\n"
     << "set xlabel 'non-zero MACs per image (M)'\nset ylabel " << plot::quote(ylabel) << "\n"
     << "plot " << curves("2", true) << unpruned(1) << "\n"
     << "set output " << plot::quote(latency_png) << "\nset size 1,1\nset tmargin 3\n"
     << "set multiplot layout 1,2 title " << plot::quote(title + ": accuracy against latency (recovered models)")
     << "\nunset title\nset key inside bottom right font ',8'\nset xlabel 'latency at batch 1, median (ms)'\nplot "
     << curves("5", false) << unpruned(2) << "\n"
     << "set xlabel 'latency per image at batch " << base.large_batch << ", median (ms)'\nplot " << curves("6", false)
     << unpruned(3) << "\nunset multiplot\n";
  return plot::draw(dir, stem, gp.str(), dat.str(), macs_png + " and " + latency_png, *spdlog::default_logger());
}

// Two MAC counts within 0.5% of each other are one cost level.
bool same_cost(double a, double b) { return std::abs(a - b) <= 0.005 * std::max(std::abs(a), std::abs(b)); }

// Points (cost, value) with costs within 0.5% merged into their mean, ascending.
std::vector<std::pair<double, double>> merge_levels(std::vector<std::pair<double, double>> points) {
  std::sort(points.begin(), points.end());
  std::vector<std::pair<double, double>> out;
  size_t i = 0;
  while (i < points.size()) {
    size_t j = i;
    double cost = 0, value = 0;
    while (j < points.size() && same_cost(points[i].first, points[j].first)) {
      cost += points[j].first;
      value += points[j].second;
      ++j;
    }
    out.emplace_back(cost / double(j - i), value / double(j - i));
    i = j;
  }
  return out;
}

// The "At equal MACs" section of summary.md; "" with fewer than two methods.
std::string equal_macs_markdown(const std::vector<EqualMacsRow>& rows, const std::vector<std::string>& labels) {
  if (labels.size() < 2 || rows.empty()) return "";
  std::ostringstream md;
  md << "\n## At equal MACs\n\nTop-1 accuracy (%) after recovery (after pruning for runs without recovery) of each "
        "method at the non-zero MACs of every run: `~` marks a value interpolated linearly in MACs between the "
        "method's two runs around that cost, `-` a cost outside the method's runs (never extrapolated); runs of one "
        "method at one cost (seeds) are averaged.\n\n";
  // One column per method, keyed by its position (labels may hold dots, which Table reads as nesting).
  std::vector<Column> columns{{"macs_m", "", "MACs (M)", Table::fixed_cell("macs_m", 2)}};
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string key = "m" + std::to_string(i);
    columns.emplace_back(key, "", labels[i], [key](const json& row) {
      const json* cell = Table::find(row, key);
      if (!cell) return std::string("-");
      return ((*cell)["interpolated"].get<bool>() ? "~" : "") + Table::fixed((*cell)["accuracy"].get<double>(), 2);
    });
  }
  Table t(columns);
  for (const auto& r : rows) {
    json row{{"macs_m", r.macs / 1e6}};
    for (size_t i = 0; i < labels.size(); ++i)
      if (auto it = r.methods.find(labels[i]); it != r.methods.end())
        row["m" + std::to_string(i)] = {{"accuracy", it->second.accuracy}, {"interpolated", it->second.interpolated}};
    t.add_row(row);
  }
  return md.str() + t.markdown();
}

}  // namespace

std::vector<EqualMacsRow> equal_macs(const std::vector<RunSummary>& runs) {
  std::vector<std::pair<double, double>> all;
  std::map<std::string, std::vector<std::pair<double, double>>> by_method;
  for (const auto& r : runs) {
    const double acc = std::isnan(r.acc_recovered) ? r.acc_pruned : r.acc_recovered;
    all.emplace_back(r.nonzero_macs, 0.0);
    by_method[r.label].emplace_back(r.nonzero_macs, acc);
  }
  for (auto& [label, points] : by_method) points = merge_levels(points);
  std::vector<EqualMacsRow> rows;
  for (const auto& level : merge_levels(all)) {
    EqualMacsRow row;
    row.macs = level.first;
    for (const auto& [label, points] : by_method) {
      for (size_t i = 0; i < points.size(); ++i) {
        if (same_cost(points[i].first, row.macs)) {
          row.methods[label] = {points[i].second, false};
          break;
        }
        if (i + 1 < points.size() && points[i].first < row.macs && row.macs < points[i + 1].first &&
            !same_cost(points[i + 1].first, row.macs)) {
          const double t = (row.macs - points[i].first) / (points[i + 1].first - points[i].first);
          row.methods[label] = {points[i].second + t * (points[i + 1].second - points[i].second), true};
          break;
        }
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::optional<RunSummary> read_run(const fs::path& report_json, const std::string& run) {
  auto file = JsonFile::open(report_json);
  if (!file) return std::nullopt;
  const JsonValue r = file->root();
  const JsonValue rows = r["rows"];
  const auto loaded = row_named(rows, "fine-tuned (loaded)");
  const auto pruned = row_named(rows, "pruned");
  const auto recovered = row_named(rows, "pruned + fine-tuned");
  if (!loaded || !pruned)
    throw DataError(report_json.string() + ": not the report of a pruning scenario (no 'pruned' row)");
  if (!r.has("method"))
    throw DataError(report_json.string() +
                    ": written by an older expctl (no 'method'); rerun its report stage: expctl run FILE --only "
                    "report --force");
  const JsonValue& last = recovered ? *recovered : *pruned;
  RunSummary s;
  s.run = run;
  s.report = report_json;
  s.scenario = r["scenario"].string();
  s.label = r["method.label"].string();
  s.sparsity = r.has("method.sparsity") ? r["method.sparsity"].number() : std::nan("");
  if (r.has("evaluation.measured_on")) {
    s.measured_on = r["evaluation.measured_on"].string();
    s.measured_on_short = r["evaluation.measured_on_short"].string();
  }
  s.acc_loaded = (*loaded)["accuracy"].number();
  s.acc_pruned = (*pruned)["accuracy"].number();
  s.acc_recovered = recovered ? (*recovered)["accuracy"].number() : std::nan("");
  s.params = last["nonzero_params"].number();
  s.size_mb = last["size_mb"].number();
  s.masked = last.has("masked") && last["masked"].boolean();
  s.compact_size_mb = s.masked ? last["compact_size_mb"].number() : s.size_mb;
  s.macs = last["macs"].number();
  s.nonzero_macs = last["nonzero_macs"].number();
  s.latency_b1_ms = last["latency_b1_ms.median"].number();
  s.large_batch = last["latency_large_batch.batch"].integer();
  s.latency_large_ms = last["latency_large_batch.median_ms_per_image"].number();
  s.base_macs = (*loaded)["macs"].number();
  s.base_latency_b1_ms = (*loaded)["latency_b1_ms.median"].number();
  s.base_latency_large_ms = (*loaded)["latency_large_batch.median_ms_per_image"].number();
  return s;
}

std::vector<fs::path> write_summary(const fs::path& dir, const std::string& title, const std::vector<RunSummary>& in,
                                    bool plot) {
  if (in.empty()) throw Error(title + ": no finished runs to summarise");
  std::vector<RunSummary> runs = in;
  std::stable_sort(runs.begin(), runs.end(), [](const RunSummary& a, const RunSummary& b) {
    if (a.label != b.label) return a.label < b.label;
    return a.sparsity < b.sparsity;
  });
  fs::create_directories(dir);
  const RunSummary& base = runs.front();
  const int64_t large = base.large_batch;
  const std::string on = common_measured_on(runs, false);

  Table table = summary_table(large, on.empty());
  for (const auto& r : runs) table.add_row(row_of(r));
  std::ostringstream md;
  md << "# " << title << "\n\n"
     << "Unpruned fine-tuned model: " << Table::fixed(base.acc_loaded, 2) << "% top-1 on " << base.measured_on << ", "
     << Table::fixed(base.base_macs / 1e6, 1) << " M MACs, " << Table::fixed(base.base_latency_b1_ms, 2)
     << " ms at batch 1, " << Table::fixed(base.base_latency_large_ms, 3) << " ms/img at batch " << large << ".\n\n"
     << table.markdown() << "\n- Accuracy: top-1 on "
     << (on.empty() ? "the test images named in each run's row (they differ between runs)" : on)
     << ", after pruning and after recovery (fine-tuning of the pruned model).\n- Non-zero MACs: "
        "multiply-accumulates with a non-zero weight, per image; for structured pruning they equal the MACs, for "
        "masks they show what sparse kernels could save while dense kernels still do all MACs.\n- Latency: median "
        "of the recovered model's forward passes, at batch 1 and per image at batch "
     << large << " (dense kernels: masked models are not faster).\n- Each run's own report (machine, threads, "
     << "calibration) is in the file listed in summary.csv.\n";
  std::vector<std::string> labels;
  for (const auto& r : runs)
    if (std::find(labels.begin(), labels.end(), r.label) == labels.end()) labels.push_back(r.label);
  const std::vector<EqualMacsRow> at_equal_macs = equal_macs(runs);
  md << equal_macs_markdown(at_equal_macs, labels);
  json j;
  j["title"] = title;
  j["baseline"] = {{"accuracy", base.acc_loaded},
                   {"macs", base.base_macs},
                   {"latency_b1_ms", base.base_latency_b1_ms},
                   {"latency_large_ms_per_image", base.base_latency_large_ms},
                   {"large_batch", large},
                   {"accuracy_measured_on", base.measured_on}};
  j["runs"] = table.json();
  Table equal_table({{"macs", "macs"}, {"method", "method"}, {"accuracy", "accuracy"}, {"interpolated", "interpolated"}});
  if (labels.size() >= 2) {
    json levels = json::array();
    for (const auto& r : at_equal_macs) {
      json m = json::object();
      for (const auto& [label, c] : r.methods) {
        m[label] = {{"accuracy", c.accuracy}, {"interpolated", c.interpolated}};
        equal_table.add_row({{"macs", r.macs}, {"method", label}, {"accuracy", c.accuracy}, {"interpolated", c.interpolated}});
      }
      levels.push_back({{"macs", r.macs}, {"methods", m}});
    }
    j["equal_macs"] = levels;
  }

  std::vector<fs::path> out{Naming::summary_file(dir, "md"), Naming::summary_file(dir, "csv"),
                            Naming::summary_file(dir, "json")};
  if (labels.size() >= 2) out.push_back(Naming::equal_macs_table(dir));
  if (plot && plot_summary(dir, title, runs)) {
    md << "\n![accuracy against MACs](" << Naming::summary_chart(dir, "macs").filename().string()
       << ")\n\n![accuracy against latency](" << Naming::summary_chart(dir, "latency").filename().string() << ")"
       << "\n\n*Top-1 accuracy on " << (on.empty() ? "each run's test images (see the table)" : on)
       << "; labels on the curves: sparsity.*\n";
    out.push_back(Naming::summary_chart(dir, "macs"));
    out.push_back(Naming::summary_chart(dir, "latency"));
  }
  write_file_atomic(Naming::summary_file(dir, "md"), md.str());
  write_file_atomic(Naming::summary_file(dir, "csv"), table.csv());
  write_file_atomic(Naming::summary_file(dir, "json"), j.dump(2) + "\n");
  if (labels.size() >= 2) write_file_atomic(Naming::equal_macs_table(dir), equal_table.csv());
  return out;
}

}  // namespace expctl::sweep
