#include "runner/io/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/checksum.h"
#include "runner/io/pickle_converter.h"
#include "runner/io/pickle_node.h"
#include "runner/io/pickler.h"
#include "runner/io/unpickler.h"
#include "runner/io/zip_check.h"

namespace expctl::io {
namespace {

using detail::Converter;
using detail::Node;
using detail::NodeP;
using detail::Pickler;
using detail::Unpickler;

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

}  // namespace

std::shared_ptr<caffe2::serialize::ReadAdapterInterface> zip_bytes_reader(std::shared_ptr<const std::string> bytes,
                                                                          const std::string& file) {
  check_zip(*bytes, file);
  return std::make_shared<BytesReader>(std::move(bytes));
}

PickleValue read_torch_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  RegularFile in(path);
  check_verified(path);  // a downloaded file: changed since it was verified?
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

}  // namespace expctl::io
