// A value of the pickle subset torch files use (runner/io/torch_file.h reads and writes them).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace expctl::io {

/// A value of the pickle subset torch files use: None, bool, int, float, str, bytes, tensor, list, tuple, dict
/// (OrderedDict reads as Dict; keys keep their order).
struct PickleValue {
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tensor, List, Tuple, Dict };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0.0;
  std::string text;                                          ///< String (UTF-8) or Bytes
  torch::Tensor tensor;                                      ///< Tensor (CPU)
  std::vector<PickleValue> items;                            ///< List / Tuple
  std::vector<std::pair<PickleValue, PickleValue>> entries;  ///< Dict, in insertion order

  static PickleValue none() { return {}; }
  static PickleValue from(bool v);
  static PickleValue from(int64_t v);
  static PickleValue from(int v) { return from(static_cast<int64_t>(v)); }
  static PickleValue from(double v);
  static PickleValue from(std::string v);
  static PickleValue from(const char* v) { return from(std::string(v)); }
  static PickleValue from(torch::Tensor v);
  static PickleValue list(std::vector<PickleValue> v = {});
  static PickleValue tuple(std::vector<PickleValue> v = {});
  static PickleValue dict();

  /// Dict only: appends or replaces the entry with string key `key`.
  PickleValue& set(const std::string& key, PickleValue value);
  /// Dict only: the value of string key `key`, or nullptr.
  const PickleValue* find(const std::string& key) const;
  /// "None", "bool", "int", "float", "str", "bytes", "tensor", "list", "tuple", "dict".
  std::string kind_name() const;
};

}  // namespace expctl::io
