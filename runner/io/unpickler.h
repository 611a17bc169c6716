// Internal to runner/io/torch_file.cpp: the unpickler of the pickle subset torch files use, into a node graph
// (pickle_node.h), within the limits of torch_file.h.
#pragma once
#include <torch/csrc/jit/serialization/pickler.h>

#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "runner/core/error.h"
#include "runner/io/pickle_node.h"
#include "runner/io/torch_file.h"

namespace expctl::io::detail {

using torch::jit::PickleOpCode;

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, std::string where) : data_(data), size_(size), where_(std::move(where)) {}
  ~Unpickler() {
    stack_.clear();
    memo_.clear();
    for (auto& n : all_) {
      n->items.clear();
      n->entries.clear();
      n->storage.reset();
    }
  }
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  // Runs one pickle from `pos` to its STOP; returns the value.
  NodeP run(size_t& pos) {
    pos_ = pos;
    stack_.clear();
    marks_.clear();
    memo_.clear();
    for (;;) {
      const auto op = static_cast<PickleOpCode>(take(1)[0]);
      if (op == PickleOpCode::STOP) {
        if (stack_.size() != 1) fail("pickle ends with " + std::to_string(stack_.size()) + " values on the stack");
        pos = pos_;
        return stack_.back();
      }
      if (!scalar(op) && !container(op) && !other(op)) {
        std::ostringstream os;
        os << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(static_cast<uint8_t>(op)) << std::dec
           << " at byte " << (pos_ - 1) << " (not a PyTorch file, or a newer pickle feature)";
        fail(os.str());
      }
    }
  }

  // Storages referenced through persistent ids, by key.
  std::unordered_map<std::string, NodeP> storages;
  std::vector<std::string> storage_order;

  [[noreturn]] void fail(const std::string& what) const { throw DataError(where_ + ": " + what); }
  [[noreturn]] void limit(const std::string& what, int64_t n, const std::string& unit) const {
    fail(over_limit(what, n, unit));
  }

 private:
  // Every object the pickle creates is counted: a few hundred bytes can otherwise ask for any number.
  NodeP make(Node::Kind k) {
    if (all_.size() >= static_cast<size_t>(kPickleMaxObjects)) limit("more than", kPickleMaxObjects, "pickle objects");
    all_.push_back(std::make_shared<Node>());
    all_.back()->kind = k;
    return all_.back();
  }
  NodeP sequence(Node::Kind k, std::vector<NodeP> items) {
    auto n = make(k);
    n->items = std::move(items);
    return n;
  }
  void put(uint64_t index) {
    if (memo_.size() >= static_cast<size_t>(kPickleMaxMemo) && !memo_.count(static_cast<uint32_t>(index)))
      limit("more than", kPickleMaxMemo, "memo entries");
    memo_[static_cast<uint32_t>(index)] = top();
  }
  void push_float() {  // BINFLOAT: big-endian IEEE double
    const char* p = take(8);
    uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(p[k]);
    auto n = make(Node::Float);
    std::memcpy(&n->f, &bits, 8);
    push(n);
  }
  // Opcodes that push one number, string or constant. False when `op` is none of them.
  bool scalar(PickleOpCode op) {
    switch (op) {
      case PickleOpCode::NONE:
        push(make(Node::None));
        return true;
      case PickleOpCode::NEWTRUE:
        push_bool(true);
        return true;
      case PickleOpCode::NEWFALSE:
        push_bool(false);
        return true;
      case PickleOpCode::BININT:
        push_int(static_cast<int32_t>(le(4)));
        return true;
      case PickleOpCode::BININT1:
        push_int(le(1));
        return true;
      case PickleOpCode::BININT2:
        push_int(le(2));
        return true;
      case PickleOpCode::LONG1:
        push_long(le(1));
        return true;
      case PickleOpCode::LONG4:
        push_long(le(4));
        return true;
      case PickleOpCode::BINFLOAT:
        push_float();
        return true;
      case PickleOpCode::BINUNICODE:
        push_str(Node::Str, le(4));
        return true;
      case PickleOpCode::SHORT_BINUNICODE:
        push_str(Node::Str, le(1));
        return true;
      case PickleOpCode::BINUNICODE8:
        push_str(Node::Str, le(8));
        return true;
      case PickleOpCode::BINSTRING:
        push_str(Node::Str, le(4));
        return true;  // Python 2 str
      case PickleOpCode::SHORT_BINSTRING:
        push_str(Node::Str, le(1));
        return true;
      case PickleOpCode::BINBYTES:
        push_str(Node::Bytes, le(4));
        return true;
      case PickleOpCode::SHORT_BINBYTES:
        push_str(Node::Bytes, le(1));
        return true;
      case PickleOpCode::BINBYTES8:
        push_str(Node::Bytes, le(8));
        return true;
      default:
        return false;
    }
  }

  // Opcodes that build tuples, lists and dicts.
  bool container(PickleOpCode op) {
    switch (op) {
      case PickleOpCode::EMPTY_TUPLE:
        push(make(Node::Tuple));
        return true;
      case PickleOpCode::TUPLE:
        push(sequence(Node::Tuple, pop_mark()));
        return true;
      case PickleOpCode::TUPLE1:
      case PickleOpCode::TUPLE2:
      case PickleOpCode::TUPLE3: {
        const size_t k = static_cast<uint8_t>(op) - static_cast<uint8_t>(PickleOpCode::TUPLE1) + 1;
        if (stack_.size() < k) fail("stack underflow");
        std::vector<NodeP> items(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
        stack_.resize(stack_.size() - k);
        push(sequence(Node::Tuple, std::move(items)));
        return true;
      }
      case PickleOpCode::EMPTY_LIST:
        push(make(Node::List));
        return true;
      case PickleOpCode::LIST:
        push(sequence(Node::List, pop_mark()));
        return true;
      case PickleOpCode::APPEND: {
        auto v = pop();
        expect(top(), Node::List, "APPEND")->items.push_back(v);
        return true;
      }
      case PickleOpCode::APPENDS: {
        auto vs = pop_mark();
        auto& l = expect(top(), Node::List, "APPENDS")->items;
        l.insert(l.end(), vs.begin(), vs.end());
        return true;
      }
      case PickleOpCode::EMPTY_DICT:
        push(make(Node::Dict));
        return true;
      case PickleOpCode::DICT: {
        auto n = make(Node::Dict);
        fill_dict(n, pop_mark());
        push(n);
        return true;
      }
      case PickleOpCode::SETITEM: {
        auto v = pop();
        auto k = pop();
        fill_dict(expect(top(), Node::Dict, "SETITEM"), {k, v});
        return true;
      }
      case PickleOpCode::SETITEMS: {
        auto kvs = pop_mark();
        fill_dict(expect(top(), Node::Dict, "SETITEMS"), kvs);
        return true;
      }
      default:
        return false;
    }
  }

  // Stack, memo, framing, globals and object construction.
  bool other(PickleOpCode op) {
    switch (op) {
      case PickleOpCode::PROTO:
        take(1);
        return true;
      case PickleOpCode::FRAME:
        take(8);
        return true;  // a length hint only
      case PickleOpCode::MARK:
        if (marks_.size() >= static_cast<size_t>(kPickleMaxDepth))
          limit("nested deeper than", kPickleMaxDepth, "levels");
        marks_.push_back(stack_.size());
        return true;
      case PickleOpCode::POP:
        pop();
        return true;
      case PickleOpCode::POP_MARK:
        pop_mark();
        return true;
      case PickleOpCode::DUP:
        push(top());
        return true;
      case PickleOpCode::BINPUT:
        put(le(1));
        return true;
      case PickleOpCode::LONG_BINPUT:
        put(le(4));
        return true;
      case PickleOpCode::MEMOIZE:
        put(memo_.size());
        return true;
      case PickleOpCode::BINGET:
        get(le(1));
        return true;
      case PickleOpCode::LONG_BINGET:
        get(le(4));
        return true;
      case PickleOpCode::GLOBAL: {
        auto n = make(Node::Global);
        const std::string module = line();
        n->s = module + "." + line();
        push(n);
        return true;
      }
      case PickleOpCode::STACK_GLOBAL: {
        auto name = pop();
        auto module = pop();
        if (module->kind != Node::Str || name->kind != Node::Str) fail("STACK_GLOBAL needs two strings");
        auto n = make(Node::Global);
        n->s = module->s + "." + name->s;
        push(n);
        return true;
      }
      case PickleOpCode::REDUCE:
      case PickleOpCode::NEWOBJ: {
        auto args = pop();
        auto callable = pop();
        push(reduce(callable, args));
        return true;
      }
      case PickleOpCode::BUILD: {
        pop();
        // OrderedDict state dicts carry their `_metadata` (versions per module) as object state; tensors may
        // carry Python attributes. Neither matters for weights.
        const auto k = top()->kind;
        if (k != Node::Dict && k != Node::Tensor) fail("BUILD on an unsupported object");
        return true;
      }
      case PickleOpCode::BINPERSID:
        push(persistent_load(pop()));
        return true;
      default:
        return false;
    }
  }

  const char* take(size_t n) {
    if (n > size_ - pos_) fail("unexpected end of data (truncated file?)");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  uint64_t le(size_t n) {
    const char* p = take(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl) fail("unexpected end of data in GLOBAL");
    const size_t n = static_cast<const char*>(nl) - (data_ + pos_);
    std::string s(take(n), n);
    take(1);
    return s;
  }
  void push(NodeP n) { stack_.push_back(std::move(n)); }
  NodeP pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
    auto n = stack_.back();
    stack_.pop_back();
    return n;
  }
  NodeP top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<NodeP> pop_mark() {
    if (marks_.empty()) fail("MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<NodeP> out(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return out;
  }
  NodeP expect(NodeP n, Node::Kind k, const char* op) {
    if (n->kind != k) fail(std::string(op) + " applied to the wrong kind of object");
    return n;
  }
  void get(uint64_t index) {
    auto it = memo_.find(static_cast<uint32_t>(index));
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " missing");
    push(it->second);
  }
  void push_bool(bool v) {
    auto n = make(Node::Bool);
    n->b = v;
    push(n);
  }
  void push_int(int64_t v) {
    auto n = make(Node::Int);
    n->i = v;
    push(n);
  }
  void push_long(uint64_t nbytes) {
    const char* p = take(nbytes);
    if (nbytes > 8) {  // e.g. the legacy format's 80-bit magic number
      auto n = make(Node::BigInt);
      n->s.assign(p, nbytes);
      push(n);
      return;
    }
    uint64_t v = 0;
    for (size_t k = 0; k < nbytes; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
    if (nbytes > 0 && nbytes < 8 && (static_cast<uint8_t>(p[nbytes - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * nbytes);
    push_int(static_cast<int64_t>(v));
  }
  void push_str(Node::Kind k, uint64_t n) {
    auto node = make(k);
    const char* p = take(n);
    node->s.assign(p, n);
    push(node);
  }
  // An index keeps this linear: a dict of many keys must not take quadratic time.
  void fill_dict(const NodeP& d, const std::vector<NodeP>& kvs) {
    if (kvs.size() % 2) fail("odd number of dict items");
    for (size_t k = 0; k < kvs.size(); k += 2) {
      if (kvs[k]->kind == Node::Str) {
        const auto [it, fresh] = d->index.emplace(kvs[k]->s, d->entries.size());
        if (!fresh) {
          d->entries[it->second].second = kvs[k + 1];
          continue;
        }
      }
      d->entries.emplace_back(kvs[k], kvs[k + 1]);
    }
  }
  static bool is_int(const NodeP& n) { return n->kind == Node::Int; }
  std::vector<int64_t> ints(const NodeP& n, const char* what) {
    if (n->kind != Node::Tuple && n->kind != Node::List) fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> v;
    for (const auto& x : n->items) {
      if (!is_int(x)) fail(std::string(what) + " holds a non-integer");
      v.push_back(x->i);
    }
    return v;
  }

  NodeP reduce(const NodeP& callable, const NodeP& args) {
    if (callable->kind != Node::Global) fail("REDUCE of something that is not a class or function");
    const std::string& g = callable->s;
    const auto& a = args->items;
    if (args->kind != Node::Tuple) fail("REDUCE arguments of " + g + " are not a tuple");
    if (g == "collections.OrderedDict") {
      auto d = make(Node::Dict);
      if (!a.empty() && (a[0]->kind == Node::List || a[0]->kind == Node::Tuple)) {
        for (const auto& pair : a[0]->items) {
          if (pair->kind != Node::Tuple || pair->items.size() != 2) fail("OrderedDict argument is not pairs");
          fill_dict(d, pair->items);
        }
      }
      return d;
    }
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || a[0]->kind != Node::Storage || !is_int(a[1])) fail(g + " called with unexpected arguments");
      auto t = make(Node::Tensor);
      t->storage = a[0];
      t->offset = a[1]->i;
      t->sizes = ints(a[2], "tensor size");
      t->strides = ints(a[3], "tensor stride");
      if (t->sizes.size() != t->strides.size()) fail("tensor size and stride differ in length");
      return t;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state" ||
        g.rfind("torch.jit._pickle.", 0) == 0) {
      // Parameters unpickle as their data; the JIT's build_*list / restore_type_tag are identities in Python.
      if (a.empty()) fail(g + " called without arguments");
      return a[0];
    }
    if (g == "torch.Size") {
      if (a.empty()) return make(Node::Tuple);
      auto t = make(Node::Tuple);
      t->items = a[0]->items;
      return t;
    }
    fail("holds a pickled Python object of type '" + g +
         "'; expected only tensors, numbers, strings, lists and dicts (was a whole model saved instead of its "
         "state_dict()?)");
  }

  NodeP persistent_load(const NodeP& pid) {
    // ('storage', <torch.XStorage>, key, location, numel[, view metadata])
    if (pid->kind != Node::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Node::Str ||
        pid->items[0]->s != "storage")
      fail("unsupported persistent id (not a tensor storage)");
    const auto& type = pid->items[1];
    const auto& key = pid->items[2];
    const auto& numel = pid->items[4];
    torch::ScalarType dtype;
    if (type->kind != Node::Global || !storage_dtype(type->s, &dtype))
      fail("unsupported storage type" + (type->kind == Node::Global ? " '" + type->s + "'" : std::string()));
    if (key->kind != Node::Str || !is_int(numel) || numel->i < 0) fail("malformed storage reference");
    if (pid->items.size() > 5 && pid->items[5]->kind != Node::None)
      fail("storage views (legacy format with view metadata) are not supported");
    auto it = storages.find(key->s);
    if (it != storages.end()) return it->second;
    auto n = make(Node::Storage);
    n->s = key->s;
    n->dtype = dtype;
    n->numel = numel->i;
    storages.emplace(key->s, n);
    storage_order.push_back(key->s);
    return n;
  }

  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string where_;
  std::vector<NodeP> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, NodeP> memo_;
  // Every node, so that the destructor can unlink them first: freeing a deep chain (or a cycle) through
  // shared_ptr would recurse once per level, or leak.
  std::vector<NodeP> all_;
};

}  // namespace expctl::io::detail
