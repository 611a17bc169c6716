// Every LibTorch version difference expctl depends on lives here, behind EXPCTL_TORCH_AT_LEAST.
// Built and tested with Debian's LibTorch 1.13.1; written for 2.x as well (see docs/gpu-and-several-machines.md).
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#define EXPCTL_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace expctl::compat {

/// Turns autocast on or off for `device` (kCUDA or kCPU). LibTorch 2.4 replaced the per-backend functions
/// (set_enabled / set_cpu_enabled, set_autocast_gpu_dtype / set_autocast_cpu_dtype) by per-device ones. Use
/// Autocast for a scope rather than calling these directly.
inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CPU)
    at::autocast::set_cpu_enabled(enabled);
  else
    at::autocast::set_enabled(enabled);
#endif
}

/// The low-precision type autocast casts to on `device` (bf16 needs no grad scaler).
inline void set_autocast_dtype(c10::DeviceType device, at::ScalarType dtype) {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CPU)
    at::autocast::set_autocast_cpu_dtype(dtype);
  else
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

/// Whether autocast is on for `device`.
inline bool autocast_enabled(c10::DeviceType device) {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

/// The dtype autocast casts to on `device`.
inline at::ScalarType autocast_dtype(c10::DeviceType device) {
#if EXPCTL_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
#endif
}

/// Autocast on one device type for one scope, as Python's `with torch.autocast(device, dtype=...)`: on from
/// construction, back to the previous state and dtype at destruction (also when the scope throws). When the
/// outermost such scope ends, autocast's cache of low-precision weight copies is cleared, as Python does: autocast
/// reuses a weight's cached copy for as long as it is cached, so without clearing, every forward of a training
/// loop would run with the weights of its first step while the optimizer updated the fp32 ones.
class Autocast {
 public:
  Autocast(c10::DeviceType device, at::ScalarType dtype)
      : device_(device), was_enabled_(autocast_enabled(device)), previous_dtype_(autocast_dtype(device)) {
    at::autocast::increment_nesting();
    set_autocast_dtype(device, dtype);
    set_autocast_enabled(device, true);
  }
  ~Autocast() {
    set_autocast_enabled(device_, was_enabled_);
    set_autocast_dtype(device_, previous_dtype_);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  at::ScalarType previous_dtype_;
};

/// The alternative T of a LibTorch options variant (e.g. Conv2dOptions::padding()), or nullptr. LibTorch 2.1
/// replaced c10::variant (c10/util/variant.h) by std::variant; the header's presence tells which one this is.
template <typename T, typename Variant>
const T* variant_get_if(const Variant& v) {
#if __has_include(<c10/util/variant.h>)
  return c10::get_if<T>(&v);
#else
  return std::get_if<T>(&v);
#endif
}

namespace detail {
template <typename Options>
auto use_classic_tcp_store(Options& o, int) -> decltype(o.useLibUV = false, void()) {
  o.useLibUV = false;
}
template <typename Options>
void use_classic_tcp_store(Options&, long) {}
}  // namespace detail

/// Asks a c10d::TCPStoreOptions for the classic socket server. LibTorch 2.4 made the libuv server the default,
/// and a LibTorch built without libuv (Debian's 2.6) then fails to start any store ("use_libuv was requested but
/// PyTorch was build without libuv support"); older LibTorch has no such option and only the classic server,
/// which is plenty for a few hundred processes. Detected by the member's presence, not by version number.
template <typename Options>
void use_classic_tcp_store(Options& options) {
  detail::use_classic_tcp_store(options, 0);
}

/// A string such as "1.13.1" for reports.
inline const char* torch_version() { return TORCH_VERSION; }

/// Collects LibTorch's warnings (TORCH_WARN) on this thread while a Guard holds it, instead of printing each one:
/// LibTorch 1.13's oneDNN kernels warn on every forward of some optimized models (MobileNetV2, DenseNet: "An output
/// with one or more elements was resized ..."), hundreds of lines for one latency measurement. The distinct
/// messages, in order, are left for the caller to say once. LibTorch 2.0 moved the handler API
/// (c10::WarningUtils, process(const c10::Warning&)).
///
///     compat::WarningCollector warnings;
///     { compat::WarningCollector::Guard g(&warnings); run(); }
///     for (const auto& m : warnings.messages()) log.warn("LibTorch: {}", m);
class WarningCollector : public c10::WarningHandler {
 public:
#if EXPCTL_TORCH_AT_LEAST(2, 0)
  using Guard = c10::WarningUtils::WarningHandlerGuard;
  void process(const c10::Warning& warning) override { add(warning.msg()); }
#else
  using Guard = c10::Warning::WarningHandlerGuard;
  void process(const c10::SourceLocation&, const std::string& msg, const bool) override { add(msg); }
#endif
  const std::vector<std::string>& messages() const { return messages_; }

 private:
  void add(const std::string& msg) {
    if (std::find(messages_.begin(), messages_.end(), msg) == messages_.end()) messages_.push_back(msg);
  }
  std::vector<std::string> messages_;
};

}  // namespace expctl::compat
