// Parameter tables: every stage, pruner, model and data set declares its parameters ONCE here
// (name, type, default, range, help). The same table drives validation, defaults, `expctl describe`
// and the generated YAML reference (docs/config-reference.md).
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "runner/core/yaml_tree.h"

namespace expctl {

enum class ParamType {
  Bool,        ///< true | false
  Int,         ///< integer
  Float,       ///< number
  String,      ///< any text
  Name,        ///< a safe file-name component: letters, digits, '.', '_', '-' (it becomes part of paths)
  Enum,        ///< one of `choices`
  Url,         ///< http://, https:// or file:// URL, or empty
  Path,        ///< a file-system path
  StringList,  ///< list of strings (each one of `choices` when given)
  Plugin,      ///< the name of a registered plugin of kind `plugin_kind`; its parameters join this block
};

/// A typed value with the place it came from (a YAML file, a --set, or the declared default).
struct Value {
  std::variant<std::monostate, bool, int64_t, double, std::string, std::vector<std::string>> v;
  Mark mark;
  bool is_default = false;
  nlohmann::ordered_json to_json() const;
  std::string to_text() const;  ///< as YAML flow text: `0.1`, `cosine`, `[conv1, fc]`
};

/// One declared parameter. Build with ParamTable's adders and the chainable setters below.
struct ParamSpec {
  std::string key;  ///< dotted, relative to its block: "epochs", "calibration.samples"
  ParamType type = ParamType::String;
  bool required = false;
  Value default_value;
  std::vector<std::string> choices;  ///< Enum, and allowed StringList items
  std::string plugin_kind;           ///< Plugin only: "model", "dataset", "pruner", ...
  std::string help;
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;

  ParamSpec& min(double v) {
    lo = v;
    lo_open = false;
    return *this;
  }
  ParamSpec& max(double v) {
    hi = v;
    hi_open = false;
    return *this;
  }
  ParamSpec& above(double v) {
    lo = v;
    lo_open = true;
    return *this;
  }
  ParamSpec& below(double v) {
    hi = v;
    hi_open = true;
    return *this;
  }

  std::string type_name() const;   ///< "int", "float", "enum", ...
  std::string range_text() const;  ///< "[1, inf)", "(0, 1)", "cosine | onecycle", "" when unconstrained
  std::string default_text() const;
};

/// An ordered list of parameter declarations.
///
///     ParamTable t;
///     t.add_int("epochs", 30, "Training epochs").min(1);
///     t.add_enum("schedule", "cosine", {"cosine", "onecycle"}, "Learning-rate schedule");
class ParamTable {
 public:
  ParamSpec& add_bool(const std::string& key, bool def, const std::string& help);
  ParamSpec& add_int(const std::string& key, int64_t def, const std::string& help);
  ParamSpec& add_float(const std::string& key, double def, const std::string& help);
  ParamSpec& add_string(const std::string& key, const std::string& def, const std::string& help);
  ParamSpec& add_path(const std::string& key, const std::string& def, const std::string& help);
  ParamSpec& add_url(const std::string& key, const std::string& def, const std::string& help);
  ParamSpec& add_name(const std::string& key, const std::string& def, const std::string& help);
  ParamSpec& add_enum(const std::string& key, const std::string& def, std::vector<std::string> choices,
                      const std::string& help);
  ParamSpec& add_list(const std::string& key, std::vector<std::string> def, const std::string& help,
                      std::vector<std::string> choices = {});
  /// A parameter without a default: leaving it out is an error.
  ParamSpec& add_required(const std::string& key, ParamType type, const std::string& help);
  ParamSpec& add_plugin(const std::string& key, const std::string& kind, const std::string& help);
  /// Appends every parameter of `other` (for a block that merges a plugin's parameters).
  void append(const ParamTable& other);

  const ParamSpec* find(const std::string& key) const;
  ParamSpec* find(const std::string& key);
  /// True when some key starts with `prefix` + "." (so `prefix` is a nested mapping).
  bool has_group(const std::string& prefix) const;
  /// The direct child names under `prefix` ("" for the top): keys and group names.
  std::vector<std::string> children(const std::string& prefix) const;
  const std::vector<ParamSpec>& specs() const { return specs_; }
  bool empty() const { return specs_.empty(); }

 private:
  ParamSpec& push(ParamSpec s);
  std::vector<ParamSpec> specs_;
};

/// Resolved values of one block, in declaration order.
class Params {
 public:
  void set(const std::string& key, Value v);
  bool has(const std::string& key) const;
  const Value& at(const std::string& key) const;  ///< throws std::out_of_range naming the key
  bool get_bool(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  ///< accepts ints too
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_list(const std::string& key) const;
  /// Nested JSON (dotted keys become nested objects), in declaration order.
  nlohmann::ordered_json to_json() const;
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, Value>> items_;
};

/// One configuration problem, printed as "file:line:col: dotted.key: reason".
struct Diagnostic {
  Mark mark;
  std::string key;
  std::string reason;
  std::string str() const;
};

/// Validates the mapping `block` (nullptr: absent, so all defaults) found at dotted `prefix` against `table`:
/// unknown keys (with a did-you-mean and the valid names), wrong types, out-of-range values and missing
/// required keys become diagnostics; defaults fill the rest. `where` marks the parent, used for
/// missing keys (yaml-cpp gives no position to something that is not there).
Params validate_block(const YNodePtr& block, const Mark& where, const std::string& prefix, const ParamTable& table,
                      std::vector<Diagnostic>& diags);

/// Parses and checks a single value against a spec; false (with a diagnostic) when it does not fit.
bool parse_value(const YNodePtr& node, const ParamSpec& spec, const std::string& full_key, Value& out,
                 std::vector<Diagnostic>& diags);

/// True when `v` lies in the spec's range (lo, hi, open or closed ends).
bool in_range(const ParamSpec& spec, double v);
/// The one wording of a range error: "must be in [0, 1), got 1.5", "must be >= 1, got 0".
std::string range_reason(const ParamSpec& spec, const std::string& got);

/// The one wording of a value outside a list: "expected one of a, b; got 'x' (did you mean 'a'?)".
std::string choice_reason(const std::string& got, const std::vector<std::string>& choices);

/// The one wording of an unknown name: `what` ("unknown stage 'x'"), the suggestion() for `got`, then
/// "; <list_label>: a, b" — "unknown stage 'fintune' (did you mean 'finetune'?); valid: download, finetune, ...".
std::string unknown_name(const std::string& what, const std::string& got, const std::vector<std::string>& valid,
                         const std::string& list_label = "valid");
/// " (did you mean 'a'?)" when a candidate is close to `got` (did_you_mean()), else "".
std::string suggestion(const std::string& got, const std::vector<std::string>& candidates);

/// True for a safe file-name component (letters, digits, '.', '_', '-'; not "." or ".."; at most 64 chars).
bool is_safe_name(const std::string& s);

/// The closest candidate to `word` (case-insensitive edit distance), or "" when none is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
/// "a, b, c"
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");
/// "a.b.c" -> {a, b, c}; empty when a part is empty.
std::vector<std::string> split_dotted(const std::string& key);

}  // namespace expctl
