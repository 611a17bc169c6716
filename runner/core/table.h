// One table writer: the columns are declared once (where the value lies in a row, its CSV name, its header and
// cell text in the Markdown and console tables) and the same rows come out as Markdown, CSV, JSON and an aligned
// console table. A row is a JSON object holding the values (it may hold more than the columns show).
//
//     Table t({{"method", "method", "Method", nullptr, Align::Left},
//              {"accuracy", "accuracy", "Acc. (%)", Table::fixed_cell("accuracy", 2)},
//              {"latency.median", "latency_median_ms"}});           // CSV and JSON only
//     t.add_row({{"method", "Wanda"}, {"accuracy", 71.234}, {"latency", {{"median", 2.5}}}});
//     t.markdown();  // | Method | Acc. (%) |\n|---|---:|\n| Wanda | 71.23 |\n
//     t.csv();       // method,accuracy,latency_median_ms\n"Wanda",71.234,2.5\n
//     t.json();      // [{"method":"Wanda","accuracy":71.234,"latency":{"median":2.5}}]
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace expctl {

enum class Align { Left, Right };

struct Column {
  using Json = nlohmann::ordered_json;
  using Cell = std::function<std::string(const Json& row)>;
  Column(std::string key, std::string csv = "", std::string header = "", Cell cell = nullptr,
         Align align = Align::Right)
      : key(std::move(key)), csv(std::move(csv)), header(std::move(header)), cell(std::move(cell)), align(align) {}

  /// Where the value lies in a row, dotted for nested objects ("latency_b1_ms.median"); the JSON output puts it
  /// at the same place. A value that is absent is left out of the JSON and empty in the CSV.
  std::string key;
  /// Its CSV header; "" = not in the CSV.
  std::string csv;
  /// Its Markdown and console header; "" = not in those tables.
  std::string header;
  /// Its Markdown and console text; nullptr = the value as written (a string as is, "-" when absent).
  Cell cell;
  Align align;
};

class Table {
 public:
  using Json = nlohmann::ordered_json;
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void add_row(Json row) { rows_.push_back(std::move(row)); }
  const std::vector<Json>& rows() const { return rows_; }

  /// Header, alignment row and rows; a `|` in a cell is escaped, line breaks become spaces.
  std::string markdown() const;
  /// Left-aligned columns two spaces apart (the terminal's view of markdown()).
  std::string console() const;
  /// RFC 4180: header line, then one line per row; strings quoted ("" inside), numbers as JSON writes them.
  std::string csv() const;
  /// An array with one object per row: every column whose key the row has (null included), at its key.
  Json json() const;

  /// The value at dotted `key` in `row`; nullptr when absent or null.
  static const Json* find(const Json& row, const std::string& key);
  /// `v` with `digits` decimals; "-" for NaN.
  static std::string fixed(double v, int digits);
  /// Text as it goes into Markdown (a table cell, a list item): `|` escaped, line breaks and tabs as spaces.
  static std::string markdown_text(const std::string& s);
  /// A cell: the number at `key` times `scale`, with `digits` decimals; "-" when absent.
  static std::function<std::string(const Json&)> fixed_cell(std::string key, int digits, double scale = 1);

 private:
  std::vector<std::vector<std::string>> text_cells() const;
  std::vector<Column> columns_;
  std::vector<Json> rows_;
};

}  // namespace expctl
