#include "runner/models/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/io/zip_check.h"
#include "runner/models/graph_net.h"
#include "runner/models/zoo.h"

namespace expctl::models {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "expctl.checkpoint";
constexpr int64_t kVersion = 1;

io::PickleValue to_pickle(const nlohmann::json& j, const std::string& path) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return io::PickleValue::none();
    case nlohmann::json::value_t::boolean:
      return io::PickleValue::from(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return io::PickleValue::from(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) throw Error(path + ": integer too large");
      return io::PickleValue::from(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return io::PickleValue::from(j.get<double>());
    case nlohmann::json::value_t::string:
      return io::PickleValue::from(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      auto l = io::PickleValue::list();
      for (size_t i = 0; i < j.size(); ++i) l.items.push_back(to_pickle(j[i], path + "[" + std::to_string(i) + "]"));
      return l;
    }
    case nlohmann::json::value_t::object: {
      auto d = io::PickleValue::dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.set(it.key(), to_pickle(it.value(), path + "." + it.key()));
      return d;
    }
    default:
      throw Error(path + ": unsupported JSON value (binary)");
  }
}

nlohmann::json to_json(const io::PickleValue& v, const std::string& path) {
  switch (v.kind) {
    case io::PickleValue::Kind::None:
      return nullptr;
    case io::PickleValue::Kind::Bool:
      return v.boolean;
    case io::PickleValue::Kind::Int:
      return v.integer;
    case io::PickleValue::Kind::Float:
      return v.real;
    case io::PickleValue::Kind::String:
      return v.text;
    case io::PickleValue::Kind::List:
    case io::PickleValue::Kind::Tuple: {
      auto a = nlohmann::json::array();
      for (size_t i = 0; i < v.items.size(); ++i)
        a.push_back(to_json(v.items[i], path + "[" + std::to_string(i) + "]"));
      return a;
    }
    case io::PickleValue::Kind::Dict: {
      auto o = nlohmann::json::object();
      for (const auto& [k, x] : v.entries) {
        if (k.kind != io::PickleValue::Kind::String) throw DataError(path + ": non-string key");
        o[k.text] = to_json(x, path + "." + k.text);
      }
      return o;
    }
    default:
      throw DataError(path + ": holds a " + v.kind_name() + ", expected strings, numbers, lists or dicts");
  }
}

io::PickleValue state_dict_value(const StateDict& sd) {
  auto d = io::PickleValue::dict();
  // Keys are unique in a StateDict, so append directly instead of set()'s linear search.
  for (const auto& item : sd)
    d.entries.emplace_back(io::PickleValue::from(item.key()), io::PickleValue::from(item.value()));
  return d;
}

int64_t arch_int(const io::PickleValue& arch, const std::string& key, const std::string& file) {
  const io::PickleValue* v = arch.find(key);
  if (!v) throw DataError(file + ": arch." + key + " is missing");
  if (v->kind != io::PickleValue::Kind::Int)
    throw DataError(file + ": arch." + key + " is a " + v->kind_name() + ", expected an int");
  return v->integer;
}

std::vector<int64_t> arch_ints(const io::PickleValue& arch, const std::string& key, const std::string& file) {
  const io::PickleValue* v = arch.find(key);
  if (!v) throw DataError(file + ": arch." + key + " is missing");
  if (v->kind != io::PickleValue::Kind::List && v->kind != io::PickleValue::Kind::Tuple)
    throw DataError(file + ": arch." + key + " is a " + v->kind_name() + ", expected a list of ints");
  std::vector<int64_t> out;
  for (const auto& x : v->items) {
    if (x.kind != io::PickleValue::Kind::Int) throw DataError(file + ": arch." + key + " holds a " + x.kind_name());
    out.push_back(x.integer);
  }
  return out;
}

void check_masks(const StateDict& masks, const StateDict& params, const std::string& where) {
  for (const auto& m : masks) {
    const torch::Tensor* p = params.find(m.key());
    if (!p) throw Error(where + ": mask '" + m.key() + "' names no tensor of the model");
    if (!m.value().defined() || m.value().sizes() != p->sizes()) {
      std::ostringstream os;
      os << where << ": mask '" << m.key() << "' has shape "
         << (m.value().defined() ? m.value().sizes() : c10::IntArrayRef{}) << ", the tensor has " << p->sizes();
      throw Error(os.str());
    }
    if (m.value().scalar_type() != torch::kBool && m.value().scalar_type() != torch::kByte)
      throw Error(where + ": mask '" + m.key() + "' must be a bool or uint8 tensor");
  }
}

}  // namespace

void save_checkpoint(const fs::path& file, const Network& model, const nlohmann::json& meta, const StateDict& masks) {
  const std::string where = file.string();
  const bool existed = fs::exists(file);
  const std::string intact = existed ? "; the previous checkpoint is intact" : "";
  std::vector<char> bytes;
  try {
    if (!meta.is_object()) throw Error("meta must be a JSON object");
    const StateDict sd = state_dict(*model);
    check_masks(masks, sd, where);
    if (!dynamic_cast<const GraphNetImpl*>(model.get()))
      throw Error("a " + model->arch_name() + " cannot be saved (not a graph network)");
    auto arch = io::PickleValue::dict();
    arch.set("family", io::PickleValue::from("graph"));
    arch.set("name", io::PickleValue::from(model->arch_name()));
    arch.set("graph", to_pickle(model->graph().to_json(), "arch.graph"));

    StateDict bool_masks;
    for (const auto& m : masks) bool_masks.insert(m.key(), m.value().to(torch::kBool));

    auto root = io::PickleValue::dict();
    root.set("format", io::PickleValue::from(kFormat));
    root.set("version", io::PickleValue::from(kVersion));
    root.set("arch", std::move(arch));
    // Module::to(dtype) in LibTorch also casts integer buffers; torchvision keeps num_batches_tracked int64.
    StateDict saved;
    for (const auto& item : sd) {
      const bool counter =
          item.key().size() >= 19 && item.key().compare(item.key().size() - 19, 19, "num_batches_tracked") == 0;
      saved.insert(item.key(), counter ? item.value().to(torch::kLong) : item.value());
    }
    root.set("state_dict", state_dict_value(saved));
    root.set("masks", state_dict_value(bool_masks));
    root.set("meta", to_pickle(meta, "meta"));
    bytes = io::serialize_torch_file(root);
  } catch (const c10::Error& e) {
    throw Error(where + ": could not write checkpoint: " + e.what_without_backtrace() + intact);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    throw Error((msg.rfind(where, 0) == 0 ? msg : where + ": could not write checkpoint: " + msg) + intact);
  }
  write_file_atomic(file, bytes, "checkpoint");
}

Checkpoint read_checkpoint(const fs::path& path) {
  const std::string file = path.string();
  const io::PickleValue root = io::read_torch_file(path);
  if (root.kind != io::PickleValue::Kind::Dict)
    throw DataError(file + ": not an expctl checkpoint (top level is a " + root.kind_name() + ", not a dict)");
  const io::PickleValue* format = root.find("format");
  const io::PickleValue* arch = root.find("arch");
  const io::PickleValue* sd = root.find("state_dict");
  if (!arch || !sd) {
    const bool looks_like_sd = !root.entries.empty() && root.entries[0].second.kind == io::PickleValue::Kind::Tensor;
    throw DataError(file + ": not an expctl checkpoint (no 'arch' and 'state_dict' entries)" +
                    (looks_like_sd ? std::string("; it looks like a plain state dict (pretrained weights?)") : ""));
  }
  if (format && (format->kind != io::PickleValue::Kind::String || format->text != kFormat))
    throw DataError(file + ": unknown checkpoint format");
  if (const io::PickleValue* v = root.find("version");
      v && (v->kind != io::PickleValue::Kind::Int || v->integer > kVersion))
    throw DataError(file + ": checkpoint version is newer than this expctl understands (" + std::to_string(v->integer) +
                    " > " + std::to_string(kVersion) + ")");
  if (arch->kind != io::PickleValue::Kind::Dict)
    throw DataError(file + ": arch is a " + arch->kind_name() + ", not a dict");

  Checkpoint ckpt;
  const io::PickleValue* family = arch->find("family");
  if (family && family->kind != io::PickleValue::Kind::String)
    throw DataError(file + ": arch.family is a " + family->kind_name() + ", not a string");
  ckpt.family = family ? family->text : "resnet";
  if (ckpt.family == "graph") {
    const io::PickleValue* name = arch->find("name");
    const io::PickleValue* graph = arch->find("graph");
    if (!name || name->kind != io::PickleValue::Kind::String)
      throw DataError(file + ": arch.name is missing or not a string");
    if (!graph) throw DataError(file + ": arch.graph is missing");
    ckpt.name = name->text;
    ckpt.graph = Graph::from_json(to_json(*graph, file + ": arch.graph"), file + ": arch.graph");
  } else if (ckpt.family == "resnet") {
    // Written by an earlier version: the BasicBlock ResNet's widths, converted to its graph.
    ResNetSpec spec;
    spec.depth = static_cast<int>(arch_int(*arch, "depth", file));
    spec.num_classes = arch_int(*arch, "num_classes", file);
    spec.in_channels = arch_int(*arch, "in_channels", file);
    const io::PickleValue* stem = arch->find("stem");
    if (!stem || stem->kind != io::PickleValue::Kind::String)
      throw DataError(file + ": arch.stem is missing or not a string");
    spec.stage_widths = arch_ints(*arch, "stage_widths", file);
    spec.block_widths = arch_ints(*arch, "block_widths", file);
    try {
      spec.stem = parse_stem(stem->text);
      ckpt.graph = zoo::resnet_basic(spec);
    } catch (const Error& e) {
      throw DataError(file + ": arch: " + e.what());
    }
    ckpt.name = spec.name();
  } else {
    throw DataError(file + ": arch.family '" + ckpt.family + "' is unknown (resnet, graph)");
  }
  ckpt.state_dict = io::to_state_dict(*sd, file + ": state_dict");
  if (const io::PickleValue* masks = root.find("masks")) ckpt.masks = io::to_state_dict(*masks, file + ": masks");
  if (const io::PickleValue* meta = root.find("meta")) {
    ckpt.meta = to_json(*meta, file + ": meta");
    if (!ckpt.meta.is_object()) throw DataError(file + ": meta is not a dict");
  }
  try {
    check_masks(ckpt.masks, ckpt.state_dict, file);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    throw DataError(e.what());
  }
  return ckpt;
}

Network build_model(const Checkpoint& ckpt, const std::string& source) {
  Network model{nullptr};
  try {
    model = GraphNet(ckpt.graph, ckpt.name);
  } catch (const Error& e) {
    throw DataError(source + ": arch: " + e.what());
  }
  load_state_dict(*model, ckpt.state_dict, source);
  return model;
}

Network load_checkpoint(const fs::path& file, Checkpoint* contents) {
  Checkpoint ckpt = read_checkpoint(file);
  Network model = build_model(ckpt, file.string());
  if (contents) *contents = std::move(ckpt);
  return model;
}

// ---- training state ----------------------------------------------------------------------------

fs::path training_state_path(const fs::path& checkpoint) {
  fs::path p = checkpoint;
  const std::string stem =
      checkpoint.extension() == ".pt" ? checkpoint.stem().string() : checkpoint.filename().string();
  return p.replace_filename(stem + ".train.pt");
}

void save_training_state(const fs::path& checkpoint, torch::optim::Optimizer& optimizer, int64_t epoch,
                         const nlohmann::json& extra) {
  const fs::path file = training_state_path(checkpoint);
  std::ostringstream stream;
  try {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.write("expctl_epoch", torch::tensor(epoch, torch::kLong));
    const std::string extra_text = extra.dump();
    archive.write("expctl_extra", torch::IValue(extra_text));
    {
      at::Generator gen = at::globalContext().defaultGenerator(at::kCPU);
      std::lock_guard<std::mutex> lock(gen.mutex());
      archive.write("expctl_rng_cpu", gen.get_state());
    }
    const int64_t cuda = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    archive.write("expctl_rng_cuda_count", torch::tensor(cuda, torch::kLong));
    for (int64_t i = 0; i < cuda; ++i) {
      at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      archive.write("expctl_rng_cuda" + std::to_string(i), gen.get_state());
    }
    archive.save_to(stream);
  } catch (const c10::Error& e) {
    throw Error(file.string() + ": could not write training state: " + e.what_without_backtrace());
  }
  const std::string s = stream.str();
  write_file_atomic(file, s, "training state");
}

namespace {

torch::serialize::InputArchive open_training_state(const fs::path& file, torch::Device device) {
  // As io::read_torch_file(): a regular file only, read once, its zip records checked before LibTorch trusts them.
  RegularFile in(file);
  const std::string bytes = in.read_all();
  if (bytes.size() < 4 || bytes.compare(0, 4, "PK\x03\x04") != 0)
    throw DataError(file.string() + ": not a readable training-state archive (not a zip archive)");
  io::check_zip(bytes, file.string());
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size(), device);
  } catch (const c10::Error& e) {
    throw DataError(file.string() +
                    ": not a readable training-state archive (truncated or corrupt?): " + e.what_without_backtrace());
  }
  return archive;
}

// Our own entries, read before the optimizer's: a foreign archive then fails before the optimizer is touched.
TrainingState read_epoch_and_extra(const fs::path& file, torch::serialize::InputArchive& archive) {
  TrainingState state;
  try {
    torch::Tensor epoch;
    archive.read("expctl_epoch", epoch);
    c10::IValue extra;
    archive.read("expctl_extra", extra);
    state.epoch = epoch.item<int64_t>();
    state.extra = nlohmann::json::parse(extra.toStringRef());
  } catch (const c10::Error& e) {
    throw DataError(file.string() + ": not an expctl training state: " + e.what_without_backtrace());
  } catch (const nlohmann::json::exception& e) {
    throw DataError(file.string() + ": corrupt extra entry: " + e.what());
  }
  return state;
}

}  // namespace

TrainingState peek_training_state(const fs::path& checkpoint) {
  const fs::path file = training_state_path(checkpoint);
  torch::serialize::InputArchive archive = open_training_state(file, torch::kCPU);
  return read_epoch_and_extra(file, archive);
}

TrainingState load_training_state(const fs::path& checkpoint, torch::optim::Optimizer& optimizer) {
  const fs::path file = training_state_path(checkpoint);
  // Onto the device of the parameters being resumed, not the one the state was saved from: momentum must sit
  // beside its parameter (a CPU run resumed on a GPU, another rank's GPU), and a GPU's state loads on a CPU host.
  torch::Device device = torch::kCPU;
  for (const auto& group : optimizer.param_groups())
    if (!group.params().empty()) {
      device = group.params().front().device();
      break;
    }
  torch::serialize::InputArchive archive = open_training_state(file, device);
  TrainingState state = read_epoch_and_extra(file, archive);
  try {
    torch::Tensor rng, cuda_count;
    archive.read("expctl_rng_cpu", rng);
    archive.read("expctl_rng_cuda_count", cuda_count);
    optimizer.load(archive);
    {
      at::Generator gen = at::globalContext().defaultGenerator(at::kCPU);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng.cpu());
    }
    const int64_t saved_cuda = cuda_count.item<int64_t>();
    const int64_t cuda = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    for (int64_t i = 0; i < std::min(saved_cuda, cuda); ++i) {
      torch::Tensor s;
      archive.read("expctl_rng_cuda" + std::to_string(i), s);
      at::Generator gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(s.cpu());
    }
  } catch (const c10::Error& e) {
    throw DataError(file.string() + ": training state does not fit (wrong file or different model/optimizer?): " +
                    e.what_without_backtrace());
  }
  return state;
}

}  // namespace expctl::models
