#include "runner/core/compat.h"

#include <gtest/gtest.h>

#include <stdexcept>

using expctl::compat::CudaAutocast;
using expctl::compat::cuda_autocast_enabled;

// The autocast switches are thread-local state, so the scope rules can be checked without a GPU; that the
// weight cache is cleared is checked on CUDA in tests/stages/device_test.cpp.
TEST(Compat, AutocastScopeRestoresThePreviousStateAlsoWhenNestedOrThrown) {
  EXPECT_FALSE(cuda_autocast_enabled());
  {
    CudaAutocast outer(at::kBFloat16);
    EXPECT_TRUE(cuda_autocast_enabled());
    {
      CudaAutocast inner(at::kBFloat16);
      EXPECT_TRUE(cuda_autocast_enabled());
    }
    EXPECT_TRUE(cuda_autocast_enabled()) << "leaving the inner scope keeps the outer one on";
  }
  EXPECT_FALSE(cuda_autocast_enabled());
  try {
    CudaAutocast scope(at::kBFloat16);
    throw std::runtime_error("forward failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(cuda_autocast_enabled()) << "a throwing forward must not leave autocast on for evaluation";
  EXPECT_STRNE(expctl::compat::torch_version(), "");
}
