#include "runner/io/pickle_value.h"

#include "runner/core/error.h"

namespace expctl::io {

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

}  // namespace expctl::io
