// Internal to runner/io/torch_file.cpp: the node graph an unpickled file becomes before it is converted into
// PickleValues, the storage types torch.save names, and the wording of the reader's limits.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runner/core/error.h"

namespace expctl::io::detail {

// The unpickler works on shared nodes because pickle has reference semantics: a dict is created empty,
// memoised, then filled by SETITEMS, and later BINGETs must see the filled object.
struct Node;
using NodeP = std::shared_ptr<Node>;
struct Node {
  enum Kind { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;             // Str, Bytes, BigInt (raw little-endian bytes), Global ("module.name"), Storage (key)
  std::vector<NodeP> items;  // Tuple, List
  std::vector<std::pair<NodeP, NodeP>> entries;   // Dict
  std::unordered_map<std::string, size_t> index;  // Dict: entry of each string key (a later SETITEM replaces)
  torch::ScalarType dtype = torch::kFloat;        // Storage
  int64_t numel = 0;                              // Storage
  NodeP storage;                                  // Tensor
  int64_t offset = 0;                             // Tensor
  std::vector<int64_t> sizes, strides;            // Tensor
  torch::Tensor data;                             // Storage once read
};

// The storage classes torch.save names for each dtype; read and written through this one table.
struct StorageType {
  const char* name;
  torch::ScalarType dtype;
};
constexpr StorageType kStorageTypes[] = {{"FloatStorage", torch::kFloat}, {"DoubleStorage", torch::kDouble},
                                         {"HalfStorage", torch::kHalf},   {"BFloat16Storage", torch::kBFloat16},
                                         {"LongStorage", torch::kLong},   {"IntStorage", torch::kInt},
                                         {"ShortStorage", torch::kShort}, {"CharStorage", torch::kChar},
                                         {"ByteStorage", torch::kByte},   {"BoolStorage", torch::kBool}};

inline bool storage_dtype(const std::string& global, torch::ScalarType* out) {
  std::string name;
  if (global.rfind("torch.cuda.", 0) == 0) {
    name = global.substr(11);
  } else if (global.rfind("torch.", 0) == 0) {
    name = global.substr(6);
  } else {
    return false;
  }
  for (const auto& t : kStorageTypes) {
    if (name == t.name) {
      *out = t.dtype;
      return true;
    }
  }
  return false;
}

inline const char* storage_name(torch::ScalarType dtype) {
  for (const auto& t : kStorageTypes)
    if (t.dtype == dtype) return t.name;
  throw Error(std::string("serialize_torch_file: unsupported dtype ") + c10::toString(dtype));
}

// "more than 1000000 pickle objects": the message of every limit, naming it and what it protects against.
inline std::string over_limit(const std::string& what, int64_t limit, const std::string& unit) {
  return what + " " + std::to_string(limit) + " " + unit +
         " (a limit of expctl's torch-file reader: a damaged or hostile file must not exhaust memory)";
}

}  // namespace expctl::io::detail
