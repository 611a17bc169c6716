// Stand-ins for files that cannot be downloaded here, in their real formats.
#pragma once
#include <torch/torch.h>

#include <filesystem>

#include "runner/io/checksum.h"
#include "runner/io/torch_file.h"
#include "runner/models/zoo.h"
#include "tests/core/test_util.h"

namespace expctl::test {

// A torchvision-format ResNet-18 state dict (1000 classes, ImageNet stem), named like torchvision's files.
inline std::filesystem::path write_fake_torchvision_weights(const std::filesystem::path& dir) {
  torch::manual_seed(7);
  models::GraphNet net = models::make_resnet(models::ResNetSpec{});
  auto d = expctl::io::PickleValue::dict();
  for (const auto& kv : models::state_dict(*net)) d.set(kv.key(), expctl::io::PickleValue::from(kv.value()));
  auto bytes = expctl::io::serialize_torch_file(d);
  std::filesystem::path tmp = dir / "weights.pth";
  write_file(tmp, std::string(bytes.begin(), bytes.end()));
  std::filesystem::path named = dir / ("resnet18-" + expctl::sha256_file(tmp).substr(0, 8) + ".pth");
  std::filesystem::rename(tmp, named);
  return named;
}

}  // namespace expctl::test
