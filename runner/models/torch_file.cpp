#include "runner/models/torch_file.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <unordered_map>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/checksum.h"
#include "runner/io/zip_check.h"

namespace expctl::models {

// ---- PickleValue -------------------------------------------------------------------------------

PickleValue PickleValue::from(bool v) {
  PickleValue p;
  p.kind = Kind::Bool;
  p.boolean = v;
  return p;
}
PickleValue PickleValue::from(int64_t v) {
  PickleValue p;
  p.kind = Kind::Int;
  p.integer = v;
  return p;
}
PickleValue PickleValue::from(double v) {
  PickleValue p;
  p.kind = Kind::Float;
  p.real = v;
  return p;
}
PickleValue PickleValue::from(std::string v) {
  PickleValue p;
  p.kind = Kind::String;
  p.text = std::move(v);
  return p;
}
PickleValue PickleValue::from(torch::Tensor v) {
  PickleValue p;
  p.kind = Kind::Tensor;
  p.tensor = std::move(v);
  return p;
}
PickleValue PickleValue::list(std::vector<PickleValue> v) {
  PickleValue p;
  p.kind = Kind::List;
  p.items = std::move(v);
  return p;
}
PickleValue PickleValue::tuple(std::vector<PickleValue> v) {
  PickleValue p;
  p.kind = Kind::Tuple;
  p.items = std::move(v);
  return p;
}
PickleValue PickleValue::dict() {
  PickleValue p;
  p.kind = Kind::Dict;
  return p;
}

PickleValue& PickleValue::set(const std::string& key, PickleValue value) {
  if (kind != Kind::Dict) throw Error("PickleValue::set on a " + kind_name());
  for (auto& e : entries) {
    if (e.first.kind == Kind::String && e.first.text == key) {
      e.second = std::move(value);
      return e.second;
    }
  }
  entries.emplace_back(from(key), std::move(value));
  return entries.back().second;
}

const PickleValue* PickleValue::find(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& e : entries)
    if (e.first.kind == Kind::String && e.first.text == key) return &e.second;
  return nullptr;
}

std::string PickleValue::kind_name() const {
  switch (kind) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::Bytes:
      return "bytes";
    case Kind::Tensor:
      return "tensor";
    case Kind::List:
      return "list";
    case Kind::Tuple:
      return "tuple";
    case Kind::Dict:
      return "dict";
  }
  return "?";
}

namespace {

using torch::jit::PickleOpCode;

// ---- unpickling --------------------------------------------------------------------------------

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

bool storage_dtype(const std::string& global, torch::ScalarType* out) {
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

const char* storage_name(torch::ScalarType dtype) {
  for (const auto& t : kStorageTypes)
    if (t.dtype == dtype) return t.name;
  throw Error(std::string("serialize_torch_file: unsupported dtype ") + c10::toString(dtype));
}

// "more than 1000000 pickle objects": the message of every limit, naming it and what it protects against.
std::string over_limit(const std::string& what, int64_t limit, const std::string& unit) {
  return what + " " + std::to_string(limit) + " " + unit +
         " (a limit of expctl's torch-file reader: a damaged or hostile file must not exhaust memory)";
}

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

torch::Tensor storage_from_bytes(const void* bytes, size_t nbytes, const Node& storage, const std::string& where) {
  const size_t element = c10::elementSize(storage.dtype);
  // Compared by division: numel comes from the file and numel * element may overflow.
  const size_t need =
      static_cast<size_t>(storage.numel) <= nbytes / element ? static_cast<size_t>(storage.numel) * element : SIZE_MAX;
  if (nbytes < need)
    throw DataError(where + ": storage '" + storage.s + "' has " + std::to_string(nbytes) + " bytes, needs " +
                    std::to_string(storage.numel) + " x " + std::to_string(element) + " (truncated file?)");
  torch::Tensor t = torch::empty({storage.numel}, torch::TensorOptions().dtype(storage.dtype));
  if (need) std::memcpy(t.data_ptr(), bytes, need);
  return t;
}

std::string c10_message(const c10::Error& e) {
  std::string m = e.what_without_backtrace();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

// The whole file, held once: the zip checks and LibTorch's reader see the same bytes.
class BytesReader : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BytesReader(std::shared_ptr<const std::string> bytes) : bytes_(std::move(bytes)) {}
  size_t size() const override { return bytes_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char*) const override {
    if (pos >= bytes_->size()) return 0;
    n = std::min<size_t>(n, bytes_->size() - static_cast<size_t>(pos));
    std::memcpy(buf, bytes_->data() + pos, n);
    return n;
  }

 private:
  std::shared_ptr<const std::string> bytes_;
};

PickleValue read_zip(const std::string& file, std::shared_ptr<const std::string> bytes) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  auto input = zip_bytes_reader(std::move(bytes), file);
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(input);
  } catch (const c10::Error& e) {
    throw DataError(file + ": not a readable PyTorch zip archive (truncated or corrupt?): " + c10_message(e));
  }
  try {
    if (!reader->hasRecord("data.pkl"))
      throw DataError(file + ": zip archive without data.pkl: not a file written by torch.save");
    if (reader->hasRecord("byteorder")) {
      auto [ptr, size] = reader->getRecord("byteorder");
      const std::string order(static_cast<const char*>(ptr.get()), size);
      if (order != "little") throw DataError(file + ": byte order '" + order + "' is not supported");
    }
    auto [pkl, pkl_size] = reader->getRecord("data.pkl");
    Unpickler unpickler(static_cast<const char*>(pkl.get()), pkl_size, file + ": data.pkl");
    size_t pos = 0;
    NodeP root = unpickler.run(pos);
    int64_t storage_bytes = 0;
    for (const auto& key : unpickler.storage_order) {
      Node& s = *unpickler.storages[key];
      const std::string record = "data/" + key;
      if (!reader->hasRecord(record)) throw DataError(file + ": record '" + record + "' is missing");
      auto [ptr, size] = reader->getRecord(record);
      s.data = storage_from_bytes(ptr.get(), size, s, file);
      storage_bytes += static_cast<int64_t>(size);
    }
    return Converter(file, storage_bytes).run(root);
  } catch (const c10::Error& e) {
    throw DataError(file + ": corrupt PyTorch zip archive: " + c10_message(e));
  }
}

// The pre-1.6 format: magic number, protocol version and system info pickles, the object pickle, the sorted
// list of storage keys, then each storage as an int64 element count followed by its raw bytes.
PickleValue read_legacy(const std::string& file, const std::string& bytes) {
  Unpickler unpickler(bytes.data(), bytes.size(), file);
  size_t pos = 0;
  NodeP magic = unpickler.run(pos);
  static const unsigned char kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (magic->kind != Node::BigInt || magic->s != std::string(reinterpret_cast<const char*>(kMagic), sizeof kMagic))
    throw DataError(file + ": a Python pickle, but not a file written by torch.save (no PyTorch magic number)");
  NodeP protocol = unpickler.run(pos);
  if (protocol->kind != Node::Int || protocol->i != 1001)
    throw DataError(file + ": unsupported legacy PyTorch protocol version");
  NodeP info = unpickler.run(pos);
  for (const auto& e : info->entries)
    if (e.first->kind == Node::Str && e.first->s == "little_endian" && e.second->kind == Node::Bool && !e.second->b)
      throw DataError(file + ": big-endian files are not supported");
  NodeP root = unpickler.run(pos);
  NodeP keys = unpickler.run(pos);
  if (keys->kind != Node::List) throw DataError(file + ": malformed storage key list");
  int64_t storage_bytes = 0;
  for (const auto& k : keys->items) {
    if (k->kind != Node::Str) throw DataError(file + ": malformed storage key list");
    auto it = unpickler.storages.find(k->s);
    if (it == unpickler.storages.end()) throw DataError(file + ": storage '" + k->s + "' is never used");
    if (bytes.size() - pos < 8) throw DataError(file + ": unexpected end of file (truncated?)");
    int64_t count = 0;
    std::memcpy(&count, bytes.data() + pos, 8);
    pos += 8;
    Node& s = *it->second;
    if (count != s.numel) throw DataError(file + ": storage '" + k->s + "' has an inconsistent size");
    const size_t element = c10::elementSize(s.dtype);
    if (static_cast<size_t>(count) > (bytes.size() - pos) / element)
      throw DataError(file + ": unexpected end of file (truncated?)");
    const size_t nbytes = static_cast<size_t>(count) * element;
    s.data = storage_from_bytes(bytes.data() + pos, nbytes, s, file);
    pos += nbytes;
    storage_bytes += static_cast<int64_t>(nbytes);
  }
  return Converter(file, storage_bytes).run(root);
}

// ---- pickling ----------------------------------------------------------------------------------

class Pickler {
 public:
  void dump(const PickleValue& v) {
    op(PickleOpCode::PROTO);
    out.push_back(2);  // protocol 2, as torch.save writes by default
    write(v);
    op(PickleOpCode::STOP);
  }
  std::string out;
  std::vector<torch::Tensor> tensors;

 private:
  void op(PickleOpCode c) { out.push_back(static_cast<char>(c)); }
  void le(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
  }
  void str(const std::string& s) {
    op(PickleOpCode::BINUNICODE);
    le(s.size(), 4);
    out += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op(PickleOpCode::BININT);
      le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      op(PickleOpCode::LONG1);
      out.push_back(8);
      le(static_cast<uint64_t>(v), 8);
    }
  }
  void global(const char* module, const char* name) {
    op(PickleOpCode::GLOBAL);
    out += module;
    out += '\n';
    out += name;
    out += '\n';
  }
  void write(const PickleValue& v) {
    switch (v.kind) {
      case PickleValue::Kind::None:
        op(PickleOpCode::NONE);
        break;
      case PickleValue::Kind::Bool:
        op(v.boolean ? PickleOpCode::NEWTRUE : PickleOpCode::NEWFALSE);
        break;
      case PickleValue::Kind::Int:
        integer(v.integer);
        break;
      case PickleValue::Kind::Float: {
        uint64_t bits;
        std::memcpy(&bits, &v.real, 8);
        op(PickleOpCode::BINFLOAT);
        for (int k = 7; k >= 0; --k) out.push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
        break;
      }
      case PickleValue::Kind::String:
        str(v.text);
        break;
      case PickleValue::Kind::Bytes:
        op(PickleOpCode::BINBYTES);
        le(v.text.size(), 4);
        out += v.text;
        break;
      case PickleValue::Kind::List:
        op(PickleOpCode::EMPTY_LIST);
        if (!v.items.empty()) {
          op(PickleOpCode::MARK);
          for (const auto& x : v.items) write(x);
          op(PickleOpCode::APPENDS);
        }
        break;
      case PickleValue::Kind::Tuple:
        op(PickleOpCode::MARK);
        for (const auto& x : v.items) write(x);
        op(PickleOpCode::TUPLE);
        break;
      case PickleValue::Kind::Dict:
        op(PickleOpCode::EMPTY_DICT);
        if (!v.entries.empty()) {
          op(PickleOpCode::MARK);
          for (const auto& e : v.entries) {
            write(e.first);
            write(e.second);
          }
          op(PickleOpCode::SETITEMS);
        }
        break;
      case PickleValue::Kind::Tensor:
        tensor(v.tensor);
        break;
    }
  }
  void tensor(const torch::Tensor& t0) {
    if (!t0.defined()) throw Error("serialize_torch_file: undefined tensor");
    const torch::Tensor t = t0.detach().to(torch::kCPU).contiguous();
    const char* type = storage_name(t.scalar_type());
    // What Python's Tensor.__reduce_ex__ writes: _rebuild_tensor_v2(storage, offset, size, stride,
    // requires_grad, OrderedDict()) with the storage as a persistent id. Only globals that
    // torch.load(weights_only=True) allows appear.
    global("torch._utils", "_rebuild_tensor_v2");
    op(PickleOpCode::MARK);
    op(PickleOpCode::MARK);
    str("storage");
    global("torch", type);
    str(std::to_string(tensors.size()));
    str("cpu");
    integer(t.numel());
    op(PickleOpCode::TUPLE);
    op(PickleOpCode::BINPERSID);
    integer(0);
    op(PickleOpCode::MARK);
    for (auto s : t.sizes()) integer(s);
    op(PickleOpCode::TUPLE);
    op(PickleOpCode::MARK);
    for (auto s : t.strides()) integer(s);
    op(PickleOpCode::TUPLE);
    op(PickleOpCode::NEWFALSE);
    global("collections", "OrderedDict");
    op(PickleOpCode::EMPTY_TUPLE);
    op(PickleOpCode::REDUCE);
    op(PickleOpCode::TUPLE);
    op(PickleOpCode::REDUCE);
    tensors.push_back(t);
  }
};

}  // namespace

std::shared_ptr<caffe2::serialize::ReadAdapterInterface> zip_bytes_reader(std::shared_ptr<const std::string> bytes,
                                                                          const std::string& file) {
  io::check_zip(*bytes, file);
  return std::make_shared<BytesReader>(std::move(bytes));
}

PickleValue read_torch_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  RegularFile in(path);
  io::check_verified(path);  // a downloaded file: changed since it was verified?
  if (in.size() == 0) throw DataError(file + ": file is empty");
  auto bytes = std::make_shared<const std::string>(in.read_all());
  if (bytes->size() >= 4 && std::memcmp(bytes->data(), "PK\x03\x04", 4) == 0) return read_zip(file, bytes);
  if (!bytes->empty() && static_cast<unsigned char>((*bytes)[0]) == 0x80) return read_legacy(file, *bytes);
  throw DataError(file + ": not a PyTorch file (neither a zip archive nor a pickle)");
}

std::vector<char> serialize_torch_file(const PickleValue& value) {
  Pickler p;
  p.dump(value);
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t n) -> size_t {
    out.insert(out.end(), static_cast<const char*>(data), static_cast<const char*>(data) + n);
    return n;
  });
  writer.writeRecord("data.pkl", p.out.data(), p.out.size());
  const std::string order = "little";
  writer.writeRecord("byteorder", order.data(), order.size());
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    const auto& t = p.tensors[i];
    writer.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.nbytes());
  }
  writer.writeEndOfFile();
  return out;
}

// Weights with NaN or Inf would train, prune and report garbage without a word: refuse them where they are read.
void check_finite(const torch::Tensor& t, const std::string& name, const std::string& what) {
  if (!t.is_floating_point() || t.numel() == 0) return;
  const torch::Tensor bad = torch::isfinite(t).logical_not().flatten();
  if (!bad.any().item<bool>()) return;
  const int64_t i = bad.nonzero()[0][0].item<int64_t>();
  const double x = t.flatten()[i].item<double>();
  throw DataError(what + ": tensor '" + name + "' holds " +
                  (std::isnan(x) ? "NaN"
                   : x > 0       ? "+Inf"
                                 : "-Inf") +
                  " (element " + std::to_string(i) + " of " + std::to_string(t.numel()) + ", " +
                  std::to_string(bad.sum().item<int64_t>()) +
                  " not finite): the file is damaged or comes from a diverged run; refusing to use it");
}

StateDict to_state_dict(const PickleValue& value, const std::string& what) {
  if (value.kind != PickleValue::Kind::Dict)
    throw DataError(what + ": expected a dict of name -> tensor, found a " + value.kind_name());
  StateDict sd;
  for (const auto& [k, v] : value.entries) {
    if (k.kind != PickleValue::Kind::String) throw DataError(what + ": expected string keys, found a " + k.kind_name());
    if (v.kind != PickleValue::Kind::Tensor)
      throw DataError(what + ": '" + k.text + "' is a " + v.kind_name() + ", not a tensor");
    check_finite(v.tensor, k.text, what);
    sd.insert(k.text, v.tensor);
  }
  return sd;
}

StateDict read_state_dict_file(const std::filesystem::path& file) {
  const PickleValue root = read_torch_file(file);
  if (const PickleValue* inner = root.find("state_dict"); inner && inner->kind == PickleValue::Kind::Dict)
    return to_state_dict(*inner, file.string() + ": state_dict");
  return to_state_dict(root, file.string());
}

}  // namespace expctl::models
