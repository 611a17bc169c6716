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

}  // namespace

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
