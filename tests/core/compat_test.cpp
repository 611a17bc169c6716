#include "runner/core/compat.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>

using expctl::compat::Autocast;
using expctl::compat::autocast_dtype;
using expctl::compat::autocast_enabled;

// The autocast switches are thread-local state, so the scope rules can be checked without a GPU; that the
// weight cache is cleared on CUDA is checked in tests/stages/device_test.cpp, on the CPU below.
TEST(Compat, AutocastScopeRestoresThePreviousStateAlsoWhenNestedOrThrown) {
  for (c10::DeviceType device : {c10::DeviceType::CUDA, c10::DeviceType::CPU}) {
    SCOPED_TRACE(c10::DeviceTypeName(device));
    const at::ScalarType dtype_before = autocast_dtype(device);
    EXPECT_FALSE(autocast_enabled(device));
    {
      Autocast outer(device, at::kBFloat16);
      EXPECT_TRUE(autocast_enabled(device));
      EXPECT_EQ(autocast_dtype(device), at::kBFloat16);
      {
        Autocast inner(device, at::kBFloat16);
        EXPECT_TRUE(autocast_enabled(device));
      }
      EXPECT_TRUE(autocast_enabled(device)) << "leaving the inner scope keeps the outer one on";
    }
    EXPECT_FALSE(autocast_enabled(device));
    EXPECT_EQ(autocast_dtype(device), dtype_before);
    try {
      Autocast scope(device, at::kBFloat16);
      throw std::runtime_error("forward failed");
    } catch (const std::runtime_error&) {
    }
    EXPECT_FALSE(autocast_enabled(device)) << "a throwing forward must not leave autocast on for evaluation";
  }
  EXPECT_FALSE(autocast_enabled(c10::DeviceType::CUDA)) << "CPU autocast must not switch on CUDA's";
  EXPECT_STRNE(expctl::compat::torch_version(), "");
}

TEST(Compat, CpuAutocastRunsConvolutionsInBf16AndSeesEveryWeightUpdate) {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 4, 3).padding(1));
  const torch::Tensor x = torch::randn({2, 3, 8, 8});
  torch::Tensor first;
  {
    Autocast scope(c10::DeviceType::CPU, at::kBFloat16);
    first = conv(x);
    EXPECT_EQ(first.scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(conv(x).scalar_type(), at::kFloat) << "outside the scope the forward is fp32 again";
  EXPECT_TRUE(torch::allclose(first.to(at::kFloat), conv(x), 0.05, 0.05));
  {
    torch::NoGradGuard no_grad;
    conv->weight.mul_(2);
    conv->bias.mul_(2);
  }
  Autocast scope(c10::DeviceType::CPU, at::kBFloat16);
  // A stale cached bf16 copy of the weight would give the first output again.
  EXPECT_TRUE(torch::allclose(conv(x).to(at::kFloat), first.to(at::kFloat) * 2, 0.05, 0.1));
}
