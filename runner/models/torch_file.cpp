#include "runner/models/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <unordered_map>

#include "runner/core/error.h"

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
  std::vector<std::pair<NodeP, NodeP>> entries;  // Dict
  torch::ScalarType dtype = torch::kFloat;       // Storage
  int64_t numel = 0;                             // Storage
  NodeP storage;                                 // Tensor
  int64_t offset = 0;                            // Tensor
  std::vector<int64_t> sizes, strides;           // Tensor
  torch::Tensor data;                            // Storage once read
};

NodeP make(Node::Kind k) {
  auto n = std::make_shared<Node>();
  n->kind = k;
  return n;
}

bool storage_dtype(const std::string& global, torch::ScalarType* out) {
  static const std::unordered_map<std::string, torch::ScalarType> types = {
      {"FloatStorage", torch::kFloat},       {"DoubleStorage", torch::kDouble}, {"HalfStorage", torch::kHalf},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong},     {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort},       {"CharStorage", torch::kChar},     {"ByteStorage", torch::kByte},
      {"BoolStorage", torch::kBool}};
  std::string name;
  if (global.rfind("torch.cuda.", 0) == 0) {
    name = global.substr(11);
  } else if (global.rfind("torch.", 0) == 0) {
    name = global.substr(6);
  } else {
    return false;
  }
  auto it = types.find(name);
  if (it == types.end()) return false;
  *out = it->second;
  return true;
}

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, std::string where) : data_(data), size_(size), where_(std::move(where)) {}

  // Runs one pickle from `pos` to its STOP; returns the value.
  NodeP run(size_t& pos) {
    pos_ = pos;
    stack_.clear();
    marks_.clear();
    memo_.clear();
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          take(8);
          break;     // FRAME (length hint only)
        case '.': {  // STOP
          if (stack_.size() != 1) fail("pickle ends with " + std::to_string(stack_.size()) + " values on the stack");
          pos = pos_;
          return stack_.back();
        }
        case '(':
          marks_.push_back(stack_.size());
          break;  // MARK
        case '0':
          pop();
          break;  // POP
        case '1':
          pop_mark();
          break;  // POP_MARK
        case '2':
          push(top());
          break;  // DUP
        case 'N':
          push(make(Node::None));
          break;
        case 0x88:
          push_bool(true);
          break;  // NEWTRUE
        case 0x89:
          push_bool(false);
          break;  // NEWFALSE
        case 'J':
          push_int(static_cast<int32_t>(le(4)));
          break;  // BININT
        case 'K':
          push_int(le(1));
          break;  // BININT1
        case 'M':
          push_int(le(2));
          break;  // BININT2
        case 0x8a:
          push_long(le(1));
          break;  // LONG1
        case 0x8b:
          push_long(le(4));
          break;     // LONG4
        case 'G': {  // BINFLOAT (big-endian)
          const char* p = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(p[k]);
          auto n = make(Node::Float);
          std::memcpy(&n->f, &bits, 8);
          push(n);
          break;
        }
        case 'X':
          push_str(Node::Str, le(4));
          break;  // BINUNICODE
        case 0x8c:
          push_str(Node::Str, le(1));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push_str(Node::Str, le(8));
          break;  // BINUNICODE8
        case 'T':
          push_str(Node::Str, le(4));
          break;  // BINSTRING (Python 2 str)
        case 'U':
          push_str(Node::Str, le(1));
          break;  // SHORT_BINSTRING
        case 'B':
          push_str(Node::Bytes, le(4));
          break;  // BINBYTES
        case 'C':
          push_str(Node::Bytes, le(1));
          break;  // SHORT_BINBYTES
        case 0x8e:
          push_str(Node::Bytes, le(8));
          break;  // BINBYTES8
        case ')':
          push(make(Node::Tuple));
          break;     // EMPTY_TUPLE
        case 't': {  // TUPLE
          auto n = make(Node::Tuple);
          n->items = pop_mark();
          push(n);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t k = op - 0x84;
          if (stack_.size() < k) fail("stack underflow");
          auto n = make(Node::Tuple);
          n->items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(n);
          break;
        }
        case ']':
          push(make(Node::List));
          break;     // EMPTY_LIST
        case 'l': {  // LIST
          auto n = make(Node::List);
          n->items = pop_mark();
          push(n);
          break;
        }
        case 'a': {  // APPEND
          auto v = pop();
          expect(top(), Node::List, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          auto vs = pop_mark();
          auto& l = expect(top(), Node::List, "APPENDS")->items;
          l.insert(l.end(), vs.begin(), vs.end());
          break;
        }
        case '}':
          push(make(Node::Dict));
          break;     // EMPTY_DICT
        case 'd': {  // DICT
          auto n = make(Node::Dict);
          fill_dict(n, pop_mark());
          push(n);
          break;
        }
        case 's': {  // SETITEM
          auto v = pop();
          auto k = pop();
          fill_dict(expect(top(), Node::Dict, "SETITEM"), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto kvs = pop_mark();
          fill_dict(expect(top(), Node::Dict, "SETITEMS"), kvs);
          break;
        }
        case 'q':
          memo_[static_cast<uint32_t>(le(1))] = top();
          break;  // BINPUT
        case 'r':
          memo_[static_cast<uint32_t>(le(4))] = top();
          break;  // LONG_BINPUT
        case 0x94:
          memo_[static_cast<uint32_t>(memo_.size())] = top();
          break;  // MEMOIZE
        case 'h':
          get(le(1));
          break;  // BINGET
        case 'j':
          get(le(4));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          auto n = make(Node::Global);
          const std::string module = line();
          n->s = module + "." + line();
          push(n);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          if (module->kind != Node::Str || name->kind != Node::Str) fail("STACK_GLOBAL needs two strings");
          auto n = make(Node::Global);
          n->s = module->s + "." + name->s;
          push(n);
          break;
        }
        case 'R': {  // REDUCE
          auto args = pop();
          auto callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': {  // BUILD
          auto state = pop();
          // OrderedDict state dicts carry their `_metadata` (versions per module) as object state; tensors may
          // carry Python attributes. Neither matters for weights.
          const auto k = top()->kind;
          if (k != Node::Dict && k != Node::Tensor) fail("BUILD on an unsupported object");
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;  // BINPERSID
        default: {
          std::ostringstream os;
          os << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op) << std::dec << " at byte "
             << (pos_ - 1) << " (not a PyTorch file, or a newer pickle feature)";
          fail(os.str());
        }
      }
    }
  }

  // Storages referenced through persistent ids, by key.
  std::unordered_map<std::string, NodeP> storages;
  std::vector<std::string> storage_order;

  [[noreturn]] void fail(const std::string& what) const { throw DataError(where_ + ": " + what); }

 private:
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
  void fill_dict(const NodeP& d, const std::vector<NodeP>& kvs) {
    if (kvs.size() % 2) fail("odd number of dict items");
    for (size_t k = 0; k < kvs.size(); k += 2) {
      bool replaced = false;
      if (kvs[k]->kind == Node::Str) {
        for (auto& e : d->entries) {
          if (e.first->kind == Node::Str && e.first->s == kvs[k]->s) {
            e.second = kvs[k + 1];
            replaced = true;
          }
        }
      }
      if (!replaced) d->entries.emplace_back(kvs[k], kvs[k + 1]);
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
};

// Converts the node graph into PickleValues, materialising tensors from their (already read) storages.
PickleValue convert(const NodeP& n, const std::string& where, int depth,
                    std::unordered_map<const Node*, torch::Tensor>& cache) {
  if (depth > 200) throw DataError(where + ": data nested too deeply");
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
      throw DataError(where + ": integer too large for 64 bits");
    case Node::Tuple:
    case Node::List:
      v.kind = n->kind == Node::Tuple ? PickleValue::Kind::Tuple : PickleValue::Kind::List;
      for (const auto& x : n->items) v.items.push_back(convert(x, where, depth + 1, cache));
      return v;
    case Node::Dict:
      v.kind = PickleValue::Kind::Dict;
      for (const auto& e : n->entries)
        v.entries.emplace_back(convert(e.first, where, depth + 1, cache), convert(e.second, where, depth + 1, cache));
      return v;
    case Node::Global:
      throw DataError(where + ": holds a bare Python global '" + n->s + "'");
    case Node::Storage:
      throw DataError(where + ": holds a bare storage");
    case Node::Tensor: {
      auto it = cache.find(n.get());
      if (it != cache.end()) return PickleValue::from(it->second);
      const torch::Tensor& storage = n->storage->data;
      if (!storage.defined()) throw DataError(where + ": storage '" + n->storage->s + "' was never read");
      // Bounds check before as_strided: a corrupt size/stride must not read outside the storage.
      int64_t numel = 1, last = n->offset;
      for (size_t d = 0; d < n->sizes.size(); ++d) {
        if (n->sizes[d] < 0 || n->strides[d] < 0) throw DataError(where + ": negative tensor size or stride");
        numel *= n->sizes[d];
        last += (n->sizes[d] - 1) * n->strides[d];
      }
      if (n->offset < 0 || (numel > 0 && last >= storage.numel()))
        throw DataError(where + ": a tensor reaches past the end of its storage '" + n->storage->s + "'");
      torch::Tensor t = numel == 0
                            ? torch::empty(n->sizes, storage.options())
                            : storage.as_strided(n->sizes, n->strides, n->offset).clone(at::MemoryFormat::Contiguous);
      cache.emplace(n.get(), t);
      return PickleValue::from(t);
    }
  }
  return v;
}

torch::Tensor storage_from_bytes(const void* bytes, size_t nbytes, const Node& storage, const std::string& where) {
  const size_t need = static_cast<size_t>(storage.numel) * c10::elementSize(storage.dtype);
  if (nbytes < need)
    throw DataError(where + ": storage '" + storage.s + "' has " + std::to_string(nbytes) + " bytes, needs " +
                    std::to_string(need) + " (truncated file?)");
  torch::Tensor t = torch::empty({storage.numel}, torch::TensorOptions().dtype(storage.dtype));
  if (need) std::memcpy(t.data_ptr(), bytes, need);
  return t;
}

std::string c10_message(const c10::Error& e) {
  std::string m = e.what_without_backtrace();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

PickleValue read_zip(const std::string& file) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(file);
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
    for (const auto& key : unpickler.storage_order) {
      Node& s = *unpickler.storages[key];
      const std::string record = "data/" + key;
      if (!reader->hasRecord(record)) throw DataError(file + ": record '" + record + "' is missing");
      auto [ptr, size] = reader->getRecord(record);
      s.data = storage_from_bytes(ptr.get(), size, s, file);
    }
    std::unordered_map<const Node*, torch::Tensor> cache;
    return convert(root, file, 0, cache);
  } catch (const c10::Error& e) {
    throw DataError(file + ": corrupt PyTorch zip archive: " + c10_message(e));
  }
}

// The pre-1.6 format: magic number, protocol version and system info pickles, the object pickle, the sorted
// list of storage keys, then each storage as an int64 element count followed by its raw bytes.
PickleValue read_legacy(const std::string& file, const std::vector<char>& bytes) {
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
    const size_t nbytes = static_cast<size_t>(count) * c10::elementSize(s.dtype);
    if (bytes.size() - pos < nbytes) throw DataError(file + ": unexpected end of file (truncated?)");
    s.data = storage_from_bytes(bytes.data() + pos, nbytes, s, file);
    pos += nbytes;
  }
  std::unordered_map<const Node*, torch::Tensor> cache;
  return convert(root, file, 0, cache);
}

// ---- pickling ----------------------------------------------------------------------------------

class Pickler {
 public:
  void dump(const PickleValue& v) {
    op(0x80);
    op(2);  // protocol 2, as torch.save writes by default
    write(v);
    op('.');
  }
  std::string out;
  std::vector<torch::Tensor> tensors;

 private:
  void op(uint8_t c) { out.push_back(static_cast<char>(c)); }
  void le(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
  }
  void str(const std::string& s) {
    op('X');
    le(s.size(), 4);
    out += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      op(0x8a);
      op(8);
      le(static_cast<uint64_t>(v), 8);
    }
  }
  void global(const char* module, const char* name) {
    op('c');
    out += module;
    out += '\n';
    out += name;
    out += '\n';
  }
  void write(const PickleValue& v) {
    switch (v.kind) {
      case PickleValue::Kind::None:
        op('N');
        break;
      case PickleValue::Kind::Bool:
        op(v.boolean ? 0x88 : 0x89);
        break;
      case PickleValue::Kind::Int:
        integer(v.integer);
        break;
      case PickleValue::Kind::Float: {
        uint64_t bits;
        std::memcpy(&bits, &v.real, 8);
        op('G');
        for (int k = 7; k >= 0; --k) out.push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
        break;
      }
      case PickleValue::Kind::String:
        str(v.text);
        break;
      case PickleValue::Kind::Bytes:
        op('B');
        le(v.text.size(), 4);
        out += v.text;
        break;
      case PickleValue::Kind::List:
        op(']');
        if (!v.items.empty()) {
          op('(');
          for (const auto& x : v.items) write(x);
          op('e');
        }
        break;
      case PickleValue::Kind::Tuple:
        op('(');
        for (const auto& x : v.items) write(x);
        op('t');
        break;
      case PickleValue::Kind::Dict:
        op('}');
        if (!v.entries.empty()) {
          op('(');
          for (const auto& e : v.entries) {
            write(e.first);
            write(e.second);
          }
          op('u');
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
    const char* type = nullptr;
    switch (t.scalar_type()) {
      case torch::kFloat:
        type = "FloatStorage";
        break;
      case torch::kDouble:
        type = "DoubleStorage";
        break;
      case torch::kHalf:
        type = "HalfStorage";
        break;
      case torch::kBFloat16:
        type = "BFloat16Storage";
        break;
      case torch::kLong:
        type = "LongStorage";
        break;
      case torch::kInt:
        type = "IntStorage";
        break;
      case torch::kShort:
        type = "ShortStorage";
        break;
      case torch::kChar:
        type = "CharStorage";
        break;
      case torch::kByte:
        type = "ByteStorage";
        break;
      case torch::kBool:
        type = "BoolStorage";
        break;
      default:
        throw Error(std::string("serialize_torch_file: unsupported dtype ") + c10::toString(t.scalar_type()));
    }
    // What Python's Tensor.__reduce_ex__ writes: _rebuild_tensor_v2(storage, offset, size, stride,
    // requires_grad, OrderedDict()) with the storage as a persistent id. Only globals that
    // torch.load(weights_only=True) allows appear.
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');
    str("storage");
    global("torch", type);
    str(std::to_string(tensors.size()));
    str("cpu");
    integer(t.numel());
    op('t');
    op('Q');
    integer(0);
    op('(');
    for (auto s : t.sizes()) integer(s);
    op('t');
    op('(');
    for (auto s : t.strides()) integer(s);
    op('t');
    op(0x89);
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('t');
    op('R');
    tensors.push_back(t);
  }
};

}  // namespace

PickleValue read_torch_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw DataError(file + ": no such file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw DataError(file + ": cannot read: " + ec.message());
  if (size == 0) throw DataError(file + ": file is empty");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(file + ": cannot open for reading");
  char head[4] = {0, 0, 0, 0};
  in.read(head, 4);
  if (size >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return read_zip(file);
  if (static_cast<unsigned char>(head[0]) == 0x80) {
    std::vector<char> bytes(size);
    in.seekg(0);
    in.read(bytes.data(), static_cast<std::streamsize>(size));
    if (!in) throw DataError(file + ": read error");
    return read_legacy(file, bytes);
  }
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

StateDict to_state_dict(const PickleValue& value, const std::string& what) {
  if (value.kind != PickleValue::Kind::Dict)
    throw DataError(what + ": expected a dict of name -> tensor, found a " + value.kind_name());
  StateDict sd;
  for (const auto& [k, v] : value.entries) {
    if (k.kind != PickleValue::Kind::String) throw DataError(what + ": expected string keys, found a " + k.kind_name());
    if (v.kind != PickleValue::Kind::Tensor)
      throw DataError(what + ": '" + k.text + "' is a " + v.kind_name() + ", not a tensor");
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
