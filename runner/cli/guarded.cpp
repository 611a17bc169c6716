#include <iostream>

#include "runner/cli/commands.h"
#include "runner/core/error.h"

namespace expctl::cli {

void guarded(int& exit_code, const std::function<void()>& body) {
  try {
    body();
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";
    exit_code = 2;
  } catch (const std::exception& e) {
    std::cerr << "expctl: error: " << e.what() << "\n";
    exit_code = 1;
  }
}

}  // namespace expctl::cli
