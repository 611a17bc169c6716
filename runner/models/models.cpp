// Built-in models: torchvision's ResNet-18 and ResNet-34 with their ImageNet weights.
#include "runner/models/models.h"

#include <torch/torch.h>

#include "runner/core/error.h"
#include "runner/core/naming.h"
#include "runner/data/datasets.h"
#include "runner/io/checksum.h"
#include "runner/models/torch_file.h"

namespace expctl::models {
namespace fs = std::filesystem;

namespace {

ModelEntry resnet(int depth, const std::string& weights_url) {
  ModelEntry e;
  e.info.name = "ResNet" + std::to_string(depth);
  e.info.summary = "torchvision's ResNet-" + std::to_string(depth) + " (same parameter names), ImageNet-pretrained";
  ParamTable& t = e.info.params;
  t.add_bool("pretrained", true, "start from torchvision's ImageNet weights (else random initialisation)");
  t.add_url("weights_url", weights_url, "where the pretrained weights come from (a mirror or file:// works)");
  t.add_string("weights_sha256", "", "expected SHA-256 prefix of the weights ('' = taken from the file name)");
  t.add_enum("stem", "imagenet", {"imagenet", "cifar"},
             "imagenet: 7x7/2 conv + max-pool; cifar: 3x3/1 conv, no max-pool (for 32x32 inputs)");
  e.files = [](const Params& p, const fs::path& dir) {
    std::vector<io::RemoteFile> out;
    if (!p.get_bool("pretrained")) return out;
    const std::string& url = p.get_string("weights_url");
    std::string name = io::url_basename(url);
    std::string sha = p.get_string("weights_sha256");
    if (sha.empty()) sha = io::sha256_prefix_from_name(name);
    out.push_back({url, dir / name, sha, "", "", "pretrained weights", "model.weights_url"});
    return out;
  };
  e.spec = [depth](const Params& p, int64_t num_classes, int64_t in_channels) {
    ResNetSpec s;
    s.depth = depth;
    s.num_classes = num_classes;
    s.stem = parse_stem(p.get_string("stem"));
    s.in_channels = in_channels;
    return s;
  };
  return e;
}

}  // namespace

ResNet build_model(const ScenarioConfig& cfg) {
  const ModelEntry& e = *ModelRegistry::find(cfg.model_name());
  const data::DatasetInfo d = data::dataset_info(cfg);
  ResNetSpec spec = e.spec(cfg.model, d.num_classes, d.channels);
  torch::manual_seed(static_cast<uint64_t>(cfg.runtime.get_int("seed")));
  auto files = e.files(cfg.model, Naming(cfg).models_dir());
  if (files.empty()) return make_resnet(spec);
  const fs::path& weights = files.front().destination;
  if (!fs::is_regular_file(weights))
    throw DataError(weights.string() +
                    ": pretrained weights not found; the download stage fetches them (expctl run SCENARIO.yaml "
                    "--only download)");
  return make_pretrained_resnet(spec, read_state_dict_file(weights), weights.string());
}

EXPCTL_REGISTER(ModelRegistry, resnet(18, "https://download.pytorch.org/models/resnet18-f37072fd.pth"));
EXPCTL_REGISTER(ModelRegistry, resnet(34, "https://download.pytorch.org/models/resnet34-b627a593.pth"));

}  // namespace expctl::models
