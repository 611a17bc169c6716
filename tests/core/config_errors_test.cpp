// Every malformed-config fixture in tests/fixtures/config_errors/ must fail with exactly the messages written
// in its trailing "# expect:" lines ({file} and {dir} stand for the fixture's path and folder).
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

const fs::path kDir = "tests/fixtures/config_errors";

std::vector<fs::path> fixtures() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fs::path(EXPCTL_SOURCE_DIR) / kDir))
    if (e.path().extension() == ".yaml" && e.path().filename() != "base.yaml")
      out.push_back(kDir / e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

std::string expected_of(const fs::path& rel) {
  std::istringstream in(test::read_file(fs::path(EXPCTL_SOURCE_DIR) / rel));
  std::string line, out;
  while (std::getline(in, line)) {
    const std::string tag = "# expect: ";
    if (line.rfind(tag, 0) != 0) continue;
    line = line.substr(tag.size());
    line = std::regex_replace(line, std::regex(R"(\{file\})"), rel.string());
    line = std::regex_replace(line, std::regex(R"(\{dir\})"), kDir.string());
    out += (out.empty() ? "" : "\n") + line;
  }
  return out;
}

}  // namespace

TEST(ConfigErrors, AtLeastTwentyFixtures) { EXPECT_GE(fixtures().size(), 20u); }

TEST(ConfigErrors, EachFixtureGivesItsExactMessages) {
  test::Cwd cwd(EXPCTL_SOURCE_DIR);
  for (const auto& f : fixtures()) {
    SCOPED_TRACE(f.string());
    std::string expected = expected_of(f);
    ASSERT_FALSE(expected.empty()) << "fixture without '# expect:' lines";
    try {
      load_scenario(f);
      ADD_FAILURE() << "loaded without error";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), expected);
    }
  }
}

TEST(ConfigErrors, CliExitsTwoAndWritesNothing) {
  test::TempDir tmp;
  fs::copy(fs::path(EXPCTL_SOURCE_DIR) / kDir, tmp / "fx");
  for (const char* name : {"04_int_wrong_type.yaml", "19_unsafe_name.yaml", "16_malformed_yaml.yaml"}) {
    SCOPED_TRACE(name);
    size_t before = test::count_entries(tmp.path());
    auto r = test::run_expctl(std::string("run fx/") + name, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(std::string("fx/") + name + ":"), std::string::npos) << r.output;
    EXPECT_EQ(test::count_entries(tmp.path()), before) << "a failed validation wrote files";
  }
}
