// Internal to runner/io/torch_file.cpp: the node graph of an unpickled file (pickle_node.h) into PickleValues,
// within the limits of torch_file.h.
#pragma once
#include <torch/torch.h>

#include <string>
#include <unordered_map>

#include "runner/core/error.h"
#include "runner/io/pickle_node.h"
#include "runner/io/pickle_value.h"
#include "runner/io/torch_file.h"

namespace expctl::io::detail {

// Converts the node graph into PickleValues, materialising tensors from their (already read) storages. The graph
// can share a node many times (memo GETs, DUP), so expanding it into a tree could take exponential memory: its
// expanded size and depth are measured first (linear in the graph) against hard limits, and tensor bytes too.
class Converter {
 public:
  Converter(std::string where, int64_t storage_bytes) : where_(std::move(where)), storage_bytes_(storage_bytes) {}

  PickleValue run(const NodeP& root) {
    measure(root.get(), 0);
    return convert(root);
  }

 private:
  struct Extent {
    int64_t values = 0;  // -1 while being measured: seeing it again means a cycle
    int height = 0;
  };

  // The expanded size and height of `n`, memoised per node.
  Extent measure(const Node* n, int depth) {
    if (depth > kPickleMaxDepth) fail(over_limit("nested deeper than", kPickleMaxDepth, "levels"));
    auto [it, fresh] = extents_.emplace(n, Extent{-1, 0});
    if (!fresh) {
      if (it->second.values < 0) fail("a container contains itself (a cyclic reference)");
      return it->second;
    }
    Extent e{1, 0};
    auto add = [&](const NodeP& child) {
      const Extent c = measure(child.get(), depth + 1);
      e.values += c.values;
      e.height = std::max(e.height, c.height + 1);
      if (e.values > kPickleMaxObjects)
        fail(over_limit("more than", kPickleMaxObjects, "pickle objects (shared references expanded)"));
      if (e.height > kPickleMaxDepth) fail(over_limit("nested deeper than", kPickleMaxDepth, "levels"));
    };
    for (const auto& x : n->items) add(x);
    for (const auto& [k, v] : n->entries) {
      add(k);
      add(v);
    }
    extents_[n] = e;
    return e;
  }

  PickleValue convert(const NodeP& n) {
    PickleValue v;
    switch (n->kind) {
      case Node::None:
        return v;
      case Node::Bool:
        return PickleValue::from(n->b);
      case Node::Int:
        return PickleValue::from(n->i);
      case Node::Float:
        return PickleValue::from(n->f);
      case Node::Str:
        return PickleValue::from(n->s);
      case Node::Bytes:
        v.kind = PickleValue::Kind::Bytes;
        v.text = n->s;
        return v;
      case Node::BigInt:
        fail("integer too large for 64 bits");
      case Node::Tuple:
      case Node::List:
        v.kind = n->kind == Node::Tuple ? PickleValue::Kind::Tuple : PickleValue::Kind::List;
        for (const auto& x : n->items) v.items.push_back(convert(x));
        return v;
      case Node::Dict:
        v.kind = PickleValue::Kind::Dict;
        for (const auto& e : n->entries) v.entries.emplace_back(convert(e.first), convert(e.second));
        return v;
      case Node::Global:
        fail("holds a bare Python global '" + n->s + "'");
      case Node::Storage:
        fail("holds a bare storage");
      case Node::Tensor:
        return PickleValue::from(tensor(*n));
    }
    return v;
  }

  [[noreturn]] void fail(const std::string& what) const { throw DataError(where_ + ": " + what); }

  torch::Tensor tensor(const Node& n) {
    auto it = cache_.find(&n);
    if (it != cache_.end()) return it->second;
    const torch::Tensor& storage = n.storage->data;
    if (!storage.defined()) fail("storage '" + n.storage->s + "' was never read");
    // Bounds check before as_strided: a corrupt size/stride must not read outside the storage, and no product
    // may overflow on the way.
    int64_t numel = 1, last = n.offset;
    for (size_t d = 0; d < n.sizes.size(); ++d) {
      if (n.sizes[d] < 0 || n.strides[d] < 0) fail("negative tensor size or stride");
      int64_t reach = 0;
      if (__builtin_mul_overflow(numel, n.sizes[d], &numel) ||
          (n.sizes[d] > 0 && (__builtin_mul_overflow(n.sizes[d] - 1, n.strides[d], &reach) ||
                              __builtin_add_overflow(last, reach, &last))))
        fail("tensor size or stride out of range");
    }
    if (n.offset < 0 || (numel > 0 && last >= storage.numel()))
      fail("a tensor reaches past the end of its storage '" + n.storage->s + "'");
    // Views may overlap (stride 0), so the tensors could otherwise ask for far more than the file holds.
    tensor_bytes_ += numel * static_cast<int64_t>(storage.element_size());
    if (tensor_bytes_ > storage_bytes_ + kTensorSlackBytes)
      fail(over_limit(std::to_string(tensor_bytes_) + " bytes of tensors from " + std::to_string(storage_bytes_) +
                          " bytes of storage: more than storage +",
                      kTensorSlackBytes, "bytes"));
    torch::Tensor t = numel == 0 ? torch::empty(n.sizes, storage.options())
                                 : storage.as_strided(n.sizes, n.strides, n.offset).clone(at::MemoryFormat::Contiguous);
    cache_.emplace(&n, t);
    return t;
  }

  std::string where_;
  int64_t storage_bytes_;
  int64_t tensor_bytes_ = 0;
  std::unordered_map<const Node*, Extent> extents_;
  std::unordered_map<const Node*, torch::Tensor> cache_;
};

}  // namespace expctl::io::detail
