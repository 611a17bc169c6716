// Internal to runner/io/torch_file.cpp: PickleValues into the pickle torch.save writes (protocol 2, tensors as
// persistent storage ids), readable by torch.load(weights_only=True).
#pragma once
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/torch.h>

#include <cstring>
#include <string>
#include <vector>

#include "runner/core/error.h"
#include "runner/io/pickle_node.h"
#include "runner/io/pickle_value.h"

namespace expctl::io::detail {

using torch::jit::PickleOpCode;

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

}  // namespace expctl::io::detail
