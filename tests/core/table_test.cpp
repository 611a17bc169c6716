// The table writer: one column list, four outputs that agree.
#include "runner/core/table.h"

#include <gtest/gtest.h>

using namespace expctl;
using Json = Table::Json;

namespace {

Table sample() {
  Table t({{"method", "method", "Method", nullptr, Align::Left},
           {"acc", "accuracy", "Acc. (%)", Table::fixed_cell("acc", 2)},
           {"latency.median", "latency_median_ms", "Latency (ms)", Table::fixed_cell("latency.median", 1, 1000)},
           {"note", "note"},
           {"internal"}});
  t.add_row({{"method", "Wanda 2:4"},
             {"acc", 71.234},
             {"latency", {{"median", 0.0025}}},
             {"note", "a \"b\", c"},
             {"internal", 1},
             {"ignored", true}});
  t.add_row({{"method", "x | y\nz"}, {"acc", nullptr}, {"latency", {{"median", 0.01}}}});
  return t;
}

}  // namespace

TEST(Table, MarkdownShowsTheColumnsWithHeadersEscapingPipesAndLineBreaks) {
  EXPECT_EQ(sample().markdown(),
            "| Method | Acc. (%) | Latency (ms) |\n|---|---:|---:|\n| Wanda 2:4 | 71.23 | 2.5 |\n"
            "| x \\| y z | - | 10.0 |\n");
}

TEST(Table, ConsoleAlignsTheSameCells) {
  EXPECT_EQ(sample().console(),
            "Method     Acc. (%)  Latency (ms)  \nWanda 2:4  71.23     2.5           \nx | y z    -         10.0       "
            "   \n");
}

TEST(Table, CsvQuotesStringsAndLeavesMissingValuesEmpty) {
  EXPECT_EQ(sample().csv(),
            "method,accuracy,latency_median_ms,note\n\"Wanda 2:4\",71.234,0.0025,\"a \"\"b\"\", c\"\n"
            "\"x | y\nz\",,0.01,\n");
}

TEST(Table, JsonPutsEveryColumnAtItsKeyKeepingNullsAndDroppingTheRest) {
  EXPECT_EQ(sample().json().dump(),
            R"([{"method":"Wanda 2:4","acc":71.234,"latency":{"median":0.0025},"note":"a \"b\", c","internal":1},)"
            R"({"method":"x | y\nz","acc":null,"latency":{"median":0.01}}])");
}

TEST(Table, FixedWritesADashForNaN) {
  EXPECT_EQ(Table::fixed(1.005, 1), "1.0");
  EXPECT_EQ(Table::fixed(std::nan(""), 2), "-");
}
