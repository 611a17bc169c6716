#include "runner/core/params.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>
#include <stdexcept>

namespace expctl {

namespace {

std::string format_number(double d) {
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::ostringstream ss;
  ss.precision(10);
  ss << d;
  return ss.str();
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

std::vector<std::string> split_dotted(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0, dot;
  while ((dot = key.find('.', start)) != std::string::npos) {
    parts.push_back(key.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(key.substr(start));
  for (const auto& p : parts)
    if (p.empty()) return {};
  return parts;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  std::string lw = lower(word);
  for (const auto& c : candidates) {
    size_t d = edit_distance(lw, lower(c));
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_d <= limit ? best : std::string();
}

bool is_safe_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  if (s.find("..") != std::string::npos) return false;
  for (unsigned char c : s)
    if (!std::isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  return s[0] != '.' && s[0] != '-';
}

// ---- Value -------------------------------------------------------------------------------------

nlohmann::ordered_json Value::to_json() const {
  return std::visit(
      [](const auto& x) -> nlohmann::ordered_json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>)
          return nullptr;
        else
          return x;
      },
      v);
}

std::string Value::to_text() const {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>)
          return "null";
        else if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t>)
          return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>)
          return format_number(x);
        else if constexpr (std::is_same_v<T, std::string>)
          return x.empty() ? "\"\"" : x;
        else
          return "[" + join(x) + "]";
      },
      v);
}

// ---- ParamSpec ---------------------------------------------------------------------------------

std::string ParamSpec::type_name() const {
  switch (type) {
    case ParamType::Bool:
      return "bool";
    case ParamType::Int:
      return "int";
    case ParamType::Float:
      return "float";
    case ParamType::String:
      return "string";
    case ParamType::Name:
      return "name";
    case ParamType::Enum:
      return "enum";
    case ParamType::Url:
      return "url";
    case ParamType::Path:
      return "path";
    case ParamType::StringList:
      return "list";
    case ParamType::Plugin:
      return plugin_kind;
  }
  return "?";
}

std::string ParamSpec::range_text() const {
  if (type == ParamType::Enum || (type == ParamType::StringList && !choices.empty())) return join(choices, " | ");
  if (type != ParamType::Int && type != ParamType::Float) return "";
  if (std::isinf(lo) && std::isinf(hi)) return "";
  return std::string(lo_open || std::isinf(lo) ? "(" : "[") + format_number(lo) + ", " + format_number(hi) +
         (hi_open || std::isinf(hi) ? ")" : "]");
}

std::string ParamSpec::default_text() const { return required ? "(required)" : default_value.to_text(); }

// ---- ParamTable --------------------------------------------------------------------------------

namespace {
ParamSpec make_spec(const std::string& key, ParamType type) {
  ParamSpec s;
  s.key = key;
  s.type = type;
  return s;
}
}  // namespace

ParamSpec& ParamTable::push(ParamSpec s) {
  if (find(s.key)) throw std::logic_error("parameter declared twice: " + s.key);
  s.default_value.is_default = true;
  specs_.push_back(std::move(s));
  return specs_.back();
}

ParamSpec& ParamTable::add_bool(const std::string& key, bool def, const std::string& help) {
  ParamSpec s = make_spec(key, ParamType::Bool);
  s.default_value.v = def;
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_int(const std::string& key, int64_t def, const std::string& help) {
  ParamSpec s = make_spec(key, ParamType::Int);
  s.default_value.v = def;
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_float(const std::string& key, double def, const std::string& help) {
  ParamSpec s = make_spec(key, ParamType::Float);
  s.default_value.v = def;
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_string(const std::string& key, const std::string& def, const std::string& help) {
  ParamSpec s = make_spec(key, ParamType::String);
  s.default_value.v = def;
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_path(const std::string& key, const std::string& def, const std::string& help) {
  ParamSpec& s = add_string(key, def, help);
  s.type = ParamType::Path;
  return s;
}
ParamSpec& ParamTable::add_url(const std::string& key, const std::string& def, const std::string& help) {
  ParamSpec& s = add_string(key, def, help);
  s.type = ParamType::Url;
  return s;
}
ParamSpec& ParamTable::add_name(const std::string& key, const std::string& def, const std::string& help) {
  ParamSpec& s = add_string(key, def, help);
  s.type = ParamType::Name;
  return s;
}
ParamSpec& ParamTable::add_enum(const std::string& key, const std::string& def, std::vector<std::string> choices,
                                const std::string& help) {
  ParamSpec s = make_spec(key, ParamType::Enum);
  s.default_value.v = def;
  s.choices = std::move(choices);
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_list(const std::string& key, std::vector<std::string> def, const std::string& help,
                                std::vector<std::string> choices) {
  ParamSpec s = make_spec(key, ParamType::StringList);
  s.default_value.v = std::move(def);
  s.choices = std::move(choices);
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_required(const std::string& key, ParamType type, const std::string& help) {
  ParamSpec s = make_spec(key, type);
  s.required = true;
  s.help = help;
  return push(std::move(s));
}
ParamSpec& ParamTable::add_plugin(const std::string& key, const std::string& kind, const std::string& help) {
  ParamSpec& s = add_required(key, ParamType::Plugin, help);
  s.plugin_kind = kind;
  return s;
}

void ParamTable::append(const ParamTable& other) {
  for (const auto& s : other.specs_) push(s);
}

const ParamSpec* ParamTable::find(const std::string& key) const {
  for (const auto& s : specs_)
    if (s.key == key) return &s;
  return nullptr;
}

ParamSpec* ParamTable::find(const std::string& key) {
  return const_cast<ParamSpec*>(static_cast<const ParamTable&>(*this).find(key));
}

bool ParamTable::has_group(const std::string& prefix) const {
  std::string p = prefix + ".";
  for (const auto& s : specs_)
    if (s.key.compare(0, p.size(), p) == 0) return true;
  return false;
}

std::vector<std::string> ParamTable::children(const std::string& prefix) const {
  std::vector<std::string> out;
  std::string p = prefix.empty() ? "" : prefix + ".";
  for (const auto& s : specs_) {
    if (s.key.compare(0, p.size(), p) != 0) continue;
    std::string rest = s.key.substr(p.size());
    std::string child = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), child) == out.end()) out.push_back(child);
  }
  return out;
}

// ---- Params ------------------------------------------------------------------------------------

void Params::set(const std::string& key, Value v) {
  for (auto& [k, val] : items_)
    if (k == key) {
      val = std::move(v);
      return;
    }
  items_.emplace_back(key, std::move(v));
}

bool Params::has(const std::string& key) const {
  for (const auto& kv : items_)
    if (kv.first == key) return true;
  return false;
}

const Value& Params::at(const std::string& key) const {
  for (const auto& kv : items_)
    if (kv.first == key) return kv.second;
  throw std::out_of_range("no parameter '" + key + "'");
}

bool Params::get_bool(const std::string& key) const { return std::get<bool>(at(key).v); }
int64_t Params::get_int(const std::string& key) const { return std::get<int64_t>(at(key).v); }
double Params::get_float(const std::string& key) const {
  const auto& v = at(key).v;
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}
const std::string& Params::get_string(const std::string& key) const { return std::get<std::string>(at(key).v); }
const std::vector<std::string>& Params::get_list(const std::string& key) const {
  return std::get<std::vector<std::string>>(at(key).v);
}

nlohmann::ordered_json Params::to_json() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [key, val] : items_) {
    nlohmann::ordered_json* node = &out;
    size_t start = 0, dot;
    while ((dot = key.find('.', start)) != std::string::npos) {
      node = &(*node)[key.substr(start, dot - start)];
      start = dot + 1;
    }
    (*node)[key.substr(start)] = val.to_json();
  }
  return out;
}

// ---- validation --------------------------------------------------------------------------------

std::string Diagnostic::str() const { return mark.str() + ": " + key + ": " + reason; }

namespace {

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j)
    if (!std::isdigit(static_cast<unsigned char>(s[j]))) return false;
  errno = 0;
  long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return false;
  out = v;
  return true;
}

bool parse_float(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) return false;
  // strtod accepts "nan", "inf" and hex floats; a config value should be a plain decimal.
  for (char c : s)
    if (std::isalpha(static_cast<unsigned char>(c)) && c != 'e' && c != 'E') return false;
  out = v;
  return true;
}

}  // namespace

std::string suggestion(const std::string& got, const std::vector<std::string>& candidates) {
  const std::string dym = did_you_mean(got, candidates);
  return dym.empty() ? "" : " (did you mean '" + dym + "'?)";
}

std::string choice_reason(const std::string& got, const std::vector<std::string>& choices) {
  return "expected one of " + join(choices) + "; got '" + got + "'" + suggestion(got, choices);
}

std::string unknown_name(const std::string& what, const std::string& got, const std::vector<std::string>& valid,
                         const std::string& list_label) {
  return what + suggestion(got, valid) + "; " + list_label + ": " + join(valid);
}

bool in_range(const ParamSpec& s, double v) {
  if (s.lo_open ? !(v > s.lo) : !(v >= s.lo)) return false;
  if (s.hi_open ? !(v < s.hi) : !(v <= s.hi)) return false;
  return true;
}

std::string range_reason(const ParamSpec& s, const std::string& got) {
  bool has_lo = !std::isinf(s.lo), has_hi = !std::isinf(s.hi);
  std::string r;
  if (has_lo && has_hi)
    r = "must be in " + s.range_text();
  else if (has_lo)
    r = std::string("must be ") + (s.lo_open ? "> " : ">= ") + format_number(s.lo);
  else
    r = std::string("must be ") + (s.hi_open ? "< " : "<= ") + format_number(s.hi);
  return r + ", got " + got;
}

namespace {

// The items of a YAML sequence as a StringList: each a string (one of spec.choices when given); every bad item is
// a diagnostic at its own position.
bool parse_list(const YNodePtr& node, const ParamSpec& spec, const std::string& full_key, Value& out,
                std::vector<Diagnostic>& diags) {
  std::vector<std::string> items;
  bool ok = true;
  for (const auto& item : node->items) {
    if (!item->is_scalar()) {
      diags.push_back({item->mark, full_key, "list items must be strings, got " + item->describe()});
      ok = false;
    } else if (!spec.choices.empty() &&
               std::find(spec.choices.begin(), spec.choices.end(), item->scalar) == spec.choices.end()) {
      diags.push_back({item->mark, full_key, choice_reason(item->scalar, spec.choices)});
      ok = false;
    } else {
      items.push_back(item->scalar);
    }
  }
  out.v = std::move(items);
  return ok;
}

}  // namespace

bool parse_value(const YNodePtr& node, const ParamSpec& spec, const std::string& full_key, Value& out,
                 std::vector<Diagnostic>& diags) {
  auto fail = [&](const std::string& reason) {
    diags.push_back({node->mark, full_key, reason});
    return false;
  };
  out.mark = node->mark;
  out.is_default = false;
  const bool scalar = node->is_scalar();
  const std::string& s = node->scalar;
  switch (spec.type) {
    case ParamType::Bool:
      if (scalar && !node->quoted && (s == "true" || s == "True" || s == "TRUE"))
        out.v = true;
      else if (scalar && !node->quoted && (s == "false" || s == "False" || s == "FALSE"))
        out.v = false;
      else
        return fail("expected true or false, got " + node->describe());
      return true;
    case ParamType::Int: {
      int64_t i;
      if (!scalar || node->quoted || !parse_int(s, i)) return fail("expected an integer, got " + node->describe());
      if (!in_range(spec, static_cast<double>(i))) return fail(range_reason(spec, s));
      out.v = i;
      return true;
    }
    case ParamType::Float: {
      double d;
      if (!scalar || node->quoted || !parse_float(s, d)) return fail("expected a number, got " + node->describe());
      if (!in_range(spec, d)) return fail(range_reason(spec, s));
      out.v = d;
      return true;
    }
    case ParamType::String:
      if (!scalar) return fail("expected a string, got " + node->describe());
      out.v = s;
      return true;
    case ParamType::Path:
      if (!scalar) return fail("expected a string, got " + node->describe());
      // The C library ends a file name at the first NUL: "a\0b" would make a folder "a" without a word.
      if (const size_t nul = s.find('\0'); nul != std::string::npos)
        return fail("a path cannot hold a NUL byte (\\x00 at offset " + std::to_string(nul) +
                    "): the system would cut it to '" + printable(s.substr(0, nul)) + "'");
      out.v = s;
      return true;
    case ParamType::Name:
    case ParamType::Plugin:
      if (!scalar) return fail("expected a name, got " + node->describe());
      if (spec.type == ParamType::Name && !is_safe_name(s))
        return fail("must be a safe file name (letters, digits, '.', '_', '-'; no '/' or '..'), got '" + s + "'");
      out.v = s;
      return true;
    case ParamType::Url:
      if (!scalar) return fail("expected a URL, got " + node->describe());
      if (const size_t nul = s.find('\0'); nul != std::string::npos)
        return fail("a URL cannot hold a NUL byte (\\x00 at offset " + std::to_string(nul) + ")");
      if (!s.empty() && s.rfind("http://", 0) != 0 && s.rfind("https://", 0) != 0 && s.rfind("file://", 0) != 0)
        return fail("expected an http://, https:// or file:// URL, got '" + s + "'");
      out.v = s;
      return true;
    case ParamType::Enum:
      if (!scalar) return fail("expected one of " + join(spec.choices) + ", got " + node->describe());
      if (std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end())
        return fail(choice_reason(s, spec.choices));
      out.v = s;
      return true;
    case ParamType::StringList:
      if (!node->is_seq()) return fail("expected a list, got " + node->describe());
      return parse_list(node, spec, full_key, out, diags);
  }
  return fail("unsupported parameter type");
}

namespace {

void walk(const YNodePtr& map, const std::string& block_prefix, const std::string& rel_prefix, const ParamTable& table,
          Params& out, std::vector<Diagnostic>& diags) {
  for (size_t i = 0; i < map->entries.size(); ++i) {
    const auto& [key, value] = map->entries[i];
    std::string rel = rel_prefix.empty() ? key : rel_prefix + "." + key;
    std::string full = block_prefix.empty() ? rel : block_prefix + "." + rel;
    if (const ParamSpec* spec = table.find(rel)) {
      Value v;
      // A value that is present but wrong is reported once, not again as "missing".
      if (!parse_value(value, *spec, full, v, diags)) v.v = std::monostate{};
      out.set(rel, std::move(v));
      continue;
    }
    if (table.has_group(rel)) {
      if (!value->is_map()) {
        diags.push_back({value->mark, full,
                         "expected a mapping with keys " + join(table.children(rel)) + ", got " + value->describe()});
        continue;
      }
      walk(value, block_prefix, rel, table, out, diags);
      continue;
    }
    std::vector<std::string> valid = table.children(rel_prefix);
    const std::string reason =
        valid.empty() ? "unknown key; this block takes no keys" : unknown_name("unknown key", key, valid, "valid keys");
    diags.push_back({map->key_marks[i], full, reason});
  }
}

}  // namespace

Params validate_block(const YNodePtr& block, const Mark& where, const std::string& prefix, const ParamTable& table,
                      std::vector<Diagnostic>& diags) {
  Params given;
  Mark missing_mark = where;
  if (block && !block->is_null()) {
    if (!block->is_map()) {
      diags.push_back({block->mark, prefix, "expected a mapping, got " + block->describe()});
    } else {
      walk(block, prefix, "", table, given, diags);
      missing_mark = block->mark;
    }
  }
  Params out;
  for (const auto& spec : table.specs()) {
    std::string full = prefix.empty() ? spec.key : prefix + "." + spec.key;
    if (given.has(spec.key)) {
      out.set(spec.key, given.at(spec.key));
    } else if (spec.required) {
      diags.push_back({missing_mark, full, "missing required key (" + spec.help + ")"});
    } else {
      out.set(spec.key, spec.default_value);
    }
  }
  return out;
}

}  // namespace expctl
