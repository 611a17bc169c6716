// report stage: measures every model of the scenario the same way (size, MACs/FLOPs, latency; accuracy as the
// training and pruning stages measured it on the full test split) and writes the comparison table to the console
// and to report.md, report.csv and report.json, with the training curves drawn by gnuplot.
//
// Rows: fine-tuning scenario: before fine-tuning, fine-tuned. Pruning scenario: fine-tuned (loaded), pruned,
// pruned + fine-tuned.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/pipeline.h"
#include "runner/data/datasets.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "runner/stages/trainer.h"
#include "runner/sweep/summary.h"

namespace expctl {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

struct Row {
  std::string label;
  fs::path checkpoint;
  json accuracy;  // {"accuracy": %, "held_out": {...}?}
};

json read_json(const fs::path& f) {
  std::ifstream in(f);
  if (!in) throw Error(f.string() + ": missing; run the stage that writes it first (or the whole scenario)");
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    throw DataError(f.string() + ": not valid JSON: " + e.what());
  }
}

// The metrics files of the scenario's training and pruning stages, read once, by stage name.
std::map<std::string, json> stage_metrics(const ScenarioConfig& cfg, const Naming& n) {
  std::map<std::string, json> out;
  for (const char* stage : {"finetune", "prune", "recover"})
    if (cfg.has_stage(stage)) out[stage] = read_json(n.report_dir() / (std::string(stage) + "_metrics.json"));
  if (out.empty())
    throw Error(cfg.file.string() + ": the report needs a finetune, prune or recover stage to report on");
  return out;
}

std::vector<Row> rows_of(const std::map<std::string, json>& metrics, const Naming& n) {
  std::vector<Row> rows;
  if (auto it = metrics.find("finetune"); it != metrics.end()) {
    const json& m = it->second;
    rows.push_back({"before fine-tuning", m.at("initial").get<std::string>(), m.at("before")});
    rows.push_back({"fine-tuned", m.at("checkpoint").get<std::string>(), m.at("after")});
  }
  if (auto it = metrics.find("prune"); it != metrics.end()) {
    const json& m = it->second;
    rows.push_back({"fine-tuned (loaded)", m.at("source_checkpoint").get<std::string>(), m.at("before")});
    rows.push_back({"pruned", n.pruned_checkpoint(), m.at("after")});
  }
  if (auto it = metrics.find("recover"); it != metrics.end()) {
    const json& m = it->second;
    rows.push_back({"pruned + fine-tuned", m.at("checkpoint").get<std::string>(), m.at("after")});
  }
  return rows;
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string ratio(double v, double base) { return base > 0 ? "x" + fixed(v / base, 2) : "-"; }

// The training curves (loss and test accuracy per epoch) of the finetune/recover stages, drawn by gnuplot.
bool plot_curves(const fs::path& dir, const std::vector<std::pair<std::string, json>>& histories, spdlog::logger& log) {
  if (histories.empty()) return false;
  fs::path data = dir / "training_curves.dat", script = dir / "training_curves.gp";
  {
    std::ofstream d(data);
    for (const auto& [name, h] : histories) {
      d << "# " << name << "\n";
      for (const auto& r : h)
        d << r["epoch"].get<int64_t>() << " " << r["train_loss"].get<double>() << " " << r["test_loss"].get<double>()
          << " " << r["train_accuracy"].get<double>() << " " << r["test_accuracy"].get<double>() << "\n";
      d << "\n\n";
    }
  }
  std::ofstream g(script);
  g << "set terminal pngcairo size 1200,480 font 'sans,10'\nset output '" << (dir / "training_curves.png").string()
    << "'\nset multiplot layout 1,2\nset grid\nset xlabel 'epoch'\nset xtics 1\nset key top right\n"
    << "set title 'loss (training loss includes label smoothing)'\nplot ";
  for (size_t i = 0; i < histories.size(); ++i)
    g << (i ? ", " : "") << "'" << data.string() << "' index " << i << " using 1:2 with linespoints title '"
      << histories[i].first << " train', '' index " << i << " using 1:3 with linespoints title '" << histories[i].first
      << " test'";
  g << "\nset title 'accuracy (%)'\nset key bottom right\nplot ";
  for (size_t i = 0; i < histories.size(); ++i)
    g << (i ? ", " : "") << "'" << data.string() << "' index " << i << " using 1:4 with linespoints title '"
      << histories[i].first << " train', '' index " << i << " using 1:5 with linespoints title '" << histories[i].first
      << " test'";
  g << "\nunset multiplot\n";
  g.close();
  int rc = std::system(("gnuplot '" + script.string() + "' 2>&1").c_str());
  if (rc != 0) {
    log.warn("gnuplot failed or is missing (exit {}); no training_curves.png (scripts/install-deps.sh installs it)",
             rc);
    return false;
  }
  return true;
}

// Per-layer pruning statistics from prune_metrics.json: a Markdown table and a gnuplot chart (channels kept and
// coverage per group for structured pruning, sparsity per layer for masks).
std::string pruning_section(const json& stats, const fs::path& dir, bool plot, spdlog::logger& log,
                            std::vector<fs::path>& outputs) {
  std::ostringstream md, dat;
  std::string chart;
  if (stats.contains("groups")) {
    md << "\n## Channels per group\n\n| group | channels | kept | mean coverage | covered fraction "
          "|\n|---|---:|---:|---:|---:|\n";
    for (auto it = stats["groups"].begin(); it != stats["groups"].end(); ++it) {
      const json& g = it.value();
      auto num = [&](const char* k, int d) {
        return g.contains(k) && g[k].is_number() ? fixed(g[k].get<double>(), d) : std::string("-");
      };
      md << "| " << it.key() << " | " << num("size", 0) << " | " << num("kept", 0) << " | " << num("mean_coverage", 3)
         << " | " << num("covered_fraction", 3) << " |\n";
      dat << '"' << it.key() << "\" " << g.value("size", 0) << " " << g.value("kept", g.value("size", 0)) << " "
          << (g.contains("mean_coverage") ? g["mean_coverage"].get<double>() : 0.0) << "\n";
    }
    chart =
        "set title 'channels per group: before, kept (bars); mean coverage (line)'\nset style data histograms\n"
        "set style histogram clustered\nset style fill solid 0.6\nset xtics rotate by -60\nset ylabel 'channels'\n"
        "set y2label 'coverage'\nset y2range [0:1]\nset y2tics\n"
        "plot DATA using 2:xtic(1) title 'channels', '' using 3 title 'kept', '' using 0:4 axes x1y2 with "
        "linespoints lw 2 title 'mean coverage'\n";
  } else if (stats.contains("layers")) {
    md << "\n## Sparsity per layer\n\n| layer | weights | zeros | sparsity |\n|---|---:|---:|---:|\n";
    for (auto it = stats["layers"].begin(); it != stats["layers"].end(); ++it) {
      const json& l = it.value();
      if (l.contains("skipped")) {
        md << "| " << it.key() << " | " << l.value("weights", 0) << " | - | not pruned ("
           << l["skipped"].get<std::string>() << ") |\n";
        dat << '"' << it.key() << "\" 0\n";
        continue;
      }
      md << "| " << it.key() << " | " << l.value("weights", 0) << " | " << l.value("zeros", 0) << " | "
         << fixed(l.value("sparsity", 0.0), 4) << " |\n";
      dat << '"' << it.key() << "\" " << l.value("sparsity", 0.0) << "\n";
    }
    if (stats.contains("overall"))
      for (auto it = stats["overall"].begin(); it != stats["overall"].end(); ++it)
        md << "\nOverall sparsity over "
           << (it.key() == "pruned_layers" ? "the pruned layers" : "all conv/linear weights") << ": "
           << fixed(it.value().value("sparsity", 0.0), 4) << " (" << it.value().value("zeros", 0) << " of "
           << it.value().value("weights", 0) << " weights).";
    md << "\n";
    chart =
        "set title 'sparsity per layer'\nset style data histograms\nset style fill solid 0.6\n"
        "set xtics rotate by -60\nset yrange [0:1]\nplot DATA using 2:xtic(1) notitle\n";
  } else {
    return "";
  }
  if (plot) {
    const fs::path data = dir / "pruning_layers.dat", png = dir / "pruning_layers.png",
                   script = dir / "pruning_layers.gp";
    std::ofstream(data) << dat.str();
    std::string body = chart;
    body.replace(body.find("DATA"), 4, "'" + data.string() + "'");
    std::ofstream(script) << "set terminal pngcairo size 1200,520 font 'sans,9'\nset output '" << png.string()
                          << "'\nset grid ytics\nset key top right\n"
                          << body;
    if (std::system(("gnuplot '" + script.string() + "' 2>&1").c_str()) == 0) {
      md << "\n![per-layer pruning](pruning_layers.png)\n";
      outputs.push_back(png);
    } else {
      log.warn("gnuplot failed or is missing; no pruning_layers.png");
    }
  }
  return md.str();
}

class ReportStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    const ScenarioConfig& cfg = ctx.config;
    const Params& p = ctx.params;
    torch::Device device = prepare_runtime(cfg, *ctx.log);
    const data::DatasetInfo& info = data::dataset_entry(cfg).describe();
    const int64_t large = p.get_int("latency.large_batch");
    const std::map<std::string, json> stages = stage_metrics(cfg, ctx.naming);
    std::vector<Row> rows = rows_of(stages, ctx.naming);

    json report;
    report["scenario"] = ctx.naming.scenario_name();
    report["file"] = cfg.file.string();
    report["method"] = sweep::method_info(cfg);
    if (!cfg.sweep_cell.empty()) report["sweep_cell"] = {{"id", cfg.sweep_cell}, {"settings", cfg.sweep_values}};
    report["environment"] = metrics::environment_info(device, at::get_num_threads());
    report["seed"] = cfg.runtime.get_int("seed");
    report["input"] = {info.channels, info.height, info.width};
    if (stages.count("prune")) report["calibration"] = stages.at("prune").at("calibration");
    report["rows"] = json::array();
    bool masked = false;
    for (const Row& r : rows) {
      models::Checkpoint ck;
      models::ResNet model = models::load_checkpoint(r.checkpoint, &ck);
      model->to(device);
      const bool has_masks = !ck.masks.is_empty();
      masked = masked || has_masks;
      metrics::ParamCount count = metrics::count_parameters(*model);
      metrics::ModelSize size = metrics::model_size(*model);
      metrics::MacsReport ops = metrics::count_macs(model, info.height, info.width);
      metrics::LatencyOptions lo;
      lo.height = info.height;
      lo.width = info.width;
      lo.warmup = static_cast<int>(p.get_int("latency.warmup"));
      lo.repeats = static_cast<int>(p.get_int("latency.repeats"));
      metrics::LatencyStats b1 = metrics::measure_latency(model, lo, device);
      lo.batch = large;
      lo.warmup = std::min(lo.warmup, 3);
      lo.repeats = static_cast<int>(p.get_int("latency.large_batch_repeats"));
      metrics::LatencyStats bn = metrics::measure_latency(model, lo, device);
      json row;
      row["model"] = r.label;
      row["checkpoint"] = r.checkpoint.string();
      row["accuracy"] = r.accuracy.at("accuracy");
      if (r.accuracy.contains("held_out")) row["accuracy_held_out"] = r.accuracy["held_out"]["accuracy"];
      row["params"] = count.total;
      row["nonzero_params"] = count.nonzero;
      row["size_mb"] = size.dense_mb();
      row["masked"] = has_masks;
      row["compact_size_mb"] = size.compact_mb();
      row["macs"] = ops.macs;
      row["flops"] = ops.flops();
      row["nonzero_macs"] = ops.nonzero_macs;
      row["latency_b1_ms"] = {
          {"median", b1.median_ms}, {"mean", b1.mean_ms}, {"p95", b1.p95_ms}, {"repeats", b1.repeats}};
      row["latency_large_batch"] = {
          {"batch", large},        {"median_ms", bn.median_ms}, {"median_ms_per_image", bn.median_ms / double(large)},
          {"mean_ms", bn.mean_ms}, {"p95_ms", bn.p95_ms},       {"repeats", bn.repeats}};
      report["rows"].push_back(row);
      ctx.log->info("measured {}: {}", r.label, r.checkpoint.string());
    }
    report["peak_memory_mb"] = metrics::peak_memory_mb();

    std::vector<std::pair<std::string, json>> histories;
    for (const char* stage : {"finetune", "recover"})
      if (stages.count(stage)) histories.emplace_back(stage, stages.at(stage)["history"]);
    const fs::path dir = ctx.naming.report_dir();
    bool plotted = p.get_bool("plot") && plot_curves(dir, histories, *ctx.log);

    // The table, once for the console/Markdown and once for CSV.
    std::vector<std::string> head{
        "Model",    "Accuracy (%)", "Params (M)",      "Size (MB)",
        "MACs (G)", "FLOPs (G)",    "Latency b1 (ms)", "Latency b" + std::to_string(large) + " (ms/img)"};
    if (masked) {
      head.insert(head.begin() + 4, "Compact size (MB)");
      head.insert(head.begin() + 7, "Non-zero MACs (G)");
    }
    std::vector<std::vector<std::string>> table{head};
    std::ostringstream csv;
    csv << "model,accuracy,accuracy_held_out,params,nonzero_params,size_mb,compact_size_mb,macs,flops,nonzero_macs,"
           "latency_b1_median_ms,latency_b1_mean_ms,latency_b1_p95_ms,large_batch,latency_large_median_ms_per_image\n";
    const json& base = report["rows"][0];
    for (const json& r : report["rows"]) {
      double acc = r["accuracy"].get<double>(), acc0 = base["accuracy"].get<double>();
      std::string acc_text = fixed(acc, 2);
      if (&r != &base) acc_text += " (" + std::string(acc >= acc0 ? "+" : "") + fixed(acc - acc0, 2) + ")";
      std::vector<std::string> cells{
          r["model"].get<std::string>(),
          acc_text,
          fixed(r["params"].get<double>() / 1e6, 2) + " " +
              ratio(r["params"].get<double>(), base["params"].get<double>()),
          fixed(r["size_mb"].get<double>(), 2),
          fixed(r["macs"].get<double>() / 1e9, 3) + " " + ratio(r["macs"].get<double>(), base["macs"].get<double>()),
          fixed(r["flops"].get<double>() / 1e9, 3),
          fixed(r["latency_b1_ms"]["median"].get<double>(), 2) + " (mean " +
              fixed(r["latency_b1_ms"]["mean"].get<double>(), 2) + ", p95 " +
              fixed(r["latency_b1_ms"]["p95"].get<double>(), 2) + ")",
          fixed(r["latency_large_batch"]["median_ms_per_image"].get<double>(), 3)};
      if (masked) {
        // A dense model stored "compactly" would only grow by its masks: the column is for masked rows.
        cells.insert(cells.begin() + 4, r["masked"].get<bool>() ? fixed(r["compact_size_mb"].get<double>(), 2) : "-");
        cells.insert(cells.begin() + 7, fixed(r["nonzero_macs"].get<double>() / 1e9, 3));
      }
      table.push_back(cells);
      csv << '"' << r["model"].get<std::string>() << "\"," << acc << ","
          << (r.contains("accuracy_held_out") ? r["accuracy_held_out"].dump() : "") << "," << r["params"] << ","
          << r["nonzero_params"] << "," << r["size_mb"] << "," << r["compact_size_mb"] << "," << r["macs"] << ","
          << r["flops"] << "," << r["nonzero_macs"] << "," << r["latency_b1_ms"]["median"] << ","
          << r["latency_b1_ms"]["mean"] << "," << r["latency_b1_ms"]["p95"] << "," << large << ","
          << r["latency_large_batch"]["median_ms_per_image"] << "\n";
    }
    std::vector<size_t> w(head.size(), 0);
    for (const auto& row : table)
      for (size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
    std::ostringstream console, md;
    for (size_t r = 0; r < table.size(); ++r) {
      md << "|";
      for (size_t i = 0; i < table[r].size(); ++i) {
        console << std::left << std::setw(int(w[i]) + 2) << table[r][i];
        md << " " << table[r][i] << " |";
      }
      console << "\n";
      md << "\n";
      if (r == 0) {
        md << "|";
        for (size_t i = 0; i < head.size(); ++i) md << (i ? "---:|" : "---|");
        md << "\n";
      }
    }
    std::fprintf(stderr, "\n%s\n%s\n", ctx.naming.scenario_name().c_str(), console.str().c_str());

    const json& env = report["environment"];
    std::ostringstream doc;
    doc << "# " << ctx.naming.scenario_name()
        << (cfg.sweep_cell.empty() ? std::string() : " (sweep cell " + cfg.sweep_cell + ")") << "\n\n"
        << "Scenario file `" << cfg.file.string() << "`, seed " << cfg.runtime.get_int("seed") << ". Input "
        << info.channels << "x" << info.height << "x" << info.width << ".\n\n"
        << md.str() << "\n"
        << "- Accuracy: top-1 on the full test split (" << base["model"].get<std::string>()
        << " first; changes in percentage points against it).";
    if (report.contains("calibration"))
      doc << " Calibration: " << report["calibration"]["source"].get<std::string>() << "."
          << (base.contains("accuracy_held_out") ? " Accuracy on the test images not used for calibration: see "
                                                   "report.json (accuracy_held_out)."
                                                 : "");
    doc << "\n- Size: bytes of the saved weights / 2^20."
        << (masked ? " Compact size: non-zero weights as fp32 values plus a 1-bit mask per weight." : "")
        << "\n- MACs: multiply-accumulates of the conv and linear layers for one image; FLOPs = 2 x MACs."
        << "\n- Latency: median over " << p.get_int("latency.repeats") << " timed forward passes at batch 1 after "
        << p.get_int("latency.warmup")
        << " warm-up passes (mean and p95 beside it), and median time per image at batch " << large << ".\n";
    if (masked)
      doc << "\nUnstructured sparsity zeroes weights but keeps tensor shapes, so dense kernels do the same work: the "
             "non-zero MACs and the compact size show what sparse kernels could save, while latency and the saved "
             "size stay those of the dense model. A 2:4 pattern would run faster only on GPUs with sparse tensor "
             "cores (NVIDIA Ampere or later, through cuSPARSELt), which this build does not use.\n";
    auto field = [&](const char* k) {
      return env.contains(k) ? (env[k].is_string() ? env[k].get<std::string>() : env[k].dump()) : std::string("?");
    };
    doc << "\nMachine: " << field("host") << ", " << field("cpu_model") << ", " << field("logical_cores")
        << " logical cores, " << field("memory_mb") << " MB, " << field("os") << ". Device " << field("device_name")
        << " (" << field("device") << "), LibTorch " << field("libtorch") << ", " << field("intra_op_threads")
        << " threads, BLAS " << field("blas") << ", load average " << field("load_average_1m")
        << " while measuring. Peak memory " << fixed(report["peak_memory_mb"].get<double>(), 0) << " MB";
    if (env.contains("cuda_peak_allocated_mb"))
      doc << ", GPU " << fixed(env["cuda_peak_allocated_mb"].get<double>(), 0) << " MB allocated ("
          << fixed(env["cuda_peak_reserved_mb"].get<double>(), 0) << " MB reserved)";
    doc << ". All details in report.json.\n";
    if (plotted) doc << "\n![training curves](training_curves.png)\n";
    std::vector<fs::path> extra_outputs;
    if (stages.count("prune"))
      doc << pruning_section(stages.at("prune")["stats"], dir, p.get_bool("plot"), *ctx.log, extra_outputs);

    write_file_atomic(dir / "report.md", doc.str());
    write_file_atomic(dir / "report.csv", csv.str());
    write_file_atomic(dir / "report.json", report.dump(2) + "\n");
    ctx.outputs = {dir / "report.md", dir / "report.csv", dir / "report.json"};
    if (plotted) ctx.outputs.push_back(dir / "training_curves.png");
    ctx.outputs.insert(ctx.outputs.end(), extra_outputs.begin(), extra_outputs.end());
  }
};

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
  t.add_int("latency.repeats", 50, "timed forward passes at batch 1 (median, mean and p95 reported)")
      .min(1)
      .max(100000);
  t.add_int("latency.large_batch", 128, "the large batch size timed beside batch 1").min(1).max(65536);
  t.add_int("latency.large_batch_repeats", 10, "timed forward passes at the large batch").min(1).max(100000);
  t.add_bool("plot", true, "draw the training curves (gnuplot)");
  e.plan = plan;
  e.create = [] { return std::make_unique<ReportStage>(); };
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
