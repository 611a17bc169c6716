#include "runner/sweep/summary.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/core/files.h"

namespace expctl::sweep {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

json method_info(const ScenarioConfig& cfg) {
  json m;
  m["scenario_method"] = cfg.method();
  m["label"] = cfg.method();
  if (!cfg.has_stage("prune")) return m;
  const Params& p = cfg.stage("prune");
  const std::string& pruner = p.get_string("pruner");
  m["pruner"] = pruner;
  const PrunerEntry* entry = PrunerRegistry::find(pruner);
  if (entry && entry->label) m["label"] = entry->label(p);
  for (const char* k : {"mode", "score", "scope"})
    if (p.has(k)) m[k] = p.get_string(k);
  if (p.has("mode") && p.get_string("mode") == "n:m" && p.has("n") && p.has("m"))
    m["sparsity"] = double(p.get_int("n")) / double(p.get_int("m"));
  else if (p.has("sparsity"))
    m["sparsity"] = p.get_float("sparsity");
  return m;
}

namespace {

std::string fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

const json* row_named(const json& rows, const std::string& name) {
  for (const auto& r : rows)
    if (r.value("model", "") == name) return &r;
  return nullptr;
}

std::string quote(const std::string& s) {  // for gnuplot single-quoted strings
  std::string out;
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out;
}

}  // namespace

std::optional<RunSummary> read_run(const fs::path& report_json, const std::string& run) {
  std::ifstream in(report_json);
  if (!in) return std::nullopt;
  json r;
  try {
    r = json::parse(in);
  } catch (const std::exception& e) {
    throw DataError(report_json.string() + ": not valid JSON: " + e.what());
  }
  try {
    const json& rows = r.at("rows");
    const json* loaded = row_named(rows, "fine-tuned (loaded)");
    const json* pruned = row_named(rows, "pruned");
    const json* recovered = row_named(rows, "pruned + fine-tuned");
    if (!loaded || !pruned)
      throw DataError(report_json.string() + ": not the report of a pruning scenario (no 'pruned' row)");
    if (!r.contains("method"))
      throw DataError(report_json.string() +
                      ": written by an older expctl (no 'method'); rerun its report stage: expctl run FILE --only "
                      "report --force");
    const json& last = recovered ? *recovered : *pruned;
    RunSummary s;
    s.run = run;
    s.report = report_json;
    s.scenario = r.at("scenario").get<std::string>();
    s.label = r["method"].at("label").get<std::string>();
    s.sparsity = r["method"].value("sparsity", std::nan(""));
    s.acc_loaded = loaded->at("accuracy").get<double>();
    s.acc_pruned = pruned->at("accuracy").get<double>();
    s.acc_recovered = recovered ? recovered->at("accuracy").get<double>() : std::nan("");
    s.params = last.at("nonzero_params").get<double>();
    s.size_mb = last.at("size_mb").get<double>();
    s.masked = last.value("masked", false);
    s.compact_size_mb = s.masked ? last.at("compact_size_mb").get<double>() : s.size_mb;
    s.macs = last.at("macs").get<double>();
    s.nonzero_macs = last.at("nonzero_macs").get<double>();
    s.latency_b1_ms = last.at("latency_b1_ms").at("median").get<double>();
    s.large_batch = last.at("latency_large_batch").at("batch").get<int64_t>();
    s.latency_large_ms = last.at("latency_large_batch").at("median_ms_per_image").get<double>();
    s.base_macs = loaded->at("macs").get<double>();
    s.base_latency_b1_ms = loaded->at("latency_b1_ms").at("median").get<double>();
    s.base_latency_large_ms = loaded->at("latency_large_batch").at("median_ms_per_image").get<double>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw DataError(report_json.string() + ": missing or malformed field: " + e.what());
  }
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

  std::ostringstream md, csv;
  md << "# " << title << "\n\n"
     << "Unpruned fine-tuned model: " << fixed(base.acc_loaded, 2) << "% top-1, " << fixed(base.base_macs / 1e6, 1)
     << " M MACs, " << fixed(base.base_latency_b1_ms, 2) << " ms at batch 1, " << fixed(base.base_latency_large_ms, 3)
     << " ms/img at batch " << large << ".\n\n"
     << "| Method | Sparsity | Run | Acc. pruned (%) | Acc. recovered (%) | Params (M) | Size (MB) | Compact (MB) | "
        "MACs (M) | Non-zero MACs (M) | Latency b1 (ms) | Latency b"
     << large << " (ms/img) |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  csv << "method,sparsity,run,scenario,accuracy_loaded,accuracy_pruned,accuracy_recovered,nonzero_params,size_mb,"
         "compact_size_mb,macs,nonzero_macs,latency_b1_median_ms,large_batch,latency_large_median_ms_per_image,"
         "report\n";
  json j;
  j["title"] = title;
  j["baseline"] = {{"accuracy", base.acc_loaded},
                   {"macs", base.base_macs},
                   {"latency_b1_ms", base.base_latency_b1_ms},
                   {"latency_large_ms_per_image", base.base_latency_large_ms},
                   {"large_batch", large}};
  j["runs"] = json::array();
  for (const auto& r : runs) {
    md << "| " << r.label << " | " << fixed(r.sparsity, 2) << " | " << r.run << " | " << fixed(r.acc_pruned, 2)
       << " | " << fixed(r.acc_recovered, 2) << " | " << fixed(r.params / 1e6, 2) << " | " << fixed(r.size_mb, 2)
       << " | " << (r.masked ? fixed(r.compact_size_mb, 2) : "-") << " | " << fixed(r.macs / 1e6, 1) << " | "
       << fixed(r.nonzero_macs / 1e6, 1) << " | " << fixed(r.latency_b1_ms, 2) << " | "
       << fixed(r.latency_large_ms, 3) << " |\n";
    auto num = [](double v) { return std::isnan(v) ? std::string() : json(v).dump(); };
    csv << '"' << r.label << "\"," << num(r.sparsity) << ",\"" << r.run << "\"," << r.scenario << ","
        << num(r.acc_loaded) << "," << num(r.acc_pruned) << "," << num(r.acc_recovered) << "," << num(r.params)
        << "," << num(r.size_mb) << "," << num(r.compact_size_mb) << "," << num(r.macs) << ","
        << num(r.nonzero_macs) << "," << num(r.latency_b1_ms) << "," << r.large_batch << ","
        << num(r.latency_large_ms) << ",\"" << r.report.string() << "\"\n";
    json e;
    e["method"] = r.label;
    e["sparsity"] = std::isnan(r.sparsity) ? json(nullptr) : json(r.sparsity);
    e["run"] = r.run;
    e["scenario"] = r.scenario;
    e["accuracy_loaded"] = r.acc_loaded;
    e["accuracy_pruned"] = r.acc_pruned;
    e["accuracy_recovered"] = std::isnan(r.acc_recovered) ? json(nullptr) : json(r.acc_recovered);
    e["nonzero_params"] = r.params;
    e["size_mb"] = r.size_mb;
    e["compact_size_mb"] = r.compact_size_mb;
    e["macs"] = r.macs;
    e["nonzero_macs"] = r.nonzero_macs;
    e["latency_b1_median_ms"] = r.latency_b1_ms;
    e["large_batch"] = r.large_batch;
    e["latency_large_median_ms_per_image"] = r.latency_large_ms;
    e["report"] = r.report.string();
    j["runs"].push_back(e);
  }
  md << "\n- Accuracy: top-1 on the full test split, after pruning and after recovery (fine-tuning of the pruned "
        "model).\n- Non-zero MACs: multiply-accumulates with a non-zero weight, per image; for structured pruning "
        "they equal the MACs, for masks they show what sparse kernels could save while dense kernels still do all "
        "MACs.\n- Latency: median of the recovered model's forward passes, at batch 1 and per image at batch "
     << large << " (dense kernels: masked models are not faster).\n- Each run's own report (machine, threads, "
     << "calibration) is in the file listed in summary.csv.\n";

  std::vector<fs::path> out{dir / "summary.md", dir / "summary.csv", dir / "summary.json"};
  if (plot) {
    // One gnuplot data block per method: sparsity, non-zero MACs (M), acc pruned, acc recovered, latencies.
    std::vector<std::string> labels;
    std::ostringstream dat;
    for (const auto& r : runs) {
      if (labels.empty() || labels.back() != r.label) {
        if (!labels.empty()) dat << "\n\n";
        labels.push_back(r.label);
        dat << "# " << r.label << "\n";
      }
      auto g = [](double v) { return std::isnan(v) ? std::string("NaN") : json(v).dump(); };
      dat << g(r.sparsity) << " " << g(r.nonzero_macs / 1e6) << " " << g(r.acc_pruned) << " " << g(r.acc_recovered)
          << " " << g(r.latency_b1_ms) << " " << g(r.latency_large_ms) << "\n";
    }
    // The last block: the unpruned model (non-zero MACs, latencies, accuracy).
    dat << "\n\n# unpruned\n" << json(base.base_macs / 1e6).dump() << " " << json(base.base_latency_b1_ms).dump() << " "
        << json(base.base_latency_large_ms).dump() << " " << json(base.acc_loaded).dump() << "\n";
    const fs::path data = dir / "summary.dat";
    std::ofstream(data) << dat.str();
    const std::string d = "'" + quote(data.string()) + "'";
    auto unpruned = [&](int xcol) {
      return ", " + d + " index " + std::to_string(labels.size()) + " using " + std::to_string(xcol) +
             ":4 with points pt 3 ps 2 lc rgb 'black' title 'unpruned'";
    };
    auto curves = [&](const std::string& xcol, bool with_pruned) {
      std::ostringstream s;
      for (size_t i = 0; i < labels.size(); ++i) {
        s << (i ? ", " : "") << d << " index " << i << " using " << xcol << ":4 with linespoints lw 2 pt 7 lc " << i + 1
          << " title '" << quote(labels[i]) << " (recovered)', " << d << " index " << i << " using " << xcol
          << ":4:(sprintf('%.2f', $1)) with labels offset 0,1 font ',8' notitle";
        if (with_pruned)
          s << ", " << d << " index " << i << " using " << xcol << ":3 with linespoints dt 2 pt 6 lc " << i + 1
            << " title '" << quote(labels[i]) << " (pruned)'";
      }
      return s.str();
    };
    std::ostringstream gp;
    gp << "set terminal pngcairo size 1000,620 font 'sans,10'\nset grid\nset key outside right top\n"
       << "set offsets graph 0.05, graph 0.05, graph 0.08, graph 0.05\n"
       << "set output '" << quote((dir / "accuracy_vs_macs.png").string()) << "'\n"
       << "set title '" << quote(title) << ": accuracy against non-zero MACs (labels: sparsity)'\n"
       << "set xlabel 'non-zero MACs per image (M)'\nset ylabel 'top-1 accuracy (%)'\n"
       << "plot " << curves("2", true) << unpruned(1) << "\n"
       << "set output '" << quote((dir / "accuracy_vs_latency.png").string()) << "'\nset size 1,1\nset tmargin 3\n"
       << "set multiplot layout 1,2 title '" << quote(title) << ": accuracy against latency (recovered models)'\n"
       << "unset title\nset key inside bottom right font ',8'\nset xlabel 'latency at batch 1, median (ms)'\nplot "
       << curves("5", false) << unpruned(2) << "\n"
       << "set xlabel 'latency per image at batch " << large << ", median (ms)'\nplot " << curves("6", false)
       << unpruned(3) << "\nunset multiplot\n";
    const fs::path script = dir / "summary.gp";
    std::ofstream(script) << gp.str();
    if (std::system(("gnuplot '" + script.string() + "' 2>&1").c_str()) == 0) {
      md << "\n![accuracy against MACs](accuracy_vs_macs.png)\n\n![accuracy against latency](accuracy_vs_latency.png)\n";
      out.push_back(dir / "accuracy_vs_macs.png");
      out.push_back(dir / "accuracy_vs_latency.png");
    } else {
      spdlog::warn("gnuplot failed or is missing; no plots in {} (scripts/install-deps.sh installs it)", dir.string());
    }
  }
  write_file_atomic(dir / "summary.md", md.str());
  write_file_atomic(dir / "summary.csv", csv.str());
  write_file_atomic(dir / "summary.json", j.dump(2) + "\n");
  return out;
}

}  // namespace expctl::sweep
