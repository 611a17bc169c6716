// Error types shared by every module. Config and usage errors exit with 2, runtime failures with 1.
#pragma once
#include <stdexcept>
#include <string>

namespace expctl {

/// A runtime failure (exit code 1): a download that failed, a malformed data file, a shape mismatch.
/// The message must name the file or object involved and say what is wrong with it.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A bad input file (data set, weights, checkpoint): "<file>: <what is wrong>".
struct DataError : Error {
  using Error::Error;
};

/// A configuration or usage error (exit code 2). `what()` holds one or more lines
/// "file:line:col: dotted.key: reason".
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace expctl
