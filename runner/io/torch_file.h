// Reading and writing the files of Python's torch.save: the zip format (data.pkl + data/<key> records) and,
// for reading, the legacy pre-1.6 format. LibTorch's own unpickler turns Python's OrderedDict (every
// state_dict) into None (pytorch/pytorch#100741) and its pickler tags containers with a global that
// torch.load(weights_only=True) refuses, so this module speaks the small pickle subset state dicts use itself.
#pragma once
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runner/io/pickle_value.h"
#include "runner/io/state_dict.h"

namespace expctl::io {

/// Hard limits of read_torch_file(), so that a small damaged or hostile file cannot exhaust memory or time
/// (a pickle can reference one object many times; expanded, a 1 KB file could describe an exponentially large
/// structure). Exceeding one is a DataError naming the file and the limit. Real state dicts and checkpoints stay
/// far below (ResNet-18: about 2,000 objects, depth 4).
inline constexpr int64_t kPickleMaxObjects = 1000000;  ///< objects created, and values after expanding references
inline constexpr int64_t kPickleMaxMemo = 1000000;     ///< memo entries
inline constexpr int kPickleMaxDepth = 200;            ///< nesting of MARKs and of containers
/// The tensors of a file may take at most its storage records' bytes plus this (views can overlap via stride 0).
inline constexpr int64_t kTensorSlackBytes = int64_t{16} << 20;

/// Reads a torch.save file (zip or legacy format). Throws expctl::DataError "<file>: <what is wrong>" for a
/// missing, empty, truncated or foreign file, one holding pickled Python objects other than the subset, or one
/// over a limit above. Only a regular file is read, once, never blocking: a folder, FIFO or device is named as
/// such ("<file>: is a directory, not a regular file"). A zip's records are checked before LibTorch's zip reader
/// sees them (zip_bytes_reader()). A downloaded file is first checked against what was recorded when it was
/// verified (io::check_verified).
PickleValue read_torch_file(const std::filesystem::path& file);

/// LibTorch's zip reader input for `bytes`, the whole of the zip-format file `file` (torch.save's format,
/// TorchScript, LibTorch archives), after io::check_zip() passed on them: no record declares a size beyond the
/// file's own limits (LibTorch allocates what a record declares) and every record's CRC-32 matches (LibTorch's
/// miniz is built without that check). Readers hand this to PyTorchStreamReader or torch::jit::load instead of
/// the path, so the bytes checked are the bytes read. Throws expctl::DataError "<file>: record '<name>': ...".
std::shared_ptr<caffe2::serialize::ReadAdapterInterface> zip_bytes_reader(std::shared_ptr<const std::string> bytes,
                                                                          const std::string& file);

/// Throws expctl::DataError "<what>: tensor '<name>' holds NaN (element i of n, k not finite): ..." when a floating
/// tensor holds NaN or Inf; does nothing for other tensors.
void check_finite(const torch::Tensor& t, const std::string& name, const std::string& what);

/// The bytes of a zip-format torch file holding `value`, readable by Python's torch.load (weights_only too)
/// and by read_torch_file(). Tensors are saved contiguous, on the CPU.
std::vector<char> serialize_torch_file(const PickleValue& value);

/// A PickleValue dict → StateDict (string keys, tensor values); `what` names the object in errors
/// (e.g. "model.pt: state_dict"). Throws expctl::DataError otherwise, and for a floating tensor holding NaN or
/// Inf: "<what>: tensor '<name>' holds NaN (element i of n, k not finite): ...".
StateDict to_state_dict(const PickleValue& value, const std::string& what);

/// Reads a state-dict file as torchvision distributes it (torch.save of model.state_dict()). Also accepts a
/// dict holding the state dict under "state_dict" (expctl checkpoints, many training scripts).
StateDict read_state_dict_file(const std::filesystem::path& file);

}  // namespace expctl::io
