#include "runner/core/compat.h"

#include <gtest/gtest.h>

TEST(Compat, AutocastSwitchRoundTrips) {
  expctl::compat::set_cuda_autocast(true, at::kBFloat16);
  EXPECT_TRUE(expctl::compat::cuda_autocast_enabled());
  expctl::compat::set_cuda_autocast(false, at::kBFloat16);
  EXPECT_FALSE(expctl::compat::cuda_autocast_enabled());
  EXPECT_STRNE(expctl::compat::torch_version(), "");
}
