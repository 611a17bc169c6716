// Parameters declared once: each entry of a block's parameter table (a stage, a pruner, a model, a data set, a
// section) is bound to a field of its options struct, so the default is the field's initializer, and reading a
// block fills the struct (as PyTorch's TORCH_ARG and micromamba's configurables do). Nothing is written twice: not
// the key, not the default, not the range.
//
//     struct Options {
//       double sparsity = 0.5;
//       enum class Mode { Unstructured, Structured } mode = Mode::Unstructured;
//     };
//     const OptionBinder<Options>& binder() {
//       static const OptionBinder<Options> b = [] {
//         OptionBinder<Options> b;
//         b.add(&Options::sparsity, "sparsity", "fraction of weights removed").min(0).below(1);
//         b.add_enum(&Options::mode, "mode", {{"unstructured", Options::Mode::Unstructured},
//                                             {"structured", Options::Mode::Structured}}, "what is removed");
//         return b;
//       }();
//       return b;
//     }
//     entry.info.params = binder().table();           // validation, `expctl describe`, the docs
//     Options o = binder().read(prune_block, "wanda"); // absent keys keep the defaults
#pragma once
#include <cmath>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runner/core/error.h"
#include "runner/core/params.h"

namespace expctl {

template <class O>
class OptionBinder {
 public:
  /// `defaults` gives every bound entry its default (a default-constructed O: the fields' initializers).
  explicit OptionBinder(O defaults = O{}) : defaults_(std::move(defaults)) {}

  ParamSpec& add(bool O::*field, const std::string& key, const std::string& help) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx&) { o.*field = p.get_bool(key); });
    offsets_.push_back(offset_of(field));
    return table_.add_bool(key, defaults_.*field, help);
  }
  ParamSpec& add(int64_t O::*field, const std::string& key, const std::string& help) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx& c) {
      o.*field = p.get_int(key);
      check_range(c, double(o.*field));
    });
    offsets_.push_back(offset_of(field));
    return table_.add_int(key, defaults_.*field, help);
  }
  ParamSpec& add(double O::*field, const std::string& key, const std::string& help) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx& c) {
      o.*field = p.get_float(key);
      check_range(c, o.*field);
    });
    offsets_.push_back(offset_of(field));
    return table_.add_float(key, defaults_.*field, help);
  }
  ParamSpec& add(std::string O::*field, const std::string& key, const std::string& help) {
    bind_string(field, key);
    return table_.add_string(key, defaults_.*field, help);
  }
  /// A file-system path, a URL (http, https, file or empty), a safe file-name component: text checked as its kind.
  ParamSpec& add_path(std::string O::*field, const std::string& key, const std::string& help) {
    bind_string(field, key);
    return table_.add_path(key, defaults_.*field, help);
  }
  ParamSpec& add_url(std::string O::*field, const std::string& key, const std::string& help) {
    bind_string(field, key);
    return table_.add_url(key, defaults_.*field, help);
  }
  ParamSpec& add_name(std::string O::*field, const std::string& key, const std::string& help) {
    bind_string(field, key);
    return table_.add_name(key, defaults_.*field, help);
  }
  /// Text that must be one of `choices`, kept as text (the default: the field's initializer).
  ParamSpec& add_choice(std::string O::*field, const std::string& key, std::vector<std::string> choices,
                        const std::string& help) {
    bind_string(field, key);
    return table_.add_enum(key, defaults_.*field, std::move(choices), help);
  }
  /// Text without a default (Name, Path, Url, String): leaving it out of the block is an error.
  ParamSpec& add_required(std::string O::*field, const std::string& key, ParamType type, const std::string& help) {
    bind_string(field, key);
    return table_.add_required(key, type, help);
  }
  /// A list without a default.
  ParamSpec& add_required(std::vector<std::string> O::*field, const std::string& key, const std::string& help) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx&) { o.*field = p.get_list(key); });
    offsets_.push_back(offset_of(field));
    return table_.add_required(key, ParamType::StringList, help);
  }
  /// The name of a registered plugin of `kind` (its parameters join the block).
  ParamSpec& add_plugin(std::string O::*field, const std::string& key, const std::string& kind,
                        const std::string& help) {
    bind_string(field, key);
    return table_.add_plugin(key, kind, help);
  }
  ParamSpec& add(std::vector<std::string> O::*field, const std::string& key, const std::string& help,
                 std::vector<std::string> choices = {}) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx&) { o.*field = p.get_list(key); });
    offsets_.push_back(offset_of(field));
    return table_.add_list(key, defaults_.*field, help, std::move(choices));
  }
  /// A field of any type spelt by names in YAML (an enum, or a bool shown as two words): `values` maps each name
  /// to its value; the default is the name of the field's default value.
  template <class E>
  ParamSpec& add_enum(E O::*field, const std::string& key, std::vector<std::pair<std::string, E>> values,
                      const std::string& help) {
    std::vector<std::string> names;
    std::string def;
    for (const auto& [name, value] : values) {
      names.push_back(name);
      if (value == defaults_.*field && def.empty()) def = name;
    }
    setters_.push_back([field, key, values, names](const Params& p, O& o, const Ctx& c) {
      const std::string& got = p.get_string(key);
      for (const auto& [name, value] : values)
        if (name == got) {
          o.*field = value;
          return;
        }
      throw Error(c.who + ": " + key + ": " + choice_reason(got, names));
    });
    offsets_.push_back(offset_of(field));
    return table_.add_enum(key, def, names, help);
  }

  /// The key bound to `field` ("calibration.samples" for &Options::samples): for a diagnostic that points at where
  /// the value was written (`params.at(binder.key(&O::samples)).mark`). Throws std::logic_error for a field never
  /// bound, a programming error.
  template <class T, class C>  // C: O or a base of O (a field of the base struct)
  const std::string& key(T C::*field) const {
    const std::ptrdiff_t at = offset_of(static_cast<T O::*>(field));
    for (size_t i = 0; i < offsets_.size(); ++i)
      if (offsets_[i] == at) return table_.specs()[i].key;
    throw std::logic_error("OptionBinder::key: the field is not bound");
  }
  /// Where the value of `field` came from, and whether it is the declared default.
  template <class T, class C>
  const Value& value(const Params& params, T C::*field) const {
    return params.at(key(field));
  }

  /// The table: every bound key, with its default, range and help.
  const ParamTable& table() const { return table_; }
  /// The defaults with every bound key that `params` holds applied. Values out of a declared range (hand-built
  /// Params skip the YAML validation) throw expctl::Error "<who>: <key>: must be in ..., got v", the wording of the YAML validation.
  O read(const Params& params, const std::string& who) const {
    O o = defaults_;
    for (size_t i = 0; i < setters_.size(); ++i)
      if (params.has(table_.specs()[i].key)) setters_[i](params, o, Ctx{who, table_.specs()[i]});
    return o;
  }

 private:
  struct Ctx {
    const std::string& who;
    const ParamSpec& spec;
  };

  static void check_range(const Ctx& c, double v) {
    if (in_range(c.spec, v)) return;
    std::string got = std::to_string(v);
    if (v == std::floor(v) && std::abs(v) < 1e15) got = std::to_string(int64_t(v));
    throw Error(c.who + ": " + c.spec.key + ": " + range_reason(c.spec, got));
  }

  // Where `field` lies inside an O: the identity of a binding that survives copies of the binder.
  template <class T>
  std::ptrdiff_t offset_of(T O::*field) const {
    return reinterpret_cast<const char*>(&(defaults_.*field)) - reinterpret_cast<const char*>(&defaults_);
  }
  void bind_string(std::string O::*field, const std::string& key) {
    setters_.push_back([field, key](const Params& p, O& o, const Ctx&) { o.*field = p.get_string(key); });
    offsets_.push_back(offset_of(field));
  }

  O defaults_;
  ParamTable table_;
  std::vector<std::ptrdiff_t> offsets_;  ///< per entry, the bound field's offset_of()
  std::vector<std::function<void(const Params&, O&, const Ctx&)>> setters_;
};

}  // namespace expctl
