// Reading metrics files: a missing or null value names the file and the dotted key.
#include "runner/core/json_file.h"

#include <gtest/gtest.h>

#include "runner/core/error.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(JsonFile, ValuesByDottedKeyAndArrayElements) {
  test::TempDir tmp;
  test::write_file(tmp / "m.json", R"({"after": {"accuracy": 71.5, "epoch": 3, "held_out": null},
                                      "history": [{"test_loss": 1.5}, {"test_loss": null}], "name": "x"})");
  auto f = JsonFile::open(tmp / "m.json");
  ASSERT_TRUE(f);
  const JsonValue r = f->root();
  EXPECT_EQ(r["after.accuracy"].number(), 71.5);
  EXPECT_EQ(r["after"]["epoch"].integer(), 3);
  EXPECT_EQ(r["name"].string(), "x");
  EXPECT_TRUE(r.has("after.accuracy"));
  EXPECT_FALSE(r.has("after.held_out")) << "null is not there";
  EXPECT_FALSE(r.has("after.accuracy.deeper"));
  const auto history = r["history"].items();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0]["test_loss"].number(), 1.5);
  EXPECT_EQ(history[1]["test_loss"].path(), "history[1].test_loss");

  const std::string file = (tmp / "m.json").string();
  EXPECT_EQ(error_of([&] { history[1]["test_loss"].number(); }),
            file +
                ": history[1].test_loss: null where a number is expected (NaN and infinite values are written as "
                "null)");
  EXPECT_EQ(error_of([&] { r["after.loss"].number(); }), file + ": after.loss: missing");
  EXPECT_EQ(error_of([&] { r["name"].number(); }), file + ": name: string where a number is expected");
  EXPECT_EQ(error_of([&] { r["after.accuracy"].integer(); }), file +
                                                                  ": after.accuracy: number where an integer is "
                                                                  "expected");
  EXPECT_EQ(error_of([&] { r["after"].items(); }), file + ": after: object where an array is expected");
}

TEST(JsonFile, AbsentIsNulloptAndBrokenNamesTheFile) {
  test::TempDir tmp;
  EXPECT_FALSE(JsonFile::open(tmp / "none.json"));
  test::write_file(tmp / "bad.json", "{\"a\": ");
  EXPECT_NE(error_of([&] { JsonFile::open(tmp / "bad.json"); }).find((tmp / "bad.json").string() + ": not valid JSON"),
            std::string::npos);
}
