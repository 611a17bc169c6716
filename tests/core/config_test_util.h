// Helpers for the scenario-loading tests: a minimal valid scenario and the text of the ConfigError a file gives.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "runner/core/config.h"
#include "runner/core/error.h"

namespace expctl::test {

/// The smallest valid scenario (one download stage), to extend or break in a test.
inline const char* const kMinimalScenario = R"(schema: 1
scenario: {test_scenario: TS7, method: FineTuning}
model: {name: ResNet18}
dataset: {name: CIFAR10}
stages: [download]
)";

/// The ConfigError that loading `file` with `sets` throws, or `none` when it loads.
inline std::string config_error_of(const std::filesystem::path& file, const std::vector<std::string>& sets = {},
                                   const std::string& none = "(no error)") {
  try {
    load_scenario(file, sets);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return none;
}

}  // namespace expctl::test
