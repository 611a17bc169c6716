// Thread settings, peak memory and the machine description (see environment.h).
#include "runner/metrics/environment.h"

#ifdef EXPCTL_WITH_CUDA_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <ATen/Parallel.h>
#include <dlfcn.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <torch/version.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "runner/core/error.h"

namespace expctl::metrics {
namespace {

// OpenBLAS's C API, looked up at run time: LibTorch links whatever libblas.so.3 is selected, so OpenBLAS may or
// may not be in the process, and expctl must not link it itself.
using SetThreadsFn = void (*)(int);
using GetConfigFn = char* (*)();
using GetParallelFn = int (*)();  // 0 = single-threaded build, 1 = pthreads, 2 = OpenMP

template <typename Fn>
Fn lookup(const char* symbol) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, symbol));
}

// The first "key : value" line of a /proc file whose key is `key`, or "".
std::string proc_value(const char* file, const std::string& key) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
    if (k != key) continue;
    std::string v = line.substr(colon + 1);
    const auto first = v.find_first_not_of(" \t");
    return first == std::string::npos ? "" : v.substr(first);
  }
  return "";
}

// The GPU's name through the CUDA driver API, only when the driver is already loaded (LibTorch used CUDA):
// no CUDA headers or libraries are needed at build time, and the CPU build never loads the driver.
std::string cuda_device_name(const torch::Device& device) {
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
  if (!driver) return "";
  using GetDeviceFn = int (*)(int*, int);      // cuDeviceGet(CUdevice*, int ordinal)
  using GetNameFn = int (*)(char*, int, int);  // cuDeviceGetName(char*, int len, CUdevice)
  auto get_device = reinterpret_cast<GetDeviceFn>(dlsym(driver, "cuDeviceGet"));
  auto get_name = reinterpret_cast<GetNameFn>(dlsym(driver, "cuDeviceGetName"));
  std::string result;
  int handle = 0;
  char name[256] = {};
  if (get_device && get_name && get_device(&handle, device.has_index() ? device.index() : 0) == 0 &&
      get_name(name, sizeof(name) - 1, handle) == 0)
    result = name;
  dlclose(driver);  // balances the NOLOAD reference; the driver stays loaded for LibTorch
  return result;
}

}  // namespace

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int configure_threads(int64_t requested) {
  if (requested < 0)
    throw Error("configure_threads: the thread count must be 0 (all usable cores) or positive, got " +
                std::to_string(requested));
  const int n = requested == 0 ? usable_cores() : static_cast<int>(requested);
  at::set_num_threads(n);

  // LibTorch refuses a second set_num_interop_threads, and any once its pool has started: try once per process
  // and keep whatever is in place when it refuses (the inter-op pool only serves torch.jit.fork-style work).
  static std::once_flag interop_once;
  std::call_once(interop_once, [n] {
    try {
      at::set_num_interop_threads(n);
    } catch (const c10::Error&) {
    }
  });

  // OpenBLAS's pthread build keeps its own pool next to LibTorch's OpenMP pool; at batch 1 both spin on the same
  // cores. One BLAS thread lets LibTorch's threads own them. The OpenMP build shares LibTorch's pool already.
  auto set_blas_threads = lookup<SetThreadsFn>("openblas_set_num_threads");
  auto get_parallel = lookup<GetParallelFn>("openblas_get_parallel");
  if (set_blas_threads && !(get_parallel && get_parallel() == 2)) set_blas_threads(1);
  return n;
}

std::string blas_info() {
  auto get_config = lookup<GetConfigFn>("openblas_get_config");
  if (!get_config) return "unknown";
  // openblas_get_config() already starts with "OpenBLAS <version>".
  std::string info = get_config();
  if (auto get_parallel = lookup<GetParallelFn>("openblas_get_parallel")) {
    const int p = get_parallel();
    info += p == 2 ? " (OpenMP" : p == 1 ? " (pthread" : " (single-threaded";
    if (auto get_threads = lookup<GetParallelFn>("openblas_get_num_threads"))
      info += ", " + std::to_string(get_threads()) + " thread(s)";
    info += ")";
  }
  return info;
}

HostMemory decide_host_memory(const std::function<const char*(const char*)>& get) {
  HostMemory m;
  const char* asked = get("EXPCTL_MALLOC");
  const std::string setting = asked ? asked : "keep";
  if (setting != "keep" && setting != "default" && setting != "system")
    throw Error("EXPCTL_MALLOC=" + setting + ": unknown value; use keep (the default: freed memory stays mapped) or " +
                "default (glibc's own behaviour)");
#ifndef __GLIBC__
  m.setting = "default";
  m.what = "the C library's own allocator (not glibc: EXPCTL_MALLOC does not apply)";
  return m;
#endif
  if (setting != "keep") {
    m.setting = "default";
    m.what = "glibc malloc with its defaults (EXPCTL_MALLOC=" + setting +
             "): large blocks are mapped and unmapped at every step";
    return m;
  }
  std::string own;
  for (const char* name : {"MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (get(name)) own += (own.empty() ? "" : ", ") + std::string(name);
  if (const char* t = get("GLIBC_TUNABLES"); t && std::string(t).find("glibc.malloc.") != std::string::npos)
    own += (own.empty() ? "" : ", ") + std::string("GLIBC_TUNABLES");
  if (!own.empty()) {
    m.setting = "environment";
    m.what = "glibc malloc as the environment sets it (" + own + "); expctl leaves it alone";
    return m;
  }
  m.setting = "keep";
  m.kept = true;
  m.what = "glibc malloc keeping freed memory mapped (no mmap, no trimming; EXPCTL_MALLOC=default turns this off)";
  return m;
}

const HostMemory& configure_host_memory() {
  static const HostMemory applied = [] {
    HostMemory m = decide_host_memory([](const char* name) { return std::getenv(name); });
#ifdef __GLIBC__
    // Blocks of every size then come from the heap, and freed ones are reused there instead of being unmapped;
    // the heap's top is never handed back. Both calls only fail for out-of-range values.
    if (m.kept && (mallopt(M_MMAP_MAX, 0) != 1 || mallopt(M_TRIM_THRESHOLD, INT_MAX) != 1)) {
      m.kept = false;
      m.setting = "default";
      m.what = "glibc malloc with its defaults (mallopt refused the settings)";
    }
#endif
    return m;
  }();
  return applied;
}

ProcessUsage process_usage() {
  ProcessUsage u;
  struct rusage r {};
  if (getrusage(RUSAGE_SELF, &r) != 0) return u;
  u.user_seconds = double(r.ru_utime.tv_sec) + double(r.ru_utime.tv_usec) * 1e-6;
  u.system_seconds = double(r.ru_stime.tv_sec) + double(r.ru_stime.tv_usec) * 1e-6;
  u.minor_faults = r.ru_minflt;
  u.major_faults = r.ru_majflt;
  return u;
}

double peak_memory_mb() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0.0;
  return double(usage.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

CudaMemory cuda_peak_memory(const torch::Device& device) {
  CudaMemory m;
#ifdef EXPCTL_WITH_CUDA_STATS
  if (!device.is_cuda() || !torch::cuda::is_available()) return m;
  // Index 0 of each statistic array is the aggregate over small and large pools (StatType::AGGREGATE), in every
  // LibTorch version since 1.x; the statistics type itself moved namespaces in 2.x, hence `auto`.
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(
      device.has_index() ? device.index() : c10::cuda::current_device());
  m.known = true;
  m.peak_allocated_mb = double(stats.allocated_bytes[0].peak) / double(1 << 20);
  m.peak_reserved_mb = double(stats.reserved_bytes[0].peak) / double(1 << 20);
#endif
  return m;
}

Bf16Support cpu_bf16_support() {
  Bf16Support out;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) {
    out.what = "no OSXSAVE: the OS does not enable the AVX-512/AMX state";
    return out;
  }
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const uint64_t xcr0 = (uint64_t(xcr0_hi) << 32) | xcr0_lo;
  const bool avx512_state = (xcr0 & 0xE6) == 0xE6;         // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
  const bool amx_state = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  bool avx512_bf16 = false, amx_bf16 = false;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned subleaves = eax;
    const bool avx512f = ebx & (1u << 16);
    amx_bf16 = (edx & (1u << 22)) && amx_state;
    if (subleaves >= 1) {
      __cpuid_count(7, 1, eax, ebx, ecx, edx);
      avx512_bf16 = (eax & (1u << 5)) && avx512f && avx512_state;
    }
  }
  if (avx512_bf16) out.what = "AVX512_BF16";
  if (amx_bf16) out.what += std::string(out.what.empty() ? "" : ", ") + "AMX-BF16";
  out.native = avx512_bf16 || amx_bf16;
  if (!out.native) out.what = "no AVX512_BF16 or AMX-BF16 (x86-64)";
#elif defined(__aarch64__) && defined(__linux__) && defined(HWCAP2_BF16)
  out.native = (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
  out.what = out.native ? "Arm BF16" : "no Arm BF16 extension";
#else
  out.what = "unknown processor: bf16 support not detected";
#endif
  return out;
}

nlohmann::json environment_info(torch::Device device, int threads) {
  nlohmann::json env;
  char host[256] = {};
  env["host"] = gethostname(host, sizeof(host) - 1) == 0 ? std::string(host) : std::string("unknown");
  struct utsname u {};
  env["os"] = uname(&u) == 0 ? std::string(u.sysname) + " " + u.release + " " + u.machine : std::string("unknown");
  std::string cpu = proc_value("/proc/cpuinfo", "model name");
  if (cpu.empty()) cpu = "unknown";
  env["cpu_model"] = cpu;
  const Bf16Support bf16 = cpu_bf16_support();
  env["cpu_bf16"] = bf16.what;
  env["cpu_bf16_native"] = bf16.native;
  env["logical_cores"] = static_cast<int>(std::thread::hardware_concurrency());
  env["usable_cores"] = usable_cores();
  int64_t memory_mb = 0;
  try {
    const std::string total = proc_value("/proc/meminfo", "MemTotal");  // "16384256 kB"
    if (!total.empty()) memory_mb = std::stoll(total) / 1024;
  } catch (const std::exception&) {
  }
  env["memory_mb"] = memory_mb;
  env["libtorch"] = TORCH_VERSION;
  env["blas"] = blas_info();
  env["device"] = device.str();
  std::string device_name = device.is_cuda() ? cuda_device_name(device) : cpu;
  env["device_name"] = device_name.empty() ? std::string("unknown") : device_name;
  env["threads"] = threads;
  env["intra_op_threads"] = at::get_num_threads();
  env["interop_threads"] = at::get_num_interop_threads();
  env["peak_memory_mb"] = peak_memory_mb();
  if (const CudaMemory gpu = cuda_peak_memory(device); gpu.known) {
    env["cuda_peak_allocated_mb"] = gpu.peak_allocated_mb;
    env["cuda_peak_reserved_mb"] = gpu.peak_reserved_mb;
  }
  // Other processes on the cores change CPU latency by large factors (OpenMP threads waiting on descheduled peers).
  double load[1] = {0.0};
  env["load_average_1m"] = getloadavg(load, 1) == 1 ? load[0] : 0.0;
  // Variables read once at start-up by OpenMP, OpenBLAS and glibc malloc, which configure_threads() cannot change.
  nlohmann::json vars = nlohmann::json::object();
  for (const char* name : {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_NUM_THREADS",
                           "MKL_NUM_THREADS", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                           "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "EXPCTL_MALLOC",
                           "CUDA_VISIBLE_DEVICES"})
    if (const char* value = std::getenv(name)) vars[name] = value;
  env["env_vars"] = vars;
  env["host_memory"] = configure_host_memory().what;
  return env;
}

}  // namespace expctl::metrics
