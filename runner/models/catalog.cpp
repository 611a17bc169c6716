// Configuration metadata of the built-in models (the keys beside `model.name`).
#include "runner/core/registry.h"

namespace expctl {
namespace {

PluginInfo resnet_info(int depth, const std::string& weights_url) {
  PluginInfo p;
  p.kind = "model";
  p.name = "ResNet" + std::to_string(depth);
  p.summary = "torchvision's ResNet-" + std::to_string(depth) + " (same parameter names), ImageNet-pretrained";
  ParamTable& t = p.params;
  t.add_bool("pretrained", true, "start from torchvision's ImageNet weights (else random initialisation)");
  t.add_url("weights_url", weights_url, "where the pretrained weights come from (a mirror or file:// works)");
  t.add_string("weights_sha256", "", "expected SHA-256 prefix of the weights ('' = taken from the file name)");
  t.add_enum("stem", "imagenet", {"imagenet", "cifar"},
             "imagenet: 7x7/2 conv + max-pool; cifar: 3x3/1 conv, no max-pool (for 32x32 inputs)");
  p.unavailable = "models land with issue #3";
  return p;
}

}  // namespace

EXPCTL_REGISTER_PLUGIN(resnet_info(18, "https://download.pytorch.org/models/resnet18-f37072fd.pth"));
EXPCTL_REGISTER_PLUGIN(resnet_info(34, "https://download.pytorch.org/models/resnet34-b627a593.pth"));

}  // namespace expctl
