// The layers of runner/ and plugins/, lowest first: a file may include its own layer's headers and those below,
// never one above. A new folder must be given its place here before it builds into a test binary that passes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// docs/architecture.md explains each; the README links it.
const std::vector<std::string> kLayers = {
    "runner/core",      // config, params, registries, naming, files, tables, hashes, the stop flag
    "runner/io",        // downloads, checksums, archives, zip checks
    "runner/parallel",  // several processes: the world, process groups, all-reduce, stage coordination
    "runner/data",      // data sets, splits, images, the loader
    "runner/models",    // the model graph, its executor, the built-in models, checkpoints, TorchScript
    "runner/metrics",   // accuracy, size, MACs, latency, the machine
    "plugins",          // the pruners
    "runner/training",  // the training loop, its parameters, the device and runtime set-up
    "runner/pipeline",  // the stage interface and the pipeline that runs a scenario's stages
    "runner/stages",    // one file per stage
    "runner/sweep",     // sweeps, summaries, Slurm arrays
    "runner/cli",       // one file per subcommand
    "runner/main.cpp",  // wiring
};

// The layer of a repository path ("runner/models/zoo.h" → 4), or -1 outside runner/ and plugins/.
int layer_of(const std::string& path) {
  for (size_t i = 0; i < kLayers.size(); ++i) {
    const std::string& l = kLayers[i];
    if (path == l || path.compare(0, l.size() + 1, l + "/") == 0) return int(i);
  }
  return -1;
}

std::vector<std::string> sources() {
  const fs::path root = EXPCTL_SOURCE_DIR;
  std::vector<std::string> out;
  for (const char* top : {"runner", "plugins"})
    for (const auto& e : fs::recursive_directory_iterator(root / top)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".h" || ext == ".cpp")) out.push_back(fs::relative(e.path(), root).string());
    }
  return out;
}

// A parameter read or declared by its string key outside the binder ("p.get_int(\"epochs\")",
// "t.add_bool(\"plot\", ...)"): every stage, model, data set, section and pruner binds its keys to the fields of
// an options struct (runner/core/options_binder.h), so a key is written once, where it is declared.
bool keyed_by_string(const std::string& line) {
  static const std::regex read(R"(\.(get_int|get_float|get_string|get_bool|get_list)\(\s*")");
  static const std::regex declare(
      R"((\.|->)add_(int|float|bool|string|enum|list|path|url|name|required|plugin)\(\s*")");
  const auto code = line.find_first_not_of(" \t");
  if (code == std::string::npos || line.compare(code, 2, "//") == 0) return false;  // comments show examples
  return std::regex_search(line, read) || std::regex_search(line, declare);
}

// The files that implement the tables and the binder themselves.
bool is_binder_itself(const std::string& path) {
  return path == "runner/core/params.h" || path == "runner/core/params.cpp" || path == "runner/core/options_binder.h";
}

}  // namespace

TEST(Parameters, EveryKeyIsDeclaredAndReadThroughABinder) {
  std::vector<std::string> keyed;
  for (const auto& f : sources()) {
    if (is_binder_itself(f)) continue;
    std::ifstream in(fs::path(EXPCTL_SOURCE_DIR) / f);
    ASSERT_TRUE(in) << f;
    int line_no = 0;
    for (std::string line; std::getline(in, line);)
      if (++line_no; keyed_by_string(line)) keyed.push_back(f + ":" + std::to_string(line_no) + ": " + line);
  }
  std::string all;
  for (const auto& k : keyed) all += "\n  " + k;
  EXPECT_TRUE(keyed.empty()) << keyed.size() << " keys read or declared by string outside a binder:" << all;
}

TEST(Parameters, TheCheckSeesAKeyReadByString) {
  EXPECT_TRUE(keyed_by_string("  const int64_t e = p.get_int(\"epochs\");"));
  EXPECT_TRUE(keyed_by_string("    if (cfg.dataset.get_bool( \"augment.hflip\")) {"));
  EXPECT_TRUE(keyed_by_string("  t.add_int(\"retries\", 5, \"attempts\").min(1);"));
  EXPECT_TRUE(keyed_by_string("  table->add_enum(\"mode\", \"a\", {\"a\"}, \"m\");"));
  EXPECT_FALSE(keyed_by_string("  b.add(&O::retries, \"retries\", \"attempts\").min(1);"));
  EXPECT_FALSE(keyed_by_string("  const int64_t e = o.epochs;"));
  EXPECT_FALSE(keyed_by_string("///     t.add_int(\"epochs\", 30, \"Training epochs\");"));
}

TEST(Layers, EveryFolderHasItsPlace) {
  std::vector<std::string> homeless;
  for (const auto& f : sources())
    if (layer_of(f) < 0) homeless.push_back(f);
  EXPECT_TRUE(homeless.empty()) << "not in a layer of tests/core/layers_test.cpp: " << homeless.front();
  EXPECT_GT(sources().size(), 50u);
}

TEST(Layers, NoFileIncludesALayerAboveItsOwn) {
  const std::regex include(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::vector<std::string> upward;
  size_t includes = 0;
  for (const auto& f : sources()) {
    std::ifstream in(fs::path(EXPCTL_SOURCE_DIR) / f);
    ASSERT_TRUE(in) << f;
    int line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      std::smatch m;
      if (!std::regex_search(line, m, include)) continue;
      ++includes;
      const int from = layer_of(f), to = layer_of(m[1]);
      if (to > from)
        upward.push_back(f + ":" + std::to_string(line_no) + ": includes " + m[1].str() + " (" + kLayers[size_t(to)] +
                         " is above " + kLayers[size_t(from)] + ")");
    }
  }
  EXPECT_GT(includes, 300u);  // the scan sees the sources
  std::string all;
  for (const auto& u : upward) all += "\n  " + u;
  EXPECT_TRUE(upward.empty()) << upward.size() << " upward includes:" << all;
}

TEST(Layers, TheCheckSeesAnUpwardInclude) {
  // The rule itself, on names: a model may include a core header, a core file never a pipeline one.
  EXPECT_LT(layer_of("runner/core/config.h"), layer_of("runner/models/zoo.h"));
  EXPECT_GT(layer_of("runner/pipeline/pipeline.h"), layer_of("runner/core/registry.h"));
  EXPECT_GT(layer_of("runner/sweep/summary.h"), layer_of("runner/stages/report.cpp"));
  EXPECT_EQ(layer_of("plugins/wanda/wanda.cpp"), layer_of("plugins/pruner.h"));
  EXPECT_EQ(layer_of(std::string("runner/") + "dist/dist.h"), -1);  // the old name of runner/parallel
}
