#include "runner/core/table.h"

#include <cmath>
#include <iomanip>
#include <sstream>
#include <utility>

#include "runner/core/params.h"

namespace expctl {
using Json = Table::Json;

namespace {

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return s;
}

std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : one_line(s)) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

std::string csv_field(const Json* v) {
  if (!v) return "";
  if (!v->is_string()) return v->dump();
  std::string out = "\"";
  for (char c : v->get<std::string>()) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The value at dotted `key`, null included; nullptr when absent.
const Json* locate(const Json& row, const std::string& key) {
  const Json* v = &row;
  for (const auto& part : split_dotted(key)) {
    if (!v->is_object()) return nullptr;
    auto it = v->find(part);
    if (it == v->end()) return nullptr;
    v = &*it;
  }
  return v;
}

}  // namespace

const Json* Table::find(const Json& row, const std::string& key) {
  const Json* v = locate(row, key);
  return v && !v->is_null() ? v : nullptr;
}

std::string Table::fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::function<std::string(const Json&)> Table::fixed_cell(std::string key, int digits, double scale) {
  return [key = std::move(key), digits, scale](const Json& row) {
    const Json* v = find(row, key);
    return v && v->is_number() ? fixed(v->get<double>() * scale, digits) : std::string("-");
  };
}

std::vector<std::vector<std::string>> Table::text_cells() const {
  std::vector<std::vector<std::string>> out(1);
  for (const auto& c : columns_)
    if (!c.header.empty()) out[0].push_back(c.header);
  for (const auto& row : rows_) {
    out.emplace_back();
    for (const auto& c : columns_) {
      if (c.header.empty()) continue;
      if (c.cell) {
        out.back().push_back(c.cell(row));
      } else {
        const Json* v = find(row, c.key);
        out.back().push_back(!v ? "-" : v->is_string() ? v->get<std::string>() : v->dump());
      }
    }
  }
  return out;
}

std::string Table::markdown_text(const std::string& s) { return markdown_cell(s); }

std::string Table::markdown() const {
  std::ostringstream md;
  const auto cells = text_cells();
  for (size_t r = 0; r < cells.size(); ++r) {
    md << "|";
    for (const auto& cell : cells[r]) md << " " << markdown_cell(cell) << " |";
    md << "\n";
    if (r == 0) {
      md << "|";
      for (const auto& c : columns_)
        if (!c.header.empty()) md << (c.align == Align::Left ? "---|" : "---:|");
      md << "\n";
    }
  }
  return md.str();
}

std::string Table::console() const {
  const auto cells = text_cells();
  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& row : cells)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::ostringstream out;
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) out << std::left << std::setw(int(width[i]) + 2) << one_line(row[i]);
    out << "\n";
  }
  return out.str();
}

std::string Table::csv() const {
  std::ostringstream out;
  std::string sep;
  for (const auto& c : columns_)
    if (!c.csv.empty()) out << std::exchange(sep, ",") << c.csv;
  out << "\n";
  for (const auto& row : rows_) {
    sep.clear();
    for (const auto& c : columns_)
      if (!c.csv.empty()) out << std::exchange(sep, ",") << csv_field(find(row, c.key));
    out << "\n";
  }
  return out.str();
}

Json Table::json() const {
  Json out = Json::array();
  for (const auto& row : rows_) {
    Json o = Json::object();
    for (const auto& c : columns_) {
      const Json* v = locate(row, c.key);  // a null stays null: "not measured" differs from "not a column here"
      if (!v) continue;
      Json* at = &o;
      for (const auto& part : split_dotted(c.key)) at = &(*at)[part];
      *at = *v;
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace expctl
