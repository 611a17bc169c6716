// Built-in models: torchvision's ResNet-18/34/50, VGG-11/16 with batch norm, MobileNetV2 and DenseNet-121, with the
// ImageNet weights torchvision 0.14 names (IMAGENET1K_V1); and TorchScript, your own traced CNN
// (runner/models/torchscript_import.h).
#include "runner/models/models.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <cctype>
#include <cstdlib>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/naming.h"
#include "runner/core/options_binder.h"
#include "runner/data/registry.h"
#include "runner/io/checksum.h"
#include "runner/io/torch_file.h"
#include "runner/models/graph_net.h"
#include "runner/models/torchscript_import.h"
#include "runner/models/zoo.h"

namespace expctl::models {
namespace fs = std::filesystem;

namespace {

// The keys of every torchvision model: where its ImageNet weights come from and which stem it uses.
struct TorchvisionOptions {
  bool pretrained = true;
  std::string weights_url;
  std::string weights_sha256;
  Stem stem = Stem::ImageNet;
};

// `weights_url` and `small_input` are the model's own: the default URL and what its small-input stem changes.
OptionBinder<TorchvisionOptions> torchvision_binder(const std::string& weights_url, const std::string& small_input) {
  OptionBinder<TorchvisionOptions> b(TorchvisionOptions{true, weights_url, "", Stem::ImageNet});
  b.add(&TorchvisionOptions::pretrained, "pretrained",
        "start from torchvision's ImageNet weights (else random initialisation)");
  b.add_url(&TorchvisionOptions::weights_url, "weights_url",
            "where the pretrained weights come from (a mirror or file:// works)");
  b.add(&TorchvisionOptions::weights_sha256, "weights_sha256",
        "expected SHA-256 prefix of the weights ('' = taken from the file name)");
  b.add_enum(&TorchvisionOptions::stem, "stem", {{"imagenet", Stem::ImageNet}, {"cifar", Stem::Cifar}},
             "imagenet: torchvision's network; cifar: " + small_input);
  return b;
}

// A validated model block always holds every key: the reading binder needs no model's own defaults.
TorchvisionOptions torchvision_options(const Params& p) {
  static const OptionBinder<TorchvisionOptions> b = torchvision_binder("", "");
  return b.read(p, "model");
}

ModelEntry entry(const std::string& name, const std::string& summary, const std::string& weights_url,
                 const std::string& small_input) {
  ModelEntry e;
  e.info.name = name;
  e.info.summary = summary;
  e.info.params = torchvision_binder(weights_url, small_input).table();
  e.info.pretrained = [](const Params& p) { return torchvision_options(p).pretrained; };
  e.files = [](const Params& p, const fs::path& dir) {
    std::vector<io::RemoteFile> out;
    const TorchvisionOptions o = torchvision_options(p);
    if (!o.pretrained) return out;
    std::string file = io::url_basename(o.weights_url);
    std::string sha = o.weights_sha256;
    if (sha.empty()) sha = io::sha256_prefix_from_name(file);
    out.push_back({o.weights_url, dir / file, sha, "", "", "pretrained weights", "model.weights_url"});
    return out;
  };
  return e;
}

bool small(const Params& p) { return torchvision_options(p).stem == Stem::Cifar; }

ModelEntry resnet(int depth, const std::string& weights_url) {
  ModelEntry e = entry("ResNet" + std::to_string(depth),
                       "torchvision's ResNet-" + std::to_string(depth) + " (same parameter names), ImageNet-pretrained",
                       weights_url, "3x3/1 conv, no max-pool (for 32x32 inputs)");
  e.create = [depth](const Params& p, int64_t num_classes, int64_t in_channels) -> Network {
    if (depth == 50) return GraphNet(zoo::resnet50(num_classes, in_channels, small(p)), "resnet50");
    ResNetSpec s;
    s.depth = depth;
    s.num_classes = num_classes;
    s.stem = torchvision_options(p).stem;
    s.in_channels = in_channels;
    return make_resnet(s);
  };
  return e;
}

ModelEntry vgg(int depth, const std::string& weights_url) {
  const std::string arch = "vgg" + std::to_string(depth) + "_bn";
  ModelEntry e = entry("VGG" + std::to_string(depth) + "_BN",
                       "torchvision's VGG-" + std::to_string(depth) + " with batch norm, ImageNet-pretrained",
                       weights_url,
                       "no last max-pool, global average pool and one linear classifier 512 -> classes (28x28 and "
                       "32x32 inputs)");
  e.create = [depth, arch](const Params& p, int64_t num_classes, int64_t in_channels) -> Network {
    return GraphNet(zoo::vgg_bn(depth, num_classes, in_channels, small(p)), arch);
  };
  e.prepare_pretrained = [](const Params& p, const StateDict& pretrained, const Network& fresh) {
    if (!small(p)) return pretrained;
    // The small-input head is one new linear layer: ImageNet's three classifier layers have no place in it.
    StateDict out;
    for (const auto& item : pretrained)
      if (item.key().rfind("classifier.", 0) != 0) out.insert(item.key(), item.value());
    const StateDict own = state_dict(*fresh);
    for (const char* k : {"classifier.weight", "classifier.bias"}) out.insert(k, own[k].detach().clone());
    return out;
  };
  return e;
}

ModelEntry mobilenet_v2() {
  ModelEntry e = entry("MobileNetV2", "torchvision's MobileNetV2 (width 1.0), ImageNet-pretrained",
                       "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                       "stride 1 in the stem and in features.2 (for 28x28 and 32x32 inputs)");
  e.create = [](const Params& p, int64_t num_classes, int64_t in_channels) -> Network {
    return GraphNet(zoo::mobilenet_v2(num_classes, in_channels, small(p)), "mobilenet_v2");
  };
  return e;
}

ModelEntry densenet121() {
  ModelEntry e = entry("DenseNet121", "torchvision's DenseNet-121, ImageNet-pretrained",
                       "https://download.pytorch.org/models/densenet121-a639ec97.pth",
                       "3x3/1 conv0, no max-pool (for 28x28 and 32x32 inputs)");
  e.create = [](const Params& p, int64_t num_classes, int64_t in_channels) -> Network {
    return GraphNet(zoo::densenet121(num_classes, in_channels, small(p)), "densenet121");
  };
  e.prepare_pretrained = [](const Params&, const StateDict& pretrained, const Network&) {
    // The published file predates torchvision's module names: "denselayer1.norm.1.weight" is now
    // "denselayer1.norm1.weight" (torchvision's densenet._load_state_dict renames them the same way).
    StateDict out;
    for (const auto& item : pretrained) {
      std::string key = item.key();
      if (key.find(".denselayer") != std::string::npos)
        for (const char* part : {".norm.1.", ".norm.2.", ".conv.1.", ".conv.2."}) {
          const auto pos = key.find(part);
          if (pos != std::string::npos) key.erase(pos + 5, 1);  // ".norm.1." → ".norm1."
        }
      out.insert(key, item.value());
    }
    return out;
  };
  return e;
}

// model.input as {C, H, W}; "" and the shape when it is one, else the reason it is not.
std::string parse_input(const std::vector<std::string>& items, std::vector<int64_t>& shape) {
  shape.clear();
  for (const auto& s : items) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v <= 0 || v > 65536) return "expected 3 positive integers [channels, height, width]";
    shape.push_back(v);
  }
  if (shape.size() != 3) return "expected 3 positive integers [channels, height, width], got " + std::to_string(shape.size());
  return "";
}

struct TorchScriptOptions {
  std::string file;
  std::vector<std::string> input;  ///< [channels, height, width]
  int64_t num_classes = 0;         ///< 0: keep the file's classifier
};

const OptionBinder<TorchScriptOptions>& torchscript_binder() {
  static const OptionBinder<TorchScriptOptions> b = [] {
    OptionBinder<TorchScriptOptions> b;
    b.add_required(&TorchScriptOptions::file, "file", ParamType::Path,
                   "the TorchScript file (relative to the working directory)");
    b.add_required(&TorchScriptOptions::input, "input",
                   "one image's shape [channels, height, width] as the model reads it, e.g. [3, 32, 32]: the data "
                   "set's height and width, its channels or 3 for gray images; pooling and flatten sizes come from "
                   "it");
    b.add(&TorchScriptOptions::num_classes, "num_classes",
          "0: keep the file's classifier (its logits must number the data set's classes); N: replace the layer "
          "producing the logits by a fresh one with N outputs (N = the data set's classes)")
        .min(0);
    return b;
  }();
  return b;
}

// A TorchScript model is named after its file ("my_net" for models/my_net.pt), so that two such models in one test
// scenario keep their checkpoints and report folders apart.
std::string torchscript_label(const Params& p) {
  std::string stem = fs::path(torchscript_binder().read(p, "model").file).stem().string();
  for (char& c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '-';
  return stem;
}

ModelEntry torchscript() {
  ModelEntry e;
  e.info.name = "TorchScript";
  e.info.summary =
      "your own CNN: a file saved by torch.jit.trace(model.eval(), example).save(path), converted to expctl's model "
      "graph (docs/your-own-model.md)";
  e.info.params = torchscript_binder().table();
  e.info.label = torchscript_label;
  e.files = [](const Params&, const fs::path&) { return std::vector<io::RemoteFile>{}; };
  e.create = [](const Params& p, int64_t num_classes, int64_t in_channels) -> Network {
    const TorchScriptOptions o = torchscript_binder().read(p, "model");
    std::vector<int64_t> input;
    if (std::string why = parse_input(o.input, input); !why.empty()) throw ConfigError("model.input: " + why);
    const ImportedModel m = import_torchscript(o.file, input);
    spdlog::info("model {}: converted in {:.2f} s ({} nodes); logits match the TorchScript module's within {:.1e}",
                 o.file, m.seconds, m.network->graph().nodes().size(), m.max_difference);
    const int64_t replace = o.num_classes;
    if (replace > 0 && replace != num_classes)
      throw ConfigError("model.num_classes: must be " + std::to_string(num_classes) +
                        ", the data set's classes (or 0 to keep the file's classifier); got " + std::to_string(replace));
    if (replace == 0 && m.num_classes != num_classes)
      throw DataError(o.file + ": the model gives " + std::to_string(m.num_classes) + " logits, the data set has " +
                      std::to_string(num_classes) + " classes; set model.num_classes: " + std::to_string(num_classes) +
                      " to replace its classifier");
    return adapt_imported(m, in_channels, replace, o.file);
  };
  return e;
}

// model.input and model.num_classes against the data set, when the scenario is loaded.
void check_torchscript(const ScenarioConfig& cfg, std::vector<Diagnostic>& diags) {
  if (cfg.model_name() != "TorchScript") return;
  const auto& b = torchscript_binder();
  const TorchScriptOptions o = b.read(cfg.model, "model");
  const Mark& file = b.value(cfg.model, &TorchScriptOptions::file).mark;
  const std::string file_key = "model." + b.key(&TorchScriptOptions::file);
  if (struct stat st{}; ::stat(o.file.c_str(), &st) != 0)
    diags.push_back({file, file_key, "file not found: " + o.file});
  else if (!S_ISREG(st.st_mode))  // a folder or a FIFO is named for what it is, never opened here
    diags.push_back({file, file_key, o.file + " is " + file_kind(st.st_mode) + ", not a regular file"});
  const Mark& input = b.value(cfg.model, &TorchScriptOptions::input).mark;
  const std::string input_key = "model." + b.key(&TorchScriptOptions::input);
  std::vector<int64_t> shape;
  if (std::string why = parse_input(o.input, shape); !why.empty()) {
    diags.push_back({input, input_key, why});
    return;
  }
  // An image folder the download stage has yet to fetch has no class list: build_model() checks the fit then.
  data::DatasetInfo d;
  try {
    d = data::dataset_info(cfg);
  } catch (const Error&) {
    return;
  }
  if (shape[0] != d.channels && !(shape[0] == 3 && d.channels == 1)) {
    diags.push_back({input, input_key,
                     "the model reads " + std::to_string(shape[0]) + "-channel images, " + d.name + " has " +
                         std::to_string(d.channels) + " (a 3-channel model adapts to 1-channel images, nothing else)"});
  } else if (d.height > 0 && (shape[1] != d.height || shape[2] != d.width)) {
    // Pooling and flatten sizes are computed for model.input: the images must be that size.
    diags.push_back({input, input_key,
                     "is " + std::to_string(shape[1]) + "x" + std::to_string(shape[2]) + ", but " + d.name +
                         " images are " + std::to_string(d.height) + "x" + std::to_string(d.width) +
                         "; give the size the model sees (trace it for that size)"});
  }
  const int64_t n = o.num_classes;
  if (n != 0 && n != d.num_classes)
    diags.push_back({b.value(cfg.model, &TorchScriptOptions::num_classes).mark,
                     "model." + b.key(&TorchScriptOptions::num_classes),
                     "must be " + std::to_string(d.num_classes) + ", the classes of " + d.name +
                         " (or 0 to keep the "
                         "file's classifier); got " +
                         std::to_string(n)});
}

}  // namespace

Network make_model(const ModelEntry& e, const Params& params, int64_t num_classes, int64_t in_channels,
                   const StateDict* pretrained, const std::string& source) {
  Network net = e.create(params, num_classes, in_channels);
  if (!pretrained) return net;
  const StateDict prepared = e.prepare_pretrained ? e.prepare_pretrained(params, *pretrained, net) : *pretrained;
  load_state_dict(*net, adapt_pretrained(prepared, net), source);
  return net;
}

fs::path model_file(const ScenarioConfig& cfg) {
  if (cfg.model_name() != "TorchScript") return {};
  return torchscript_binder().read(cfg.model, "model").file;
}

Network build_model(const ScenarioConfig& cfg) {
  const ModelEntry& e = *ModelRegistry::find(cfg.model_name());
  const data::DatasetInfo d = data::dataset_info(cfg);
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  auto files = e.files(cfg.model, Naming(cfg).models_dir());
  if (files.empty()) return make_model(e, cfg.model, d.num_classes, d.channels, nullptr);
  const fs::path& weights = files.front().destination;
  if (std::error_code ec; !fs::exists(weights, ec))
    throw DataError(weights.string() +
                    ": pretrained weights not found; the download stage fetches them (expctl run SCENARIO.yaml "
                    "--only download)");
  const StateDict pretrained = io::read_state_dict_file(weights);
  return make_model(e, cfg.model, d.num_classes, d.channels, &pretrained, weights.string());
}

EXPCTL_REGISTER(ModelRegistry, resnet(18, "https://download.pytorch.org/models/resnet18-f37072fd.pth"));
EXPCTL_REGISTER(ModelRegistry, resnet(34, "https://download.pytorch.org/models/resnet34-b627a593.pth"));
EXPCTL_REGISTER(ModelRegistry, resnet(50, "https://download.pytorch.org/models/resnet50-0676ba61.pth"));
EXPCTL_REGISTER(ModelRegistry, vgg(11, "https://download.pytorch.org/models/vgg11_bn-6002323d.pth"));
EXPCTL_REGISTER(ModelRegistry, vgg(16, "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"));
EXPCTL_REGISTER(ModelRegistry, mobilenet_v2());
EXPCTL_REGISTER(ModelRegistry, densenet121());
EXPCTL_REGISTER(ModelRegistry, torchscript());
static const bool kTorchScriptChecked = add_scenario_check(check_torchscript);

}  // namespace expctl::models
