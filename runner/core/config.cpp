#include "runner/core/config.h"

#include <torch/cuda.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "runner/core/compat.h"
#include "runner/core/error.h"
#include "runner/core/options_binder.h"
#include "runner/core/registry.h"

namespace expctl {
namespace fs = std::filesystem;

// ---- the engine's own sections -----------------------------------------------------------------

namespace {

const OptionBinder<ScenarioOptions>& scenario_binder() {
  static const OptionBinder<ScenarioOptions> b = [] {
    OptionBinder<ScenarioOptions> b;
    b.add_required(&ScenarioOptions::test_scenario, "test_scenario", ParamType::Name,
                   "test scenario number, e.g. TS1 (part of every path)");
    b.add_required(&ScenarioOptions::method, "method", ParamType::Name,
                   "method name, e.g. FineTuning, NeuronCoverage, Wanda");
    b.add(&ScenarioOptions::description, "description", "free text shown in the report");
    b.add_path(&ScenarioOptions::starts_from, "starts_from",
               "the scenario file whose fine-tuned model this one starts from (relative to this file)");
    return b;
  }();
  return b;
}

const OptionBinder<RuntimeOptions>& runtime_binder() {
  static const OptionBinder<RuntimeOptions> b = [] {
    OptionBinder<RuntimeOptions> b;
    b.add(&RuntimeOptions::device, "device", "auto (CUDA when present), cpu, cuda or cuda:N");
    b.add(&RuntimeOptions::threads, "threads", "CPU threads for LibTorch (0: one per core of this machine)")
        .min(0)
        .max(1024);
    b.add(&RuntimeOptions::seed, "seed", "random seed (data order, augmentation, initialisation)").min(0);
    return b;
  }();
  return b;
}

const OptionBinder<PathsOptions>& paths_binder() {
  static const OptionBinder<PathsOptions> b = [] {
    OptionBinder<PathsOptions> b;
    b.add_path(&PathsOptions::checkpoints, "checkpoints", "checkpoints and per-scenario report folders");
    b.add_path(&PathsOptions::models, "models", "downloaded model weights");
    b.add_path(&PathsOptions::datasets, "datasets", "downloaded data sets");
    b.add_path(&PathsOptions::reports, "reports", "cross-scenario reports (sweeps, comparisons)");
    return b;
  }();
  return b;
}

// The selector of the model and data set blocks: their `name` (the plugin's parameters join the block).
struct Selection {
  std::string name;
};

const OptionBinder<Selection>& selection_binder(const std::string& kind) {
  static const auto make = [](const std::string& k, const std::string& help) {
    OptionBinder<Selection> b;
    b.add_plugin(&Selection::name, kPluginKey, k, help);
    return b;
  };
  static const OptionBinder<Selection> model = make("model", "model name (see `expctl list`)");
  static const OptionBinder<Selection> dataset = make("dataset", "data set name (see `expctl list`)");
  return kind == "model" ? model : dataset;
}

}  // namespace

const ParamTable& scenario_section() { return scenario_binder().table(); }
const ParamTable& runtime_section() { return runtime_binder().table(); }
const ParamTable& paths_section() { return paths_binder().table(); }

std::string device_problem(const std::string& text) {
  const std::string quoted = "'" + printable(text) + "'";
  if (text == "auto" || text == "cpu") return "";
  if (text != "cuda") {
    // cuda:N, N a plain decimal (no sign, no leading zero: what LibTorch's parser accepts).
    const std::string n = text.rfind("cuda:", 0) == 0 ? text.substr(5) : "";
    const bool digits = !n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || (n.size() > 1 && n[0] == '0')) return "expected auto, cpu, cuda or cuda:N, got " + quoted;
  }
  if (!torch::cuda::is_available())
    return quoted + " needs CUDA, but this LibTorch build (" + std::string(compat::torch_version()) +
           ") sees no CUDA device; use auto or cpu";
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (text != "cuda" && std::stoll(text.substr(5)) >= count)
    return quoted + ": this machine has " + std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") +
           ", cuda:0 to cuda:" + std::to_string(count - 1);
  return "";
}

namespace {

std::vector<ScenarioCheck>& scenario_checks() {
  static std::vector<ScenarioCheck> checks;  // function-local: usable from other files' static initialisers
  return checks;
}

}  // namespace

bool add_scenario_check(ScenarioCheck check) {
  scenario_checks().push_back(std::move(check));
  return true;
}

namespace {

PluginInfo section_info(const std::string& name, const std::string& summary, const ParamTable& t) {
  PluginInfo info;
  info.kind = "section";
  info.name = name;
  info.summary = summary;
  info.params = t;
  return info;
}

EXPCTL_REGISTER_PLUGIN(section_info("scenario", "what the scenario is (names its outputs)", scenario_section()));
EXPCTL_REGISTER_PLUGIN(section_info("runtime", "device, threads and seed", runtime_section()));
EXPCTL_REGISTER_PLUGIN(section_info("paths", "where inputs and outputs live", paths_section()));

const std::vector<std::string> kFixedTopKeys{"schema", "include", "scenario", "model", "dataset",
                                             "stages", "runtime", "paths",    "sweep"};

// Sets root[parts...] = value, creating intermediate maps (marked `where`). Reports a non-map on the way.
void set_dotted(const YNodePtr& root, const std::vector<std::string>& parts, const YNodePtr& value, const Mark& where,
                const std::string& label, std::vector<std::string>& errors) {
  YNodePtr node = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YNodePtr next = node->get(parts[i]);
    if (!next || next->is_null()) {
      next = std::make_shared<YNode>();
      next->kind = YNode::Kind::Map;
      next->mark = where;
      node->set(parts[i], next, where);
    } else if (!next->is_map()) {
      std::string prefix;
      for (size_t j = 0; j <= i; ++j) prefix += (j ? "." : "") + parts[j];
      errors.push_back(label + ": " + prefix + " is " + next->describe() + ", not a mapping");
      return;
    }
    node = next;
  }
  node->set(parts.back(), value, where);
}

// Applies "a.b.c=value" to the tree. The value is YAML ("0.5", "[conv1, fc]", "{a: 1}").
void apply_override(const YNodePtr& root, const std::string& text, std::vector<std::string>& errors) {
  auto eq = text.find('=');
  std::string key = text.substr(0, eq);
  // Refused here, with the option named, rather than by a JSON writer after the run.
  if (std::string why = utf8_problem(text); !why.empty()) {
    const bool in_key = invalid_utf8_at(text) < key.size();
    errors.push_back("--set " + printable(text) + ": " + printable(key) + ": the " + (in_key ? "key" : "value") +
                     " is " + utf8_problem(in_key ? key : text.substr(eq + 1)));
    return;
  }
  if (eq == std::string::npos || key.empty()) {
    errors.push_back("--set " + text + ": expected KEY=VALUE with a dotted key, e.g. --set finetune.epochs=5");
    return;
  }
  std::vector<std::string> parts = split_dotted(key);
  if (parts.empty()) {
    errors.push_back("--set " + text + ": '" + key + "' is not a valid dotted key");
    return;
  }
  std::string label = "--set " + text;
  std::string value_text = text.substr(eq + 1);
  YNodePtr value;
  if (value_text.empty()) {
    value = std::make_shared<YNode>();
    value->kind = YNode::Kind::Scalar;
    value->quoted = true;
  } else {
    std::vector<std::string> perrs;
    value = parse_yaml(value_text, label, perrs);
    if (!value) {
      errors.push_back(label + ": the value is not valid YAML");
      return;
    }
  }
  // A --set has no line: its marks name the option instead (Mark::str prints just the label for line 0).
  auto label_ptr = std::make_shared<const std::string>(label);
  std::vector<YNode*> todo{value.get()};
  while (!todo.empty()) {
    YNode* n = todo.back();
    todo.pop_back();
    n->mark = Mark{label_ptr, 0, 0};
    for (auto& m : n->key_marks) m = Mark{label_ptr, 0, 0};
    for (auto& i : n->items) todo.push_back(i.get());
    for (auto& e : n->entries) todo.push_back(e.second.get());
  }
  set_dotted(root, parts, value, Mark{label_ptr, 0, 0}, label, errors);
}

// Validates a block whose table may contain a plugin selector (model.name, prune.pruner): the selected
// plugin's parameters join the block. An unknown plugin name is reported once, without a flood of
// "unknown key" errors for the keys that belong to the plugin the user meant.
Params validate_with_plugins(const YNodePtr& block, const Mark& where, const std::string& prefix,
                             const ParamTable& base, std::vector<Diagnostic>& diags,
                             const PluginInfo* owner = nullptr) {
  ParamTable table = base;
  std::vector<const PluginInfo*> checkers;
  if (owner && owner->check) checkers.push_back(owner);
  for (const auto& spec : base.specs()) {
    if (spec.type != ParamType::Plugin) continue;
    std::string full = prefix + "." + spec.key;
    YNodePtr sel = block && block->is_map() ? block->get(spec.key) : nullptr;
    if (!sel) {
      // Without the selector the other keys cannot be checked: report only what is missing.
      diags.push_back(
          {block && block->is_map() ? block->mark : where, full, "missing required key (" + spec.help + ")"});
      return {};
    }
    if (!sel->is_scalar()) {
      diags.push_back({sel->mark, full, "expected a " + spec.plugin_kind + " name, got " + sel->describe()});
      return {};
    }
    const PluginInfo* p = Catalog::instance().find(spec.plugin_kind, sel->scalar);
    if (!p) {
      auto names = Catalog::instance().names(spec.plugin_kind);
      const std::string reason =
          unknown_name("unknown " + spec.plugin_kind + " '" + sel->scalar + "'", sel->scalar, names);
      diags.push_back({sel->mark, full, reason});
      return {};
    }
    for (const auto& ps : p->params.specs()) {
      if (table.find(ps.key)) {
        diags.push_back({sel->mark, full, "plugin '" + p->name + "' redeclares the key '" + ps.key + "'"});
        return {};
      }
    }
    table.append(p->params);
    for (const auto& o : p->overrides) {
      ParamSpec* s = table.find(o.key);
      if (!s) {
        diags.push_back({sel->mark, full, "plugin '" + p->name + "' sets a default for '" + o.key +
                                              "', a key this block does not have"});
        return {};
      }
      s->default_value = o.value;
      s->default_value.is_default = true;
    }
    if (p->check) checkers.push_back(p);
  }
  size_t before = diags.size();
  Params params = validate_block(block, where, prefix, table, diags);
  if (diags.size() == before)  // cross-key checks only make sense on well-typed values
    for (const PluginInfo* c : checkers) c->check(params, prefix, diags);
  return params;
}

// The --set options that also apply to the scenario named by starts_from: those for model, dataset, runtime and
// paths, and those for a stage block the upstream file has. A smoke run of a pruning scenario with
// `--set finetune.epochs=1 --set paths.checkpoints=/tmp/x` then looks for the fine-tuned model where, and at the
// epoch, the same options made the fine-tuning scenario write it.
std::vector<std::string> upstream_overrides(const fs::path& upstream, const std::vector<std::string>& overrides) {
  std::vector<std::string> errors, out;
  YNodePtr tree = load_yaml_with_includes(upstream, errors);
  for (const auto& o : overrides) {
    std::string block = o.substr(0, o.find_first_of(".="));
    bool section = block == "model" || block == "dataset" || block == "runtime" || block == "paths";
    bool stage = tree && Catalog::instance().find("stage", block) && tree->get(block);
    if (section || stage) out.push_back(o);
  }
  return out;
}

// Every cell is validated (and later run) on its own: a block of a few lines must not ask for millions.
void check_sweep_size(const YNodePtr& block, const std::vector<SweepAxis>& axes, std::vector<Diagnostic>& diags) {
  if (axes.size() > kMaxSweepKeys) {
    diags.push_back({block->mark, "sweep",
                     std::to_string(axes.size()) + " swept keys, more than the " + std::to_string(kMaxSweepKeys) +
                         " one sweep may vary (each names part of the cell's folder)"});
    return;
  }
  size_t cells = 1;  // saturates just above the limit: no overflow, however long the lists
  std::vector<std::string> lengths;
  for (const auto& a : axes) {
    cells = std::min(cells * a.values.size(), kMaxSweepCells + 1);
    lengths.push_back(std::to_string(a.values.size()));
  }
  if (cells > kMaxSweepCells)
    diags.push_back({block->mark, "sweep",
                     "the lists give " + join(lengths, " x ") + " cells, more than the " +
                         std::to_string(kMaxSweepCells) + " one sweep may have; split it into several files"});
}

// The `sweep:` block: a mapping of dotted keys (into model, dataset, runtime or a stage block) to non-empty lists.
std::vector<SweepAxis> parse_sweep(const YNodePtr& block, const std::vector<std::string>& stage_names,
                                   std::vector<Diagnostic>& diags) {
  std::vector<SweepAxis> out;
  if (!block) return out;
  if (!block->is_map() || block->entries.empty()) {
    diags.push_back({block->mark, "sweep",
                     "expected a mapping of dotted keys to lists of values, e.g. sweep: {prune.sparsity: [0.3, 0.5]}"});
    return out;
  }
  for (size_t i = 0; i < block->entries.size(); ++i) {
    const auto& [key, value] = block->entries[i];
    const Mark& km = block->key_marks[i];
    std::vector<std::string> parts = split_dotted(key);
    const std::string head = parts.empty() ? "" : parts[0];
    const bool sweepable = head == "model" || head == "dataset" || head == "runtime" ||
                           std::find(stage_names.begin(), stage_names.end(), head) != stage_names.end();
    if (parts.size() < 2 || !sweepable) {
      diags.push_back({km, "sweep." + key,
                       "expected a dotted key into model, dataset, runtime or a stage block (e.g. prune.sparsity); "
                       "scenario, paths and stages cannot be swept"});
      continue;
    }
    if (!value->is_seq() || value->items.empty()) {
      diags.push_back({value->mark, "sweep." + key,
                       "expected a non-empty list of values, got " +
                           (value->is_seq() ? std::string("an empty list") : value->describe())});
      continue;
    }
    out.push_back({key, km, value->items});
  }
  check_sweep_size(block, out, diags);
  return out;
}

// The text of a string parameter, or "" when it is absent or did not validate (its problem is reported already).
std::string text_of(const Params& p, const std::string& key) {
  if (!p.has(key)) return "";
  const auto* s = std::get_if<std::string>(&p.at(key).v);
  return s ? *s : "";
}

// "a character device" etc. for something that is not a directory.
std::string kind_of(fs::file_type t) {
  switch (t) {
    case fs::file_type::regular:
      return "a regular file";
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::fifo:
      return "a FIFO (named pipe)";
    case fs::file_type::socket:
      return "a socket";
    default:
      return "not a directory";
  }
}

// Every paths.* key names a folder that a run creates or reads: one that exists as something else (/dev/null), or
// lies under something that is not a folder (/dev/null/x, a/file.txt/b), cannot be used. Refused here, so that
// `validate` says so (exit 2) instead of the run failing at its first write. Nothing is created.
void check_folders(const Params& paths, const Mark& top, std::vector<Diagnostic>& diags) {
  for (const auto& spec : paths_section().specs()) {
    const std::string text = text_of(paths, spec.key);
    if (text.empty()) continue;
    const Value& v = paths.at(spec.key);
    const Mark& where = v.mark.file ? v.mark : top;
    const std::string key = "paths." + spec.key;
    std::error_code ec;
    const fs::path dir(text);
    if (const auto st = fs::status(dir, ec); fs::exists(st)) {
      if (!fs::is_directory(st))
        diags.push_back({where, key, "'" + printable(text) + "' exists and is " + kind_of(st.type()) +
                                         ", not a directory; name a folder (it is created when missing)"});
      continue;
    }
    // The nearest part of the path that exists must be a folder for the rest to be created in it.
    for (fs::path up = dir.parent_path(); !up.empty(); up = up.parent_path()) {
      const auto st = fs::status(up, ec);
      if (!fs::exists(st)) {
        if (up == up.parent_path()) break;
        continue;
      }
      if (!fs::is_directory(st))
        diags.push_back({where, key, "'" + printable(text) + "' lies under '" + printable(up.string()) + "', which is " +
                                         kind_of(st.type()) + ", not a directory: nothing can be created there"});
      break;
    }
  }
}

// At most kMaxReportedProblems lines, then how many more there were.
std::string capped(const std::vector<std::string>& lines) {
  if (lines.size() <= kMaxReportedProblems) return join(lines, "\n");
  std::vector<std::string> head(lines.begin(), lines.begin() + kMaxReportedProblems);
  head.push_back("... and " + std::to_string(lines.size() - kMaxReportedProblems) + " more problems");
  return join(head, "\n");
}

// Top-level keys that are neither expctl's nor a stage's.
void check_top_keys(const YNodePtr& root, const std::vector<std::string>& stage_names,
                    std::vector<Diagnostic>& diags) {
  std::vector<std::string> top_keys = kFixedTopKeys;
  top_keys.erase(std::find(top_keys.begin(), top_keys.end(), "include"));
  top_keys.insert(top_keys.end(), stage_names.begin(), stage_names.end());
  for (size_t i = 0; i < root->entries.size(); ++i) {
    const std::string& key = root->entries[i].first;
    if (std::find(top_keys.begin(), top_keys.end(), key) != top_keys.end()) continue;
    const std::string reason = unknown_name("unknown key", key, top_keys, "valid top-level keys");
    diags.push_back({root->key_marks[i], key, reason});
  }
}

// schema: required, and the version this expctl reads.
void check_schema(const YNodePtr& root, std::vector<Diagnostic>& diags) {
  if (YNodePtr s = root->get("schema")) {
    ParamSpec spec;
    spec.key = "schema";
    spec.type = ParamType::Int;
    Value v;
    if (parse_value(s, spec, "schema", v, diags) && std::get<int64_t>(v.v) != kSchemaVersion)
      diags.push_back({s->mark, "schema",
                       "unsupported schema version " + s->scalar + "; this expctl reads version " +
                           std::to_string(kSchemaVersion)});
  } else {
    diags.push_back({root->mark, "schema", "missing required key (the scenario format version: schema: 1)"});
  }
}

// stages: a non-empty list of registered stage names, each once.
std::vector<std::string> parse_stages(const YNodePtr& root, const std::vector<std::string>& stage_names,
                                      std::vector<Diagnostic>& diags) {
  std::vector<std::string> stages;
  YNodePtr st = root->get("stages");
  if (!st) {
    diags.push_back(
        {root->mark, "stages", "missing required key (the list of stages to run, e.g. [download, finetune, report])"});
  } else if (!st->is_seq() || st->items.empty()) {
    diags.push_back({st->mark, "stages",
                     "expected a non-empty list of stage names, got " +
                         (st->is_seq() ? std::string("an empty list") : st->describe())});
  } else {
    for (const auto& item : st->items) {
      if (!item->is_scalar()) {
        diags.push_back({item->mark, "stages", "expected a stage name, got " + item->describe()});
      } else if (!Catalog::instance().find("stage", item->scalar)) {
        diags.push_back(
            {item->mark, "stages", unknown_name("unknown stage '" + item->scalar + "'", item->scalar, stage_names)});
      } else if (std::find(stages.begin(), stages.end(), item->scalar) != stages.end()) {
        diags.push_back({item->mark, "stages", "stage '" + item->scalar + "' is listed twice"});
      } else {
        stages.push_back(item->scalar);
      }
    }
  }
  return stages;
}

ScenarioConfig load_impl(const fs::path& file, const std::vector<std::string>& overrides,
                         const std::vector<fs::path>& chain, const std::string& cell_id = "",
                         const std::vector<CellSetting>& cell = {});

// scenario.starts_from: another scenario file, relative to this one, loaded (into cfg.upstream) and checked to
// belong to the same test scenario, model and data set; loops and depth are bounded.
void check_starts_from(const fs::path& file, const std::vector<std::string>& overrides,
                       const std::vector<fs::path>& chain, ScenarioConfig& cfg, std::vector<Diagnostic>& diags) {
  // starts_from: another scenario file, relative to this one.
  const std::string& key = scenario_binder().key(&ScenarioOptions::starts_from);
  if (const std::string starts_from = text_of(cfg.scenario, key); !starts_from.empty()) {
    const Value& v = cfg.scenario.at(key);
    fs::path up = file.parent_path() / starts_from;
    std::vector<fs::path> below = chain;
    below.push_back(file.lexically_normal());
    std::error_code ec;
    const fs::path up_canon = fs::weakly_canonical(up, ec);
    const auto loop = std::find_if(below.begin(), below.end(), [&](const fs::path& f) {
      std::error_code e;
      return fs::weakly_canonical(f, e) == up_canon;
    });
    if (loop != below.end()) {
      // Said once, here, where the loop closes: each file above only says that the one it starts from is not valid.
      std::string cycle;
      for (auto it = loop; it != below.end(); ++it) cycle += it->string() + " -> ";
      diags.push_back({v.mark, "scenario.starts_from",
                       "scenarios start from each other in a loop: " + cycle + up.lexically_normal().string()});
    } else if (below.size() > kMaxStartsFromDepth) {
      diags.push_back({v.mark, "scenario.starts_from",
                       "scenarios start from each other more than " + std::to_string(kMaxStartsFromDepth) +
                           " deep, the most one scenario may"});
    } else if (!fs::exists(up, ec)) {
      diags.push_back({v.mark, "scenario.starts_from", "file not found: " + up.lexically_normal().string()});
    } else {  // anything else that is not a scenario file (a folder, a FIFO, too big) is reported by its loader
      try {
        auto upstream = std::make_shared<ScenarioConfig>(
            load_impl(up.lexically_normal(), upstream_overrides(up, overrides), below));
        // Compared only where this file's own values are valid (their problems are reported already).
        const std::string ts = text_of(cfg.scenario, scenario_binder().key(&ScenarioOptions::test_scenario));
        if (!ts.empty() && upstream->test_scenario() != ts)
          diags.push_back({v.mark, "scenario.starts_from",
                           up.lexically_normal().string() + " belongs to test scenario " + upstream->test_scenario() +
                               ", not " + ts});
        const std::string& name = selection_binder("model").key(&Selection::name);
        const std::string model = text_of(cfg.model, name), dataset = text_of(cfg.dataset, name);
        if (!model.empty() && !dataset.empty() &&
            (upstream->model_name() != model || upstream->dataset_name() != dataset))
          diags.push_back({v.mark, "scenario.starts_from",
                           up.lexically_normal().string() + " trains " + upstream->model_name() + " on " +
                               upstream->dataset_name() + ", this scenario uses " + model + " on " + dataset});
        cfg.upstream = std::move(upstream);
      } catch (const ConfigError& e) {
        diags.push_back({v.mark, "scenario.starts_from",
                         up.lexically_normal().string() + " is not a valid scenario:\n" + e.what()});
      }
    }
  }
}

// The typed sections of a scenario whose blocks all validated.
void read_sections(ScenarioConfig& cfg) {
  cfg.about = scenario_binder().read(cfg.scenario, "scenario");
  cfg.run = runtime_binder().read(cfg.runtime, "runtime");
  cfg.dirs = paths_binder().read(cfg.paths, "paths");
  cfg.model_plugin = selection_binder("model").read(cfg.model, "model").name;
  cfg.dataset_plugin = selection_binder("dataset").read(cfg.dataset, "dataset").name;
  const PluginInfo* model = Catalog::instance().find("model", cfg.model_plugin);
  cfg.model_label = model && model->label ? model->label(cfg.model) : cfg.model_plugin;
  if (cfg.model_label.empty()) cfg.model_label = cfg.model_plugin;
  cfg.model_pretrained = model && model->pretrained && model->pretrained(cfg.model);
}

// `chain`: the files that start from this one, outermost first (a loop of starts_from is found by it).
ScenarioConfig load_impl(const fs::path& file, const std::vector<std::string>& overrides,
                         const std::vector<fs::path>& chain, const std::string& cell_id,
                         const std::vector<CellSetting>& cell) {
  const Catalog& catalog = Catalog::instance();
  const auto stage_names = catalog.names("stage");
  IncludeRules rules;
  rules.top_keys = kFixedTopKeys;
  rules.top_keys.insert(rules.top_keys.end(), stage_names.begin(), stage_names.end());
  rules.reached = !chain.empty();
  std::vector<std::string> errors;
  YNodePtr root = load_yaml_with_includes(file, errors, rules);
  if (root) {
    for (const auto& o : overrides) apply_override(root, o, errors);
    for (const auto& c : cell) set_dotted(root, split_dotted(c.key), c.value, c.key_mark, c.key_mark.str(), errors);
  }
  if (!errors.empty()) throw ConfigError(capped(errors));

  std::vector<Diagnostic> diags;
  ScenarioConfig cfg;
  cfg.file = file;
  const Mark top = root->mark;

  check_top_keys(root, stage_names, diags);
  check_schema(root, diags);

  cfg.sweep = parse_sweep(root->get("sweep"), stage_names, diags);
  if (!cell_id.empty()) {
    cfg.sweep.clear();  // a cell is one concrete run
    cfg.sweep_cell = cell_id;
    for (const auto& c : cell) cfg.sweep_values[c.key] = c.value->is_scalar() ? c.value->scalar : to_yaml(c.value);
  }
  cfg.scenario = validate_block(root->get("scenario"), top, "scenario", scenario_section(), diags);
  cfg.runtime = validate_block(root->get("runtime"), top, "runtime", runtime_section(), diags);
  if (const Value& device = runtime_binder().value(cfg.runtime, &RuntimeOptions::device);
      std::holds_alternative<std::string>(device.v))
    if (std::string why = device_problem(std::get<std::string>(device.v)); !why.empty())
      diags.push_back({device.mark.file ? device.mark : top, "runtime.device", why});
  cfg.paths = validate_block(root->get("paths"), top, "paths", paths_section(), diags);
  check_folders(cfg.paths, top, diags);

  cfg.model = validate_with_plugins(root->get("model"), top, "model", selection_binder("model").table(), diags);
  cfg.dataset = validate_with_plugins(root->get("dataset"), top, "dataset", selection_binder("dataset").table(), diags);

  cfg.stages = parse_stages(root, stage_names, diags);

  // Stage blocks: every block present is checked (shared defaults may configure stages a file does not
  // run); listed stages get their defaults even without a block.
  for (const auto& name : stage_names) {
    YNodePtr block = root->get(name);
    bool listed = std::find(cfg.stages.begin(), cfg.stages.end(), name) != cfg.stages.end();
    if (!block && !listed) continue;
    const PluginInfo* stage = catalog.find("stage", name);
    Params p = validate_with_plugins(block, top, name, stage->params, diags, stage);
    if (listed) cfg.blocks[name] = std::move(p);
  }

  check_starts_from(file, overrides, chain, cfg, diags);

  if (diags.empty()) {
    read_sections(cfg);
    for (const auto& check : scenario_checks()) check(cfg, diags);
  }

  if (!diags.empty()) {
    std::stable_sort(diags.begin(), diags.end(), [](const Diagnostic& a, const Diagnostic& b) {
      std::string fa = a.mark.file ? *a.mark.file : "", fb = b.mark.file ? *b.mark.file : "";
      if (fa != fb) return fa < fb;
      if (a.mark.line != b.mark.line) return a.mark.line < b.mark.line;
      return a.mark.col < b.mark.col;
    });
    std::vector<std::string> lines;
    for (size_t i = 0; i < std::min(diags.size(), kMaxReportedProblems); ++i) lines.push_back(diags[i].str());
    if (diags.size() > kMaxReportedProblems)
      lines.push_back("... and " + std::to_string(diags.size() - kMaxReportedProblems) + " more problems");
    throw ConfigError(join(lines, "\n"));
  }
  return cfg;
}

void emit_json(YAML::Emitter& out, const nlohmann::ordered_json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit_json(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : j) emit_json(out, x);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    // Quote strings that YAML would otherwise read as something else (numbers, booleans, empty).
    bool plain = !s.empty() && s.find_first_of(":#{}[],&*?|<>=!%@`'\"") == std::string::npos && s != "true" &&
                 s != "false" && s != "null" && s != "~" &&
                 !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '.' || s[0] == '+');
    if (plain)
      out << s;
    else
      out << YAML::DoubleQuoted << s;
  } else if (j.is_null()) {
    out << YAML::Null;
  } else {
    out << j.dump();
  }
}

}  // namespace

ScenarioConfig load_scenario(const fs::path& file, const std::vector<std::string>& overrides) {
  return load_impl(file, overrides, {});
}

ScenarioConfig load_scenario_cell(const fs::path& file, const std::vector<std::string>& overrides,
                                  const std::string& cell_id, const std::vector<CellSetting>& settings) {
  return load_impl(file, overrides, {}, cell_id, settings);
}

nlohmann::ordered_json ScenarioConfig::resolved() const {
  nlohmann::ordered_json j;
  j["schema"] = kSchemaVersion;
  j["scenario"] = scenario.to_json();
  j["model"] = model.to_json();
  j["dataset"] = dataset.to_json();
  j["stages"] = stages;
  j["runtime"] = runtime.to_json();
  j["paths"] = paths.to_json();
  for (const auto& s : stages) j[s] = blocks.at(s).to_json();
  return j;
}

std::string json_to_yaml(const nlohmann::ordered_json& j) {
  YAML::Emitter out;
  emit_json(out, j);
  return std::string(out.c_str()) + "\n";
}

std::string ScenarioConfig::resolved_yaml() const { return json_to_yaml(resolved()); }

}  // namespace expctl
