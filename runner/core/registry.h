// Registries: name -> plugin. Every model, data set, pruner and stage registers itself with ONE line at
// the end of its own file, naming the registry of its kind and the function that builds its entry:
//
//     EXPCTL_REGISTER(PrunerRegistry, entry());   // plugins/wanda/wanda.cpp; stages: StageRegistry
//
// The catalog holds what configuration needs (name, summary, parameter table); typed factories live in the
// registry of their kind (StageRegistry in runner/pipeline/pipeline.h, PrunerRegistry in plugins/pruner.h, ...). All
// modules are CMake OBJECT libraries, so these static registrations are never dropped by the linker; tests/core checks
// that every built-in name is present.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runner/core/params.h"

namespace expctl {

/// The registry kinds, in the order `expctl list` shows them.
inline const std::vector<std::string>& plugin_kinds() {
  static const std::vector<std::string> kinds{"model", "dataset", "pruner", "stage"};
  return kinds;
}

/// What configuration and `describe` know about a plugin.
struct PluginInfo {
  std::string kind;     ///< "model", "dataset", "pruner" or "stage"
  std::string name;     ///< registry name, used in YAML
  std::string summary;  ///< one line for `expctl list`
  std::string details;  ///< longer text for `expctl describe` (optional)
  ParamTable params;    ///< its parameters (for a model/data set: the keys beside `name`)
  std::string code;     ///< pruners: the short code used in checkpoint names ("NC", "W")
  /// Optional checks across several keys (e.g. n < m), run after the table's own; they add diagnostics for
  /// keys under `prefix` (the block's dotted name).
  std::function<void(const Params& params, const std::string& prefix, std::vector<Diagnostic>& diags)> check;
  /// Models: the name the model gets in output paths, from its block (unset: the plugin's name).
  std::function<std::string(const Params& params)> label;
  /// Models: whether the block starts from pretrained weights (unset: no).
  std::function<bool(const Params& params)> pretrained;

  /// A default this plugin gives to a key of the block it joins (a pruner's calibration.samples for the prune
  /// stage's key), with what the plugin does with the value, for `expctl describe`.
  struct DefaultOverride {
    std::string key;
    Value value;
    std::string note;
  };
  /// Applied to the block's table when the plugin is selected.
  std::vector<DefaultOverride> overrides;
};

/// All registered plugins' metadata, by kind and name.
class Catalog {
 public:
  static Catalog& instance();
  /// Registers `info`; a second registration of the same kind and name is a programming error (aborts).
  bool add(PluginInfo info);
  const PluginInfo* find(const std::string& kind, const std::string& name) const;
  /// Sorted names of one kind.
  std::vector<std::string> names(const std::string& kind) const;
  /// Finds a plugin of any kind by name (for `describe NAME`); empty when none.
  std::vector<const PluginInfo*> find_any(const std::string& name) const;

 private:
  std::map<std::string, std::map<std::string, PluginInfo>> by_kind_;
};

/// A registry of typed entries (each with a PluginInfo `info` and its factories) for one kind; adding an
/// entry also puts its metadata into the Catalog. `Entry::kKind` names the kind ("stage", "model", ...).
template <class Entry>
class TypedRegistry {
 public:
  static bool add(Entry entry) {
    entry.info.kind = Entry::kKind;
    Catalog::instance().add(entry.info);
    std::string name = entry.info.name;
    table().insert_or_assign(std::move(name), std::move(entry));
    return true;
  }
  /// The entry, or nullptr (config validation has already rejected unknown names).
  static const Entry* find(const std::string& name) {
    auto it = table().find(name);
    return it == table().end() ? nullptr : &it->second;
  }

 private:
  static std::map<std::string, Entry>& table() {
    static std::map<std::string, Entry> t;  // function-local: usable from other files' static initialisers
    return t;
  }
};

#define EXPCTL_CONCAT_INNER(a, b) a##b
#define EXPCTL_CONCAT(a, b) EXPCTL_CONCAT_INNER(a, b)
/// One-line registration of a typed entry: EXPCTL_REGISTER(DatasetRegistry, cifar10());
#define EXPCTL_REGISTER(registry, entry_expr) \
  static const bool EXPCTL_CONCAT(expctl_registered_, __LINE__) = registry::add(entry_expr)
/// Registration of metadata without a factory: the configuration sections (scenario, runtime, paths) that
/// `describe` and the docs show beside the plugins (runner/core/config.cpp).
#define EXPCTL_REGISTER_PLUGIN(info_expr) \
  static const bool EXPCTL_CONCAT(expctl_registered_, __LINE__) = ::expctl::Catalog::instance().add(info_expr)

}  // namespace expctl
