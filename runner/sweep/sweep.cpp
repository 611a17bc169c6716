#include "runner/sweep/sweep.h"

#include <algorithm>
#include <set>

#include "runner/core/error.h"
#include "runner/core/naming.h"

namespace expctl::sweep {
namespace fs = std::filesystem;

std::string Cell::settings_text() const {
  std::string out;
  for (auto it = settings.begin(); it != settings.end(); ++it)
    out += (out.empty() ? "" : " ") + it.key() + "=" + it.value().get<std::string>();
  return out;
}

namespace {

std::string last_part(const std::string& key) { return key.substr(key.rfind('.') + 1); }

std::string safe(const std::string& text) {
  std::string out;
  for (char c : text)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+') ? c : '-';
  return out.empty() ? "-" : out;
}

// A value as one line of YAML text: the scalar as written, or a flow form of a list/map.
std::string value_text(const YNodePtr& v) {
  if (v->is_scalar()) return v->scalar;
  if (v->is_null()) return "null";
  std::string t = to_yaml(v);
  std::string flat;
  for (char c : t) flat += (c == '\n') ? ' ' : c;
  while (!flat.empty() && flat.back() == ' ') flat.pop_back();
  return flat;
}

}  // namespace

std::vector<std::string> cell_ids(const std::vector<std::string>& keys,
                                  const std::vector<std::vector<std::string>>& values) {
  std::vector<std::string> names;
  for (const auto& k : keys) {
    size_t same = std::count_if(keys.begin(), keys.end(), [&](const std::string& o) { return last_part(o) == last_part(k); });
    names.push_back(same > 1 ? k : last_part(k));
  }
  std::vector<std::string> out;
  for (const auto& row : values) {
    std::string id;
    for (size_t i = 0; i < keys.size(); ++i) id += (i ? "_" : "") + names[i] + "=" + safe(row[i]);
    out.push_back(id);
  }
  // Two values that differ only in unsafe characters ("2:4" and "2/4") would share a folder: number them.
  std::set<std::string> seen;
  for (size_t i = 0; i < out.size(); ++i)
    if (!seen.insert(out[i]).second) out[i] += "_cell" + std::to_string(i);
  return out;
}

std::vector<Cell> expand(const fs::path& file, const std::vector<std::string>& overrides) {
  ScenarioConfig base = load_scenario(file, overrides);
  if (base.sweep.empty())
    throw ConfigError(file.string() +
                      ": no sweep block; add one, e.g.\n  sweep:\n    prune.sparsity: [0.3, 0.5, 0.7]\n"
                      "or run the file once with `expctl run`");
  std::vector<std::string> errors;
  for (const auto& axis : base.sweep)
    for (const auto& o : overrides) {
      std::string key = o.substr(0, o.find('='));
      if (key == axis.key || key.rfind(axis.key + ".", 0) == 0 || axis.key.rfind(key + ".", 0) == 0)
        errors.push_back(axis.key_mark.str() + ": sweep." + axis.key + ": also given with --set " + o +
                         "; drop one of them");
    }
  if (!errors.empty()) throw ConfigError(join(errors, "\n"));

  // Cartesian product, first key slowest.
  std::vector<std::vector<size_t>> picks{{}};
  for (const auto& axis : base.sweep) {
    std::vector<std::vector<size_t>> next;
    for (const auto& p : picks)
      for (size_t i = 0; i < axis.values.size(); ++i) {
        next.push_back(p);
        next.back().push_back(i);
      }
    picks = std::move(next);
  }
  std::vector<std::string> keys;
  for (const auto& axis : base.sweep) keys.push_back(axis.key);
  std::vector<std::vector<std::string>> texts;
  for (const auto& p : picks) {
    std::vector<std::string> row;
    for (size_t a = 0; a < p.size(); ++a) row.push_back(value_text(base.sweep[a].values[p[a]]));
    texts.push_back(row);
  }
  const std::vector<std::string> ids = cell_ids(keys, texts);

  std::vector<Cell> cells;
  for (size_t c = 0; c < picks.size(); ++c) {
    std::vector<CellSetting> settings;
    for (size_t a = 0; a < picks[c].size(); ++a) {
      const SweepAxis& axis = base.sweep[a];
      settings.push_back({axis.key, axis.key_mark, axis.values[picks[c][a]]});
    }
    try {
      Cell cell{c, ids[c], load_scenario_cell(file, overrides, ids[c], settings), {}};
      for (size_t a = 0; a < keys.size(); ++a) cell.settings[keys[a]] = texts[c][a];
      cells.push_back(std::move(cell));
    } catch (const ConfigError& e) {
      errors.push_back("sweep cell " + ids[c] + ":\n" + e.what());
    }
  }
  if (!errors.empty()) throw ConfigError(join(errors, "\n"));
  return cells;
}

std::vector<Cell> select(const std::vector<Cell>& cells, const std::vector<std::string>& selectors) {
  if (selectors.empty()) return cells;
  std::vector<Cell> out;
  for (const auto& s : selectors) {
    auto it = std::find_if(cells.begin(), cells.end(), [&](const Cell& c) {
      return c.id == s || (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos &&
                           std::to_string(c.index) == s);
    });
    if (it == cells.end()) {
      std::vector<std::string> ids;
      for (const auto& c : cells) ids.push_back(std::to_string(c.index) + " " + c.id);
      throw ConfigError("--cell " + s + ": no such cell; the cells are:\n  " + join(ids, "\n  "));
    }
    out.push_back(*it);
  }
  return out;
}

bool finished(const Cell& cell) { return fs::exists(Naming(cell.config).report_file("json")); }

}  // namespace expctl::sweep
