// report stage: measures every model of the scenario the same way (size, MACs/FLOPs, latency; accuracy as the
// training and pruning stages measured it on the scenario's test images) and writes the comparison table to the
// console and to report.md, report.csv and report.json, with the training curves drawn by gnuplot.
//
// Rows: fine-tuning scenario: before fine-tuning, fine-tuned. Pruning scenario: fine-tuned (loaded), pruned,
// pruned + fine-tuned.
#include "runner/stages/report.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "plugins/pruner.h"
#include "runner/core/error.h"
#include "runner/core/hash.h"
#include "runner/core/json_file.h"
#include "runner/core/plot.h"
#include "runner/core/table.h"
#include "runner/data/registry.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "runner/models/deployment.h"
#include "runner/models/torchscript_export.h"
#include "runner/pipeline/pipeline.h"
#include "runner/stages/report_coverage.h"
#include "runner/training/runtime.h"

namespace expctl {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

using Metrics = std::map<std::string, JsonFile>;  // the training and pruning stages' metrics files, by stage

struct Row {
  std::string label;
  fs::path checkpoint;
  JsonValue accuracy;    // {"accuracy": %, "images": N, "held_out": {...}?}
  std::string sha256;    // the checkpoint's SHA-256 when the stage measured it ("": not recorded)
  std::string recorded;  // the metrics file that recorded it
  bool pruned = false;   // the pruned model, or it fine-tuned: it has the pruned model's structure
};

// What the accuracies were measured on: the test split, or the subset dataset.test_subset made of it
// (data::load_dataset), and the test images calibration left when it took test images.
struct Evaluation {
  int64_t images = 0;    // test images evaluated (0: the metrics files do not say)
  int64_t subset = 0;    // dataset.test_subset when it made a subset
  std::string on;        // "the test split (10,000 images)"
  std::string on_short;  // for charts: "test split, 10,000 images"
  int64_t held_out_images = 0;
  std::string held_out;  // "the 9,936 test images not used for calibration (...)"; "" when none were held out
  std::string note;      // calibration used every test image

  json to_json() const {
    json j{{"split", "test"},
           {"images", images ? json(images) : json(nullptr)},
           {"test_subset", subset},
           {"measured_on", on},
           {"measured_on_short", on_short}};
    if (!held_out.empty()) j["held_out"] = {{"images", held_out_images}, {"measured_on", held_out}};
    if (!note.empty()) j["note"] = note;
    return j;
  }
};

std::string count(int64_t n) {  // 10000 -> "10,000"
  std::string s = std::to_string(n);
  for (int i = int(s.size()) - 3; i > (n < 0 ? 1 : 0); i -= 3) s.insert(size_t(i), ",");
  return s;
}

Metrics stage_metrics(const ScenarioConfig& cfg, const Naming& n) {
  Metrics out;
  for (const char* stage : {"finetune", "prune", "recover"}) {
    if (!cfg.has_stage(stage)) continue;
    const fs::path f = n.stage_metrics(stage);
    auto file = JsonFile::open(f);
    if (!file) throw Error(f.string() + ": missing; run the stage that writes it first (or the whole scenario)");
    out.emplace(stage, std::move(*file));
  }
  if (out.empty())
    throw Error(cfg.file.string() + ": the report needs a finetune, prune or recover stage to report on");
  return out;
}

std::vector<Row> rows_of(const Metrics& metrics, const Naming& n) {
  std::vector<Row> rows;
  // The SHA-256 each stage recorded of the model it measured ("" from an earlier expctl that recorded none).
  auto row = [&](const char* stage, const char* label, const fs::path& file, const JsonValue& accuracy,
                 const char* sha_key) {
    const JsonValue m = metrics.at(stage).root();
    rows.push_back({label, file, accuracy, m.has(sha_key) ? m[sha_key].string() : std::string(),
                    n.stage_metrics(stage).string()});
  };
  if (auto it = metrics.find("finetune"); it != metrics.end()) {
    const JsonValue m = it->second.root();
    row("finetune", "before fine-tuning", m["initial"].string(), m["before"], "initial_sha256");
    row("finetune", "fine-tuned", m["checkpoint"].string(), m["after"], "checkpoint_sha256");
  }
  if (auto it = metrics.find("prune"); it != metrics.end()) {
    const JsonValue m = it->second.root();
    row("prune", "fine-tuned (loaded)", m["source_checkpoint"].string(), m["before"], "source_sha256");
    row("prune", "pruned", n.pruned_checkpoint(), m["after"], "pruned_sha256");
    rows.back().pruned = true;
  }
  if (auto it = metrics.find("recover"); it != metrics.end()) {
    const JsonValue m = it->second.root();
    row("recover", "pruned + fine-tuned", m["checkpoint"].string(), m["after"], "checkpoint_sha256");
    rows.back().pruned = true;
  }
  return rows;
}

// Every number of a row must come from the model its accuracy was measured on: the checkpoint file must still be
// the one the stage measured.
void check_same_model(const Row& r, const ScenarioConfig& cfg) {
  if (r.sha256.empty()) return;
  const std::string now = content_id(r.checkpoint);
  if (now == r.sha256) return;
  throw Error(r.checkpoint.string() + ": the model of row '" + r.label + "' " +
              (now.empty() ? std::string("is missing") : "changed since its accuracy was measured (SHA-256 " +
                                                             now.substr(0, 12) + "... now, " + r.sha256.substr(0, 12) +
                                                             "... recorded in " + r.recorded + ")") +
              "; the report would mix two models. Rerun the scenario (expctl run " + cfg.file.string() + ").");
}

// Every row of one scenario was evaluated on the same images (the stages load the test split the same way).
Evaluation evaluation_of(const ScenarioConfig& cfg, const Metrics& metrics) {
  Evaluation ev;
  if (auto it = metrics.find("prune"); it != metrics.end() && it->second.root().has("before.images"))
    ev.images = it->second.root()["before.images"].integer();
  else if (auto ft = metrics.find("finetune"); ft != metrics.end() && ft->second.root().has("test_images"))
    ev.images = ft->second.root()["test_images"].integer();
  // load_dataset takes a subset only when test_subset is below the split's size.
  const int64_t n = data::common_options(cfg.dataset).test_subset;
  if (n > 0 && (ev.images == 0 || ev.images == n)) {
    ev.subset = ev.images = n;
    ev.on = count(n) +
            " test images, a class-balanced subset of the test split (dataset.test_subset: " + std::to_string(n) +
            ", seed " + std::to_string(cfg.run.seed) + ")";
    ev.on_short = count(n) + " test images (dataset.test_subset)";
  } else {
    ev.on = ev.images ? "the test split (" + count(ev.images) + " images)" : "the whole test split";
    ev.on_short = ev.images ? "test split, " + count(ev.images) + " images" : "whole test split";
  }
  auto it = metrics.find("prune");
  if (it == metrics.end() || it->second.root()["calibration.split"].string() != "test") return ev;
  const JsonValue prune = it->second.root();
  const int64_t samples = prune["calibration.samples"].integer();
  // Profile images from the test split come out of what calibration left: they are not held out either.
  const int64_t profiled =
      prune.has("profile") && prune["profile.split"].string() == "test" ? prune["profile.samples"].integer() : 0;
  if (prune.has("before.held_out")) {
    ev.held_out_images = prune["before.held_out.images"].integer();
    ev.held_out = "the " + count(ev.held_out_images) + " test images not used for calibration" +
                  (profiled ? " or profiling" : "") + " (calibration took " + count(samples) +
                  (profiled ? ", profiling " + count(profiled) : std::string()) + " of the " +
                  count(ev.images ? ev.images : samples + profiled + ev.held_out_images) + ")";
  } else {
    ev.note = "Calibration used all " + count(samples) +
              " test images, so none was held out: the accuracies after pruning are measured on the images the "
              "pruner was calibrated on.";
  }
  return ev;
}

// Rounds of the interleaved timing (metrics::measure_interleaved).
constexpr int kLatencyRounds = 5;

// The form and precision of the timed figures, in words (report.md and report.json's precision.latency).
std::string latency_form_text(const ReportOptions& p) {
  const std::string deployed =
      "deployed form (frozen TorchScript, batch norms folded, LibTorch's optimize_for_inference), fp32";
  switch (p.form) {
    case ReportOptions::LatencyForm::Eager:
      return "eager form (the network as it trains), fp32, NCHW input, no autocast";
    case ReportOptions::LatencyForm::Both:
      return deployed + "; the eager form (fp32, NCHW, no autocast) beside it";
    default:
      return deployed;
  }
}

// One model of the table: its row of report.json so far, and the forms of it that are timed.
struct Measured {
  json row;
  models::Network eager{nullptr};
  std::optional<models::Deployable> deployed;
  std::optional<models::Deployable> bf16;  ///< the deployed form in bf16 (latency.bf16)
};

// How a deployable form was timed: optimized, or frozen only where optimize_for_inference could not run it.
const char* form_name(const models::Deployable& d) {
  return d.not_optimized.empty() ? "deployed" : "deployed, frozen only";
}

bool times_deployed(const ReportOptions& p) { return p.form != ReportOptions::LatencyForm::Eager; }
bool times_eager(const ReportOptions& p) { return p.form != ReportOptions::LatencyForm::Deployed; }

// Whether the table gets a bf16 row per model: latency.bf16, and for auto whether `device` computes bf16 natively.
bool bf16_rows(const ReportOptions& p, torch::Device device) {
  if (p.bf16 != ReportOptions::Bf16::Auto) return p.bf16 == ReportOptions::Bf16::On;
  return device.is_cuda() || metrics::cpu_bf16_support().native;
}

// Everything of one model but its latency: accuracy as its stage recorded it, parameters, size, MACs.
Measured describe_model(const Row& r, const data::DatasetInfo& info, const ReportOptions& p, bool bf16,
                        torch::Device device) {
  models::Checkpoint ck;
  Measured m;
  m.eager = models::load_checkpoint(r.checkpoint, &ck);
  m.eager->to(device);
  m.eager->eval();
  metrics::ParamCount params = metrics::count_parameters(*m.eager);
  metrics::ModelSize size = metrics::model_size(*m.eager);
  metrics::MacsReport ops = metrics::count_macs(m.eager, info.height, info.width);
  if (times_deployed(p)) m.deployed = models::make_deployable(*m.eager, info.height, info.width, device);
  if (bf16) {
    // A model whose ops LibTorch cannot run in bf16 keeps its fp32 figures: its bf16 row says why it has none.
    try {
      m.bf16 = models::make_deployable(*m.eager, info.height, info.width, device, models::DeployPrecision::Bf16);
    } catch (const Error& e) {
      m.row["bf16"] = {{"form", "none: " + std::string(e.what())}};
    }
  }
  json& row = m.row;
  row["model"] = r.label;
  row["checkpoint"] = r.checkpoint.string();
  row["sha256"] = content_id(r.checkpoint);
  row["accuracy"] = r.accuracy["accuracy"].number();
  if (r.accuracy.has("held_out")) row["accuracy_held_out"] = r.accuracy["held_out.accuracy"].number();
  row["params"] = params.total;
  row["nonzero_params"] = params.nonzero;
  row["size_mb"] = size.dense_mb();
  row["masked"] = !ck.masks.is_empty();
  row["compact_size_mb"] = size.compact_mb();
  row["macs"] = ops.macs;
  row["flops"] = ops.flops();
  row["nonzero_macs"] = ops.nonzero_macs;
  return m;
}

json batch1_json(const metrics::LatencyStats& t) {
  return {{"median", t.median_ms}, {"mean", t.mean_ms}, {"p95", t.p95_ms},     {"min", t.min_ms},
          {"max", t.max_ms},       {"std", t.std_ms},   {"repeats", t.repeats}};
}

json large_json(const metrics::LatencyStats& t) {
  return {{"batch", t.batch},     {"median_ms", t.median_ms}, {"median_ms_per_image", t.per_image_median_ms()},
          {"mean_ms", t.mean_ms}, {"p95_ms", t.p95_ms},       {"min_ms", t.min_ms},
          {"max_ms", t.max_ms},   {"std_ms", t.std_ms},       {"repeats", t.repeats}};
}

// The latency of every model, all of them timed interleaved (dense and pruned in the same rounds, so that their
// ratio is fair on a noisy host), at batch 1 and at the large batch: latency_b1_ms and latency_large_batch hold
// the timed form (the deployed one unless latency.form is eager); with `both`, latency_eager_* the eager form's.
void time_models(std::vector<Measured>& models, const data::DatasetInfo& info, const ReportOptions& p,
                 torch::Device device) {
  std::vector<metrics::Forward> forwards;
  for (Measured& m : models) {
    if (m.deployed) {
      torch::jit::Module* module = &m.deployed->optimized;
      forwards.push_back([module](const torch::Tensor& x) { return module->forward({x}).toTensor(); });
    }
    if (times_eager(p)) {
      std::shared_ptr<models::NetworkImpl> net = m.eager.ptr();
      forwards.push_back([net](const torch::Tensor& x) { return net->forward(x); });
    }
    if (m.bf16) {
      torch::jit::Module* module = &m.bf16->optimized;
      forwards.push_back([module](const torch::Tensor& x) { return module->forward({x}).toTensor(); });
    }
  }
  const int64_t channels = models.front().eager->in_channels();
  metrics::LatencyOptions lo;
  lo.height = info.height;
  lo.width = info.width;
  lo.warmup = static_cast<int>(p.warmup);
  lo.repeats = static_cast<int>(p.repeats);
  const auto b1 = metrics::measure_interleaved(forwards, channels, lo, device, kLatencyRounds);
  lo.batch = p.large_batch;
  lo.warmup = std::min(lo.warmup, 3);
  lo.repeats = static_cast<int>(p.large_batch_repeats);
  std::vector<metrics::LatencyStats> bn;
  try {
    bn = metrics::measure_interleaved(forwards, channels, lo, device, kLatencyRounds);
  } catch (const std::bad_alloc&) {  // the load-time bound is a lower one: name the key the allocator cannot
    throw Error("report.latency.large_batch: a forward of " + std::to_string(lo.batch) + " images ran out of memory");
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (what.find("alloc") == std::string::npos) throw;
    throw Error("report.latency.large_batch: a forward of " + std::to_string(lo.batch) + " images ran out of memory (" +
                what.substr(0, what.find('\n')) + "); set a smaller batch");
  }
  size_t k = 0;
  for (Measured& m : models) {
    json& row = m.row;
    row["latency_form"] = m.deployed ? form_name(*m.deployed) : "eager";
    if (m.deployed && !m.deployed->not_optimized.empty()) row["not_optimized"] = m.deployed->not_optimized;
    row["latency_b1_ms"] = batch1_json(b1[k]);
    row["latency_large_batch"] = large_json(bn[k]);
    ++k;
    if (m.deployed && times_eager(p)) {
      row["latency_eager_b1_ms"] = batch1_json(b1[k]);
      row["latency_eager_large_batch"] = large_json(bn[k]);
      ++k;
    }
    if (m.bf16) {
      row["latency_bf16_b1_ms"] = batch1_json(b1[k]);
      row["latency_bf16_large_batch"] = large_json(bn[k]);
      ++k;
    }
  }
}

// The accuracy of every model's bf16 form on the test images its fp32 accuracy was measured on (the split the
// stages load), and how far its logits moved from the fp32 model's on the deployment check batch.
void evaluate_bf16(std::vector<Measured>& models, const data::Split& test, const ReportOptions& p, torch::Device device,
                   spdlog::logger& log) {
  for (Measured& m : models) {
    if (!m.bf16) continue;
    torch::jit::Module* module = &m.bf16->optimized;
    const metrics::EvalResult r = metrics::evaluate_forward(
        [module](const torch::Tensor& x) { return module->forward({x}).toTensor(); }, test, p.large_batch, device);
    json& row = m.row;
    row["bf16"] = {{"accuracy", r.accuracy},
                   {"images", r.count},
                   {"form", form_name(*m.bf16)},
                   {"max_logit_difference", m.bf16->max_difference}};
    if (!m.bf16->not_optimized.empty()) row["bf16"]["not_optimized"] = m.bf16->not_optimized;
    log.info("{}: bf16 accuracy {:.2f}% on {} images (fp32 {:.2f}%), logits within {:.1e} of fp32's",
             row["model"].get<std::string>(), r.accuracy, r.count, row["accuracy"].get<double>(),
             m.bf16->max_difference);
  }
}

// The models of the rows for report.coverage: a row of the prune or recover stage kept the channels the prune stage
// recorded (prune_metrics.json "kept_channels"); the others are whole.
std::vector<CoverageSubject> coverage_subjects(const std::vector<Row>& rows, const std::vector<Measured>& measured,
                                               const Metrics& metrics) {
  std::map<std::string, torch::Tensor> kept;
  if (auto it = metrics.find("prune"); it != metrics.end() && it->second.root().has("kept_channels"))
    for (const auto& [group, idx] : it->second.root()["kept_channels"].members()) {
      std::vector<int64_t> v;
      for (const JsonValue& i : idx.items()) v.push_back(i.integer());
      kept[group] = torch::tensor(v, torch::kLong);
    }
  std::vector<CoverageSubject> out;
  for (size_t i = 0; i < rows.size(); ++i)
    out.push_back({measured[i].eager, rows[i].pruned ? kept : std::map<std::string, torch::Tensor>{}, rows[i].pruned});
  return out;
}

// What a reader checks a pruned row against the first (dense) one with, as ShrinkBench asks: the theoretical
// speed-up (dense MACs / non-zero MACs), the compression ratio (parameters / non-zero parameters) and the measured
// speed-up at each batch size (and of the eager form, when it was timed too).
void add_speedups(std::vector<json>& rows) {
  const json base = rows.front();
  auto ratio = [](double a, double b) { return b > 0 ? json(a / b) : json(nullptr); };
  for (json& r : rows) {
    json s;
    s["theoretical"] = ratio(base["macs"].get<double>(), r["nonzero_macs"].get<double>());
    s["compression"] = ratio(base["params"].get<double>(), r["nonzero_params"].get<double>());
    s["measured_b1"] = ratio(base["latency_b1_ms"]["median"].get<double>(), r["latency_b1_ms"]["median"].get<double>());
    s["measured_large"] = ratio(base["latency_large_batch"]["median_ms"].get<double>(),
                                r["latency_large_batch"]["median_ms"].get<double>());
    if (r.contains("latency_eager_b1_ms")) {
      s["measured_eager_b1"] =
          ratio(base["latency_eager_b1_ms"]["median"].get<double>(), r["latency_eager_b1_ms"]["median"].get<double>());
      s["measured_eager_large"] = ratio(base["latency_eager_large_batch"]["median_ms"].get<double>(),
                                        r["latency_eager_large_batch"]["median_ms"].get<double>());
    }
    if (r.contains("latency_bf16_b1_ms") && base.contains("latency_bf16_b1_ms")) {
      s["measured_bf16_b1"] =
          ratio(base["latency_bf16_b1_ms"]["median"].get<double>(), r["latency_bf16_b1_ms"]["median"].get<double>());
      s["measured_bf16_large"] = ratio(base["latency_bf16_large_batch"]["median_ms"].get<double>(),
                                       r["latency_bf16_large_batch"]["median_ms"].get<double>());
      // What bf16 buys the row itself: its fp32 timed form's latency / its bf16 form's.
      s["bf16_over_fp32_b1"] =
          ratio(r["latency_b1_ms"]["median"].get<double>(), r["latency_bf16_b1_ms"]["median"].get<double>());
      s["bf16_over_fp32_large"] = ratio(r["latency_large_batch"]["median_ms"].get<double>(),
                                        r["latency_bf16_large_batch"]["median_ms"].get<double>());
    }
    r["speedup"] = s;
  }
}

// A ratio cell: "x1.23", or "-" where the row has none.
Column::Cell times(const char* key) {
  return [key](const json& r) {
    const json* v = Table::find(r, key);
    return v ? "x" + Table::fixed(v->get<double>(), 2) : std::string("-");
  };
}

// A test coverage column (report.coverage), shown when the criterion is measured: "41.20 (-3.10)" against the first
// row, in %.
Column coverage_column(const std::vector<std::string>& coverage, const std::string& key, const std::string& name) {
  const bool shown = std::find(coverage.begin(), coverage.end(), key) != coverage.end();
  return {"coverage." + key, "coverage_" + key, shown ? name + " (%)" : "", [key](const json& r) {
            const json* v = Table::find(r, "coverage." + key);
            return v && v->is_number() ? Table::fixed(100 * v->get<double>(), 2) : std::string("-");
          }};
}

// The comparison table: every field of a report.json row, and which of them report.csv and the Markdown and
// console tables show. `base` is the first row: the others show their changes against it.
Table report_table(const json& base, bool masked, bool held_out, bool both, const std::vector<std::string>& coverage) {
  auto num = [](const json& r, const char* key) { return Table::find(r, key)->get<double>(); };
  auto against = [&](const char* key, double scale, int digits) {
    return [=, b = num(base, key)](const json& r) {
      const double v = num(r, key);
      return Table::fixed(v * scale, digits) + " " + (b > 0 ? "x" + Table::fixed(v / b, 2) : "-");
    };
  };
  auto accuracy = [b = num(base, "accuracy"), name = base["model"], num](const json& r) {
    const double v = num(r, "accuracy");
    if (r["model"] == name) return Table::fixed(v, 2);
    return Table::fixed(v, 2) + " (" + (v >= b ? "+" : "") + Table::fixed(v - b, 2) + ")";
  };
  // A dense model stored "compactly" would only grow by its masks: the column is for masked rows.
  auto compact = [](const json& r) {
    return r["masked"].get<bool>() ? Table::fixed(r["compact_size_mb"].get<double>(), 2) : std::string("-");
  };
  auto latency = [](const json& r) {
    const json& l = r["latency_b1_ms"];
    return Table::fixed(l["median"].get<double>(), 2) + " (mean " + Table::fixed(l["mean"].get<double>(), 2) +
           ", p95 " + Table::fixed(l["p95"].get<double>(), 2) + ")";
  };
  const std::string large = std::to_string(base["latency_large_batch"]["batch"].get<int64_t>());
  return Table(
      {{"model", "model", "Model", nullptr, Align::Left},
       {"checkpoint"},
       {"sha256"},  // of the checkpoint measured (lineage)
       {"accuracy", "accuracy", "Accuracy (%)", accuracy},
       {"accuracy_held_out", "accuracy_held_out", held_out ? "Held-out accuracy (%)" : "",
        Table::fixed_cell("accuracy_held_out", 2)},
       {"params", "params", "Params (M)", against("params", 1e-6, 2)},
       {"nonzero_params", "nonzero_params"},
       {"size_mb", "size_mb", "Size (MB)", Table::fixed_cell("size_mb", 2)},
       {"masked"},
       {"compact_size_mb", "compact_size_mb", masked ? "Compact size (MB)" : "", compact},
       {"macs", "macs", "MACs (G)", against("macs", 1e-9, 3)},
       {"flops", "flops", "FLOPs (G)", Table::fixed_cell("flops", 3, 1e-9)},
       {"nonzero_macs", "nonzero_macs", masked ? "Non-zero MACs (G)" : "", Table::fixed_cell("nonzero_macs", 3, 1e-9)},
       {"latency_b1_ms.median", "latency_b1_median_ms", "Latency b1 (ms)", latency},
       {"latency_b1_ms.mean", "latency_b1_mean_ms"},
       {"latency_b1_ms.p95", "latency_b1_p95_ms"},
       {"latency_b1_ms.min"},
       {"latency_b1_ms.max"},
       {"latency_b1_ms.std"},
       {"latency_b1_ms.repeats"},
       {"latency_large_batch.batch", "large_batch"},
       {"latency_large_batch.median_ms"},
       {"latency_large_batch.median_ms_per_image", "latency_large_median_ms_per_image",
        "Latency b" + large + " (ms/img)", Table::fixed_cell("latency_large_batch.median_ms_per_image", 3)},
       {"latency_large_batch.mean_ms"},
       {"latency_large_batch.p95_ms"},
       {"latency_large_batch.min_ms"},
       {"latency_large_batch.max_ms"},
       {"latency_large_batch.std_ms"},
       {"latency_large_batch.repeats"},
       {"latency_form", "latency_form"},
       {"not_optimized", "not_optimized"},  // why optimize_for_inference's form could not run this model
       {"latency_eager_b1_ms.median", "latency_eager_b1_median_ms", both ? "Eager b1 (ms)" : "",
        Table::fixed_cell("latency_eager_b1_ms.median", 2)},
       {"latency_eager_b1_ms.mean"},
       {"latency_eager_b1_ms.p95", "latency_eager_b1_p95_ms"},
       {"latency_eager_b1_ms.min"},
       {"latency_eager_b1_ms.max"},
       {"latency_eager_b1_ms.std"},
       {"latency_eager_b1_ms.repeats"},
       {"latency_eager_large_batch.batch"},
       {"latency_eager_large_batch.median_ms"},
       {"latency_eager_large_batch.median_ms_per_image", "latency_eager_large_median_ms_per_image",
        both ? "Eager b" + large + " (ms/img)" : "",
        Table::fixed_cell("latency_eager_large_batch.median_ms_per_image", 3)},
       {"latency_eager_large_batch.mean_ms"},
       {"latency_eager_large_batch.p95_ms"},
       {"latency_eager_large_batch.min_ms"},
       {"latency_eager_large_batch.max_ms"},
       {"latency_eager_large_batch.std_ms"},
       {"latency_eager_large_batch.repeats"},
       {"speedup.theoretical", "speedup_theoretical", "Speed-up (MACs)", times("speedup.theoretical")},
       {"speedup.compression", "compression_ratio", "Compression", times("speedup.compression")},
       {"speedup.measured_b1", "speedup_measured_b1", "Speed-up b1", times("speedup.measured_b1")},
       {"speedup.measured_large", "speedup_measured_large", "Speed-up b" + large, times("speedup.measured_large")},
       {"speedup.measured_eager_b1", "speedup_measured_eager_b1"},
       {"speedup.measured_eager_large", "speedup_measured_eager_large"},
       // report.coverage: the test coverage of each model, in % (report_coverage.h).
       coverage_column(coverage, "nc", "NC"),
       coverage_column(coverage, "kmnc", "KMNC"),
       coverage_column(coverage, "nbc", "NBC"),
       coverage_column(coverage, "snac", "SNAC"),
       coverage_column(coverage, "tknc", "TKNC"),
       // The bf16 row of each model (latency.bf16): CSV and JSON here, its Markdown in bf16_table().
       {"bf16.accuracy", "accuracy_bf16"},
       {"bf16.images"},
       {"bf16.form", "bf16_form"},
       {"bf16.not_optimized"},
       {"bf16.max_logit_difference", "bf16_max_logit_difference"},
       {"latency_bf16_b1_ms.median", "latency_bf16_b1_median_ms"},
       {"latency_bf16_b1_ms.mean"},
       {"latency_bf16_b1_ms.p95", "latency_bf16_b1_p95_ms"},
       {"latency_bf16_b1_ms.min"},
       {"latency_bf16_b1_ms.max"},
       {"latency_bf16_b1_ms.std"},
       {"latency_bf16_b1_ms.repeats"},
       {"latency_bf16_large_batch.batch"},
       {"latency_bf16_large_batch.median_ms"},
       {"latency_bf16_large_batch.median_ms_per_image", "latency_bf16_large_median_ms_per_image"},
       {"latency_bf16_large_batch.mean_ms"},
       {"latency_bf16_large_batch.p95_ms"},
       {"latency_bf16_large_batch.min_ms"},
       {"latency_bf16_large_batch.max_ms"},
       {"latency_bf16_large_batch.std_ms"},
       {"latency_bf16_large_batch.repeats"},
       {"speedup.measured_bf16_b1", "speedup_measured_bf16_b1"},
       {"speedup.measured_bf16_large", "speedup_measured_bf16_large"},
       {"speedup.bf16_over_fp32_b1", "bf16_over_fp32_b1"},
       {"speedup.bf16_over_fp32_large", "bf16_over_fp32_large"}});
}

// The bf16 rows in Markdown: each model's accuracy in bf16 (its change against the same model's fp32 accuracy),
// its bf16 latency, the speed-ups against the first row's bf16 form, and what bf16 gains over the row's fp32 form.
Table bf16_table(int64_t large_batch) {
  const std::string large = std::to_string(large_batch);
  auto accuracy = [](const json& r) {
    if (!Table::find(r, "bf16.accuracy")) return std::string("-");
    const double v = r["bf16"]["accuracy"].get<double>(), fp32 = r["accuracy"].get<double>();
    return Table::fixed(v, 2) + " (" + (v >= fp32 ? "+" : "") + Table::fixed(v - fp32, 2) + ")";
  };
  auto latency = [](const json& r) {
    if (!r.contains("latency_bf16_b1_ms")) return std::string("-");
    const json& l = r["latency_bf16_b1_ms"];
    return Table::fixed(l["median"].get<double>(), 2) + " (p95 " + Table::fixed(l["p95"].get<double>(), 2) + ")";
  };
  return Table({{"model", "", "Model", nullptr, Align::Left},
                {"bf16.accuracy", "", "Accuracy bf16 (%) (vs fp32)", accuracy},
                {"latency_bf16_b1_ms.median", "", "Latency b1 (ms)", latency},
                {"latency_bf16_large_batch.median_ms_per_image", "", "Latency b" + large + " (ms/img)",
                 Table::fixed_cell("latency_bf16_large_batch.median_ms_per_image", 3)},
                {"speedup.measured_bf16_b1", "", "Speed-up b1", times("speedup.measured_bf16_b1")},
                {"speedup.measured_bf16_large", "", "Speed-up b" + large, times("speedup.measured_bf16_large")},
                {"speedup.bf16_over_fp32_b1", "", "bf16 / fp32 b1", times("speedup.bf16_over_fp32_b1")},
                {"speedup.bf16_over_fp32_large", "", "bf16 / fp32 b" + large, times("speedup.bf16_over_fp32_large")},
                {"bf16.form", "", "Form", nullptr, Align::Left}});
}

// What the bf16 table shows, in words.
std::string bf16_notes(const Evaluation& ev, const ReportOptions& p) {
  return "\nEach model's deployed form computing in bf16: the weights rounded to bf16 after the batch norms were "
         "folded into them in fp32, the input cast to bf16 and the logits back to fp32 inside the module "
         "(LibTorch's optimize_for_inference on it). Accuracy: top-1 of that form on " +
         ev.on + ", against the same model's fp32 accuracy in the table above. Latency as above (median over " +
         std::to_string(p.repeats) +
         " passes at batch 1, median per image at the large batch, timed in the same interleaved rounds as the fp32 "
         "forms). Speed-ups against the first row's bf16 form; bf16 / fp32: the row's fp32 latency above over its "
         "bf16 latency.\n";
}

// The training curves (loss and accuracy per epoch) of the finetune/recover stages.
bool plot_curves(const fs::path& chart, const std::vector<std::pair<std::string, JsonValue>>& histories,
                 const Evaluation& ev, spdlog::logger& log) {
  if (histories.empty()) return false;
  const std::string stem = chart.stem().string(), png = chart.filename().string();
  std::ostringstream d, g;
  for (const auto& [name, h] : histories) {
    d << "# " << name << "\n";
    for (const JsonValue& r : h.items())
      d << r["epoch"].integer() << " " << r["train_loss"].number() << " " << r["test_loss"].number() << " "
        << r["train_accuracy"].number() << " " << r["test_accuracy"].number() << "\n";
    d << "\n\n";
  }
  auto curves = [&](int train_col, int test_col) {
    std::ostringstream s;
    for (size_t i = 0; i < histories.size(); ++i)
      s << (i ? ", " : "") << plot::quote(stem + ".dat") << " index " << i << " using 1:" << train_col
        << " with linespoints title " << plot::quote(histories[i].first + " train") << ", '' index " << i
        << " using 1:" << test_col << " with linespoints title " << plot::quote(histories[i].first + " test");
    return s.str();
  };
  g << "set terminal pngcairo noenhanced size 1200,480 font 'sans,10'\nset output " << plot::quote(png) << "\n"
    << "set multiplot layout 1,2\nset grid\nset xlabel 'epoch'\nset xtics 1\nset key top right\n"
    << "set title 'loss (training loss includes label smoothing)'\nplot " << curves(2, 3) << "\n"
    << "set title " << plot::quote("top-1 accuracy (%); test: " + ev.on_short) << "\nset key bottom right\nplot "
    << curves(4, 5) << "\nunset multiplot\n";
  return plot::draw(chart.parent_path(), stem, g.str(), d.str(), png, log);
}

// One part of the pruning section: its Markdown, and the chart's gnuplot commands, data and caption.
struct PruningPart {
  std::ostringstream md, dat;
  std::string chart, caption;
};

std::string num(const JsonValue& v, const char* k, int d) {
  return v.has(k) ? Table::fixed(v[k].number(), d) : std::string("-");
}

// Structured plans: channels per group before and kept, with the coverage (Neuron Coverage) or the raw channel
// scores the pruner recorded, headed by its criterion when it names one ("KMNC (k = 100)"). Groups the score could
// not measure (kept whole) say "unmeasured" in the table and leave a gap in the chart's line, never a 0.
void groups_part(const JsonValue& prune, const std::string& calibration, const std::string& data, PruningPart& out) {
  const JsonValue stats = prune["stats"];
  // Columns for what the pruner recorded: coverage (Neuron Coverage) or the raw channel scores (the others).
  bool coverage = false, scores = false;
  for (const auto& [name, g] : stats["groups"].members()) {
    coverage = coverage || g.has("mean_coverage");
    scores = scores || g.has("mean_score");
  }
  std::set<std::string> unmeasured;
  if (stats.has("unmeasured"))
    for (const JsonValue& u : stats["unmeasured"].items()) unmeasured.insert(u.string());
  const std::string criterion = stats.has("criterion") ? stats["criterion"].string() : std::string();
  auto cell = [](std::string key, int digits) {
    return [key, digits](const json& row) {
      if (row.value("unmeasured", false)) return std::string("unmeasured");
      return Table::fixed_cell(key, digits)(row);
    };
  };
  std::vector<Column> columns{{"group", "", "group", nullptr, Align::Left},
                              {"size", "", "channels", Table::fixed_cell("size", 0)},
                              {"kept", "", "kept", Table::fixed_cell("kept", 0)}};
  if (coverage) {
    columns.emplace_back("mean_coverage", "", "mean coverage", cell("mean_coverage", 3));
    columns.emplace_back("covered_fraction", "", "covered fraction", cell("covered_fraction", 3));
  }
  const std::string what = criterion.empty() ? std::string("score") : criterion;
  if (scores) {
    columns.emplace_back("min_score", "", "min " + what, cell("min_score", 4));
    columns.emplace_back("mean_score", "", "mean " + what, cell("mean_score", 4));
    columns.emplace_back("max_score", "", "max " + what, cell("max_score", 4));
  }
  // The chart's line: Neuron Coverage's mean coverage, or the mean of a named criterion (the coverage pruners).
  const char* line = coverage ? "mean_coverage" : (!criterion.empty() && scores ? "mean_score" : nullptr);
  const std::string line_title = coverage ? std::string("mean coverage") : "mean " + criterion;
  Table t(columns);
  for (const auto& [name, g] : stats["groups"].members()) {
    json row = g.json();
    row["group"] = name;
    if (unmeasured.count(name)) row["unmeasured"] = true;
    t.add_row(row);
    const double size = g.has("size") ? g["size"].number() : 0;
    out.dat << plot::data_label(name) << " " << size << " " << (g.has("kept") ? g["kept"].number() : size) << " ";
    if (line && g.has(line))
      out.dat << g[line].number() << "\n";
    else
      out.dat << "?\n";  // unmeasured: a gap in the line
  }
  out.md << "\n## Channels per group\n\n" << t.markdown();
  if (coverage) out.md << "\nCoverage measured on the " << calibration << ".\n";
  if (scores)
    out.md << "\nScores: the channel scores of " << (stats.has("pruner") ? stats["pruner"].string() : "the pruner")
           << (criterion.empty() ? std::string() : " (" + criterion + ")") << " on the " << calibration
           << ", before each group's are divided by their mean (higher = kept).\n";
  if (!unmeasured.empty())
    out.md << "\nUnmeasured: " << unmeasured.size() << (unmeasured.size() == 1 ? " group" : " groups")
           << " no activation of the criterion carries (kept whole); the chart leaves them out of its line.\n";
  const std::string title = line ? "channels per group: before, kept (bars); " + line_title + " on " +
                                       count(prune["calibration.samples"].integer()) + " calibration images (line)"
                                 : std::string("channels per group: before, kept");
  out.chart = "set title " + plot::quote(title) +
              "\nset datafile missing '?'\nset style data histograms\nset style histogram clustered\n"
              "set style fill solid 0.6\nset xtics rotate by -60\nset ylabel 'channels'\n" +
              (line ? "set y2label " + plot::quote(coverage ? std::string("coverage") : criterion) +
                          (coverage ? "\nset y2range [0:1]" : "") + "\nset y2tics\n"
                    : std::string()) +
              "plot " + data + " using 2:xtic(1) title 'channels', '' using 3 title 'kept'" +
              (line ? ", '' using 0:4 axes x1y2 with linespoints lw 2 title " + plot::quote(line_title) : "") + "\n";
  out.caption =
      "Channels of each group before pruning and kept" +
      (line ? "; the line: " + line_title + " on the " + calibration + " (gaps: unmeasured groups)" : std::string()) +
      ".";
}

// Mask plans: the sparsity of every layer.
void layers_part(const JsonValue& prune, const std::string& calibration, const std::string& data, PruningPart& out) {
  const JsonValue stats = prune["stats"];
  // A layer left alone says why in its sparsity cell.
  auto sparsity = [](const json& row) {
    if (row.contains("skipped")) return "not pruned (" + row["skipped"].get<std::string>() + ")";
    return Table::fixed_cell("sparsity", 4)(row);
  };
  Table t({{"layer", "", "layer", nullptr, Align::Left},
           {"weights", "", "weights", Table::fixed_cell("weights", 0)},
           {"zeros", "", "zeros", Table::fixed_cell("zeros", 0)},
           {"sparsity", "", "sparsity", sparsity}});
  for (const auto& [name, l] : stats["layers"].members()) {
    json row = l.json();
    row["layer"] = name;
    if (l.has("skipped")) row.erase("zeros");
    t.add_row(row);
    const double s = l.has("skipped") || !l.has("sparsity") ? 0.0 : l["sparsity"].number();
    out.dat << plot::data_label(name) << " " << s << "\n";
  }
  out.md << "\n## Sparsity per layer\n\n" << t.markdown();
  if (stats.has("overall"))
    for (const auto& [scope, o] : stats["overall"].members())
      out.md << "\nOverall sparsity over "
             << (scope == "pruned_layers" ? "the pruned layers" : "all conv/linear weights") << ": "
             << num(o, "sparsity", 4) << " (" << num(o, "zeros", 0) << " of " << num(o, "weights", 0) << " weights).";
  out.md << "\n";
  out.chart =
      "set title 'sparsity per layer'\nset style data histograms\nset style fill solid 0.6\n"
      "set xtics rotate by -60\nset yrange [0:1]\nplot " +
      data + " using 2:xtic(1) notitle\n";
  out.caption = "Fraction of each layer's weights set to zero; the pruner scored them on the " + calibration + ".";
}

// Per-layer pruning statistics from prune_metrics.json: a Markdown table and a chart (channels kept and coverage
// per group for structured pruning, sparsity per layer for masks).
std::string pruning_section(const JsonValue& prune, const fs::path& chart_file, bool plot, spdlog::logger& log,
                            std::vector<fs::path>& outputs) {
  const std::string stem = chart_file.stem().string(), png = chart_file.filename().string();
  const std::string data = plot::quote(stem + ".dat");
  const JsonValue stats = prune["stats"];
  const std::string calibration = count(prune["calibration.samples"].integer()) + " calibration images (" +
                                  prune["calibration.source"].string() + ")";
  PruningPart part;
  if (stats.has("groups"))
    groups_part(prune, calibration, data, part);
  else if (stats.has("layers"))
    layers_part(prune, calibration, data, part);
  else
    return "";
  if (plot && plot::draw(chart_file.parent_path(), stem,
                         "set terminal pngcairo noenhanced size 1200,520 font 'sans,9'\nset output " +
                             plot::quote(png) + "\nset grid ytics\nset key top right\n" + part.chart,
                         part.dat.str(), png, log)) {
    part.md << "\n![per-layer pruning](" << png << ")\n\n*" << part.caption << "*\n";
    outputs.push_back(chart_file);
  }
  return part.md.str();
}

// What each column means and what the accuracies were measured on.
std::string notes(const json& report, const Evaluation& ev, const ReportOptions& p, bool masked) {
  const json& base = report["rows"][0];
  const int64_t large = base["latency_large_batch"]["batch"].get<int64_t>();
  std::ostringstream doc;
  doc << "- Accuracy: top-1 on " << ev.on << " (" << base["model"].get<std::string>()
      << " first; changes in percentage points against it).";
  if (report.contains("calibration"))
    doc << " Calibration: " << report["calibration"]["source"].get<std::string>() << ".";
  if (!ev.held_out.empty()) doc << " Held-out accuracy: top-1 on " << ev.held_out << ".";
  if (!ev.note.empty()) doc << " " << ev.note;
  doc << "\n- Size: bytes of the saved weights / 2^20."
      << (masked ? " Compact size: non-zero weights as fp32 values plus a 1-bit mask per weight." : "")
      << "\n- MACs: multiply-accumulates of the conv and linear layers for one image; FLOPs = 2 x MACs."
      << "\n- Latency: " << latency_form_text(p) << "; median over " << p.repeats
      << " timed forward passes at batch 1 after " << p.warmup
      << " warm-up passes (mean and p95 beside it), and median time per image at batch " << large
      << ". Every model is timed in the same " << kLatencyRounds
      << " interleaved rounds, so that a slow minute of the host falls on all of them alike."
      << "\n- Speed-ups against the first row: theoretical = its MACs / the row's non-zero MACs; compression = its "
         "parameters / the row's non-zero parameters; measured = its median latency / the row's, at each batch size.\n";
  doc << "- Precision: every accuracy here comes from fp32 forward passes (no autocast, NCHW input)"
      << (report["precision"].contains("bf16") ? "; those of the bf16 table below from bf16 ones." : ".");
  for (const auto& [stage, t] : report["precision"]["training"].items())
    doc << " Training (" << stage << "): " << t["forward"].get<std::string>()
        << (t["channels_last"].get<bool>() ? " + channels_last" : "") << ", " << t["why"].get<std::string>() << ".";
  doc << "\n";
  if (report.contains("coverage")) {
    const json& c = report["coverage"];
    doc << "- Test coverage (report.coverage): of each model's neurons (channels, by their spatial mean, at "
        << c["activation_points"].get<int64_t>() << " activation points), on the "
        << count(c["test_images"].get<int64_t>())
        << " test images the accuracy was measured on. NC: the share covered by some image at threshold "
        << Table::fixed(c["nc_threshold"].get<double>(), 2)
        << " (DeepXplore, per-image min-max scaling); KMNC: the share of k = " << c["kmnc_k"].get<int64_t>()
        << " sections of each neuron's range hit; NBC: of the range's two corners hit; SNAC: of the upper corners; "
           "TKNC: of the neurons among the top "
        << c["tknc_k"].get<int64_t>()
        << " of their activation point for some image (DeepGauge). The ranges are the first row's model's on "
        << c["profile_source"].get<std::string>()
        << "; a pruned model's neurons are the channels it kept, with the ranges they had there.\n";
  }
  if (masked)
    doc << "\nUnstructured sparsity zeroes weights but keeps tensor shapes, so dense kernels do the same work: the "
           "non-zero MACs and the compact size show what sparse kernels could save, while latency and the saved "
           "size stay those of the dense model: dense kernels do not skip zeros, so no measured speed-up is expected "
           "on this device. A 2:4 pattern would run faster only on GPUs with sparse tensor cores (NVIDIA Ampere or "
           "later, through cuSPARSELt), which this build does not use.\n";
  return doc.str();
}

std::string machine(const json& report) {
  const json& env = report["environment"];
  auto field = [&](const char* k) {
    return env.contains(k) ? (env[k].is_string() ? env[k].get<std::string>() : env[k].dump()) : std::string("?");
  };
  std::ostringstream doc;
  doc << "\nMachine: " << field("host") << ", " << field("cpu_model") << ", " << field("logical_cores")
      << " logical cores, " << field("memory_mb") << " MB, " << field("os") << ". Device " << field("device_name")
      << " (" << field("device") << "), LibTorch " << field("libtorch") << ", " << field("intra_op_threads")
      << " threads, BLAS " << field("blas") << ", load average " << field("load_average_1m")
      << " while measuring. Peak memory " << Table::fixed(report["peak_memory_mb"].get<double>(), 0) << " MB";
  if (env.contains("cuda_peak_allocated_mb"))
    doc << ", GPU " << Table::fixed(env["cuda_peak_allocated_mb"].get<double>(), 0) << " MB allocated ("
        << Table::fixed(env["cuda_peak_reserved_mb"].get<double>(), 0) << " MB reserved)";
  doc << ". All details in report.json.\n";
  return doc.str();
}

std::string curves_caption(const ScenarioConfig& cfg, const Evaluation& ev, const fs::path& chart) {
  const int64_t n = data::common_options(cfg.dataset).train_subset;
  const std::string train =
      n > 0 ? "at most " + count(n) + " training images, dataset.train_subset" : "the training split";
  return "\n![training curves](" + chart.filename().string() +
         ")\n\n*Loss and top-1 accuracy per epoch. Test curves: " + ev.on +
         ". Train curves: means over each epoch's training batches (" + train + ").*\n";
}

class ReportStage : public Stage {
 public:
  void run(StageContext& ctx) override {
    const ScenarioConfig& cfg = ctx.config;
    const ReportOptions p = report_binder().read(ctx.params, "report");
    torch::Device device = prepare_runtime(cfg, *ctx.log);
    const data::DatasetInfo info = data::dataset_info(cfg);
    const Metrics stages = stage_metrics(cfg, ctx.naming);
    const Evaluation ev = evaluation_of(cfg, stages);

    json report;
    report["scenario"] = ctx.naming.scenario_name();
    report["file"] = cfg.file.string();
    report["method"] = method_info(cfg);
    if (!cfg.sweep_cell.empty()) report["sweep_cell"] = {{"id", cfg.sweep_cell}, {"settings", cfg.sweep_values}};
    report["environment"] = metrics::environment_info(device, at::get_num_threads());
    report["seed"] = cfg.run.seed;
    report["input"] = {info.channels, info.height, info.width};
    report["evaluation"] = ev.to_json();
    if (stages.count("prune")) report["calibration"] = stages.at("prune").root()["calibration"].json();
    // Every forward this stage times is fp32 (no autocast), in the form latency.form names, whatever the training
    // stages computed in; their precision is copied from their metrics files.
    report["precision"] = {{"accuracy", "fp32"}, {"latency", latency_form_text(p)}, {"training", json::object()}};
    for (const char* stage : {"finetune", "recover"})
      if (stages.count(stage) && stages.at(stage).root().has("precision"))
        report["precision"]["training"][stage] = stages.at(stage).root()["precision"].json();
    bool masked = false;
    const std::vector<Row> models = rows_of(stages, ctx.naming);
    for (const Row& r : models) check_same_model(r, cfg);  // before any measurement
    const bool bf16 = bf16_rows(p, device);
    if (bf16) report["precision"]["bf16"] = "deployed form in bf16 (weights rounded after folding in fp32)";
    std::vector<Measured> measured;
    for (const Row& r : models) {
      measured.push_back(describe_model(r, info, p, bf16, device));
      masked = masked || measured.back().row["masked"].get<bool>();
      if (const auto& d = measured.back().deployed) {
        ctx.log->info("{}: deployable form checked (logits within {:.1e} of the model's, {} batch norms left)", r.label,
                      d->max_difference, d->batch_norms_left);
        if (!d->not_optimized.empty())
          ctx.log->warn(
              "{}: optimize_for_inference's form does not run on these images ({}); its frozen form is "
              "timed instead",
              r.label, d->not_optimized);
      }
    }
    time_models(measured, info, p, device);
    std::optional<data::Split> test_split;  // the test images the stages evaluated, loaded once when needed
    auto test = [&]() -> const data::Split& {
      if (!test_split) test_split = data::load_dataset(cfg, /*train=*/false);
      return *test_split;
    };
    if (bf16) evaluate_bf16(measured, test(), p, device, *ctx.log);
    if (!p.coverage.empty()) {
      const json cov =
          measure_model_coverage(cfg, test(), p, coverage_subjects(models, measured, stages), device, *ctx.log);
      for (size_t i = 0; i < measured.size(); ++i) measured[i].row["coverage"] = cov["rows"][i];
      report["coverage"] = cov;
      report["coverage"].erase("rows");
    }
    std::vector<json> rows;
    for (size_t i = 0; i < measured.size(); ++i) {
      rows.push_back(std::move(measured[i].row));
      ctx.log->info("measured {}: {}", models[i].label, models[i].checkpoint.string());
    }
    measured.clear();
    add_speedups(rows);
    Table table = report_table(rows.front(), masked, !ev.held_out.empty(), p.form == ReportOptions::LatencyForm::Both,
                               p.coverage);
    std::optional<Table> bf16_rows_table;
    if (bf16) {
      bf16_rows_table = bf16_table(p.large_batch);
      for (const auto& r : rows) bf16_rows_table->add_row(r);
    }
    for (auto& r : rows) table.add_row(std::move(r));
    report["rows"] = table.json();
    report["peak_memory_mb"] = metrics::peak_memory_mb();

    std::vector<std::pair<std::string, JsonValue>> histories;
    for (const char* stage : {"finetune", "recover"})
      if (stages.count(stage)) histories.emplace_back(stage, stages.at(stage).root()["history"]);
    const bool plotted = p.plot && plot_curves(ctx.naming.training_curves_chart(), histories, ev, *ctx.log);

    std::fprintf(stderr, "\n%s\n%s\nAccuracy: top-1 on %s.\n\n", ctx.naming.scenario_name().c_str(),
                 table.console().c_str(), ev.on.c_str());
    if (bf16_rows_table) std::fprintf(stderr, "In bf16 (deployed form):\n%s\n", bf16_rows_table->console().c_str());
    std::ostringstream doc;
    doc << "# " << ctx.naming.scenario_name()
        << (cfg.sweep_cell.empty() ? std::string() : " (sweep cell " + cfg.sweep_cell + ")") << "\n\n"
        << "Scenario file `" << cfg.file.string() << "`, seed " << cfg.run.seed << ". Input " << info.channels << "x"
        << info.height << "x" << info.width << ".\n\n"
        << table.markdown() << "\n"
        << notes(report, ev, p, masked);
    if (bf16_rows_table) doc << "\n## In bf16\n\n" << bf16_rows_table->markdown() << bf16_notes(ev, p);
    doc << machine(report);
    if (plotted) doc << curves_caption(cfg, ev, ctx.naming.training_curves_chart());
    std::vector<fs::path> extra_outputs;
    if (stages.count("prune"))
      doc << pruning_section(stages.at("prune").root(), ctx.naming.pruning_chart(), p.plot, *ctx.log, extra_outputs);

    if (p.export_torchscript) {
      // The scenario's final model (the last row), runnable from Python without expctl.
      models::Network final_model = models::load_checkpoint(models.back().checkpoint);
      final_model->eval();
      models::export_torchscript(*final_model, final_model->graph(), ctx.naming.exported_model());
      extra_outputs.push_back(ctx.naming.exported_model());
      models::write_deployable(*final_model, info.height, info.width, ctx.naming.deployed_model());
      extra_outputs.push_back(ctx.naming.deployed_model());
      ctx.log->info("exported {} as TorchScript: {}", models.back().label, ctx.naming.exported_model().string());
    }

    const Naming& n = ctx.naming;
    write_file_atomic(n.report_file("md"), doc.str());
    write_file_atomic(n.report_file("csv"), table.csv());
    write_file_atomic(n.report_file("json"), report.dump(2) + "\n");
    ctx.outputs = {n.report_file("md"), n.report_file("csv"), n.report_file("json")};
    if (plotted) ctx.outputs.push_back(n.training_curves_chart());
    ctx.outputs.insert(ctx.outputs.end(), extra_outputs.begin(), extra_outputs.end());
  }
};
std::vector<PlannedFile> plan(const ScenarioConfig& cfg, const Naming& n, const Params& block) {
  const ReportOptions p = report_binder().read(block, "report");
  std::vector<PlannedFile> out;
  // The metrics files name (and hash) the models of the rows: a stage that ran again rewrites them.
  for (const char* stage : {"finetune", "prune", "recover"})
    if (cfg.has_stage(stage)) {
      out.push_back({PlannedFile::Access::Read, n.stage_metrics(stage), std::string(stage) + " results"});
      out.back().upstream = true;
    }
  for (const char* f : {"md", "csv", "json"})
    out.push_back({PlannedFile::Access::Write, n.report_file(f), "report"});
  if (p.plot) out.push_back({PlannedFile::Access::Write, n.training_curves_chart(), "loss/accuracy plot"});
  if (p.export_torchscript) {
    out.push_back({PlannedFile::Access::Write, n.exported_model(), "TorchScript model"});
    out.push_back({PlannedFile::Access::Write, n.deployed_model(), "deployed model (frozen, batch norms folded)"});
  }
  return out;
}

}  // namespace

const OptionBinder<ReportOptions>& report_binder() {
  static const OptionBinder<ReportOptions> b = [] {
    using O = ReportOptions;
    OptionBinder<O> b;
    b.add_enum(
        &O::form, "latency.form",
        {{"deployed", O::LatencyForm::Deployed}, {"eager", O::LatencyForm::Eager}, {"both", O::LatencyForm::Both}},
        "the form of each model that is timed: deployed (frozen TorchScript, batch norms folded into the convs, "
        "LibTorch's optimize_for_inference: what a user deploys), eager (the network as it trains), or both "
        "(deployed, with the eager figures beside it)");
    b.add_enum(&O::bf16, "latency.bf16", {{"auto", O::Bf16::Auto}, {"on", O::Bf16::On}, {"off", O::Bf16::Off}},
               "a bf16 row for every model: its deployed form with the weights rounded to bf16 (batch norms folded "
               "first, in fp32) and its input cast to bf16, timed with the others and its accuracy measured in bf16 "
               "on the same test images; auto: on CUDA and on CPUs that compute bf16 natively (AVX512_BF16, "
               "AMX-BF16, Arm BF16), where it is the fast form; on; off");
    b.add(&O::warmup, "latency.warmup", "untimed forward passes before timing").min(0).max(10000);
    b.add(&O::repeats, "latency.repeats", "timed forward passes at batch 1 (median, mean and p95 reported)")
        .min(1)
        .max(100000);
    b.add(&O::large_batch, "latency.large_batch", "the large batch size timed beside batch 1").min(1).max(65536);
    b.add(&O::large_batch_repeats, "latency.large_batch_repeats", "timed forward passes at the large batch")
        .min(1)
        .max(100000);
    b.add(&O::plot, "plot", "draw the training curves (gnuplot)");
    b.add(&O::export_torchscript, "export_torchscript",
          "write the final model as model.torchscript.pt (Python: torch.jit.load(file)(images), no expctl) and as "
          "model.deployed.pt (frozen, batch norms folded; torch.jit.optimize_for_inference(torch.jit.load(file)) "
          "gives the deployed form)");
    b.add(&O::coverage, "coverage",
          "test coverage criteria added to every row of the table, measured on the test images against the loaded "
          "model's neuron ranges (a pruned model: the neurons it kept): nc (DeepXplore, threshold coverage_threshold), "
          "kmnc, nbc, snac, tknc (DeepGauge; k = coverage_k sections, top coverage_top_k)",
          {"nc", "kmnc", "nbc", "snac", "tknc"});
    b.add(&O::coverage_profile, "coverage_profile",
          "training images the loaded model's neuron ranges [low, high] are taken from (coverage)")
        .min(1)
        .max(10000000);
    b.add(&O::coverage_k, "coverage_k", "KMNC's k: sections of each neuron's range (coverage)").min(1).max(100000);
    b.add(&O::coverage_top_k, "coverage_top_k", "TKNC's k: the top k neurons of each activation point (coverage)")
        .min(1)
        .max(100000);
    b.add(&O::coverage_threshold, "coverage_threshold",
          "NC's threshold t on the [0,1]-scaled mean activation of a channel (coverage)")
        .min(0)
        .below(1);
    return b;
  }();
  return b;
}

namespace {

StageEntry entry() {
  StageEntry e;
  e.info.name = "report";
  e.info.summary = "measure accuracy, size, MACs/FLOPs and latency of every model; write the tables";
  e.info.params = report_binder().table();
  e.plan = plan;
  e.create = [] { return std::make_unique<ReportStage>(); };
  return e;
}

}  // namespace

EXPCTL_REGISTER(StageRegistry, entry());

}  // namespace expctl
