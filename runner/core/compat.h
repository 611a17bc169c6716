// Every LibTorch version difference expctl depends on lives here, behind EXPCTL_TORCH_AT_LEAST.
// Built and tested with Debian's LibTorch 1.13.1; written for 2.x as well (see README, "Other LibTorch builds").
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#define EXPCTL_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace expctl::compat {

/// Turns CUDA autocast on or off with the given low-precision type (bf16 needs no grad scaler).
/// LibTorch 2.4 replaced the CUDA-only set_enabled/set_autocast_gpu_dtype by per-device functions.
inline void set_cuda_autocast(bool enabled, at::ScalarType dtype) {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

/// Whether CUDA autocast is on.
inline bool cuda_autocast_enabled() {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

/// A string such as "1.13.1" for reports.
inline const char* torch_version() { return TORCH_VERSION; }

}  // namespace expctl::compat
