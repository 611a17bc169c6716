// The machine a measurement ran on: thread settings (which decide CPU latency), peak memory, and a description
// of the host, library and device for reports.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace expctl::metrics {

/// Cores this process may run on (sched_getaffinity; std::thread::hardware_concurrency() when that fails); ≥ 1.
int usable_cores();

/// Sets LibTorch's thread counts and returns the intra-op count used: `requested` threads, or usable_cores()
/// when `requested` is 0.
/// - at::set_num_threads(n) on every call;
/// - at::set_num_interop_threads(n) once per process, and only when LibTorch still allows it (it throws once
///   its inter-op pool has started or the count was set before): later calls leave it as it is;
/// - when the BLAS in use is OpenBLAS's pthread build (found with dlsym(RTLD_DEFAULT, "openblas_set_num_threads")),
///   openblas_set_num_threads(1): its own thread pool and LibTorch's OpenMP pool otherwise fight over the cores
///   (batch-1 CPU latency 2–5× slower on 2 cores). The OpenMP build of OpenBLAS shares LibTorch's pool and is
///   left alone.
/// Not settable from here: OpenMP reads OMP_WAIT_POLICY when LibTorch loads. When other processes keep the cores
/// busy, its spinning workers wait on descheduled peers: measured on 2 busy vCPUs (load ~5), CIFAR ResNet-18 at
/// batch 1 took ~950 ms per forward with 2 threads, 50 ms with 1, and 32 ms with 2 and OMP_WAIT_POLICY=passive.
/// Throws expctl::Error when `requested` < 0.
///
///     int threads = configure_threads(0);  // e.g. 2 on a 2-vCPU machine
int configure_threads(int64_t requested);

/// OpenBLAS's configuration, build flavour and current thread count when OpenBLAS is loaded in the process
/// ("OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ... (pthread, 1 thread(s))"), else "unknown".
std::string blas_info();

/// The process's peak resident set size (getrusage ru_maxrss) in MB (2^20 bytes): host memory only.
double peak_memory_mb();

/// How glibc's malloc hands memory back to the system in this process (configure_host_memory()).
///
/// With glibc's defaults, every block above the mmap threshold (at most 32 MiB) is a fresh mmap, and freed memory at
/// the top of the heap is returned: each training step then maps, zero-fills and unmaps its largest activations
/// again. Measured on a 2-core AVX512-BF16 host, ResNet-18 (cifar stem, 32x32, batch 128, bf16 + channels_last),
/// 3,072 training images: 107 img/s, 29% of the CPU time in the kernel and 4.8 million page faults per run with
/// the defaults; 154 img/s, 7% and 0.46 million with freed memory kept mapped; evaluation at batch 512 went from
/// 23 s to 5.5 s. The cost: memory freed once stays with the process (peak RSS 1.2 -> 1.9 GB in that run).
struct HostMemory {
  bool kept = false;     ///< expctl set mmap off and trimming off (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD max)
  std::string setting;   ///< "keep", "default" or "environment" (the user's own MALLOC_* / GLIBC_TUNABLES)
  std::string what;      ///< one line for the log and the metrics files
};
/// Decides and applies the host allocator's policy from the environment, once per process (called first in main):
/// - `EXPCTL_MALLOC=default` (or `system`): glibc's own behaviour, untouched;
/// - any of MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ set, or
///   GLIBC_TUNABLES naming glibc.malloc.*: the user's settings, untouched;
/// - otherwise (`EXPCTL_MALLOC` unset or `keep`): freed memory stays mapped (see HostMemory).
/// Any other EXPCTL_MALLOC value throws expctl::Error naming it. Not glibc (musl, macOS): nothing to do, `what` says
/// so. Later calls return the first call's result.
const HostMemory& configure_host_memory();
/// The policy as configure_host_memory() would decide it for these variables (`get` returns nullptr when unset),
/// without applying it: the decision alone, for tests.
HostMemory decide_host_memory(const std::function<const char*(const char*)>& get);

/// CPU time and page faults of the whole process (all threads) so far, from getrusage(RUSAGE_SELF).
struct ProcessUsage {
  double user_seconds = 0, system_seconds = 0;
  int64_t minor_faults = 0, major_faults = 0;
};
ProcessUsage process_usage();

/// Peak GPU memory of this process on one CUDA device, from LibTorch's caching allocator, in MB (2^20 bytes).
struct CudaMemory {
  bool known = false;            ///< false: not a CUDA device, or a build without the CUDA allocator's statistics
  double peak_allocated_mb = 0;  ///< most memory held by tensors at once
  double peak_reserved_mb = 0;   ///< most memory the allocator held from the driver at once (allocated + cache)
};
/// The peaks since the process started. Built only against a CUDA LibTorch (CMake option EXPCTL_CUDA_STATS);
/// elsewhere returns {known = false}.
CudaMemory cuda_peak_memory(const torch::Device& device);

/// Whether this CPU computes bf16 natively: x86 AVX512_BF16 or AMX-BF16 (CPUID, with the OS saving the AVX-512
/// or AMX state: XCR0), or Arm's BF16 extension (HWCAP2_BF16). Without it, LibTorch's CPU bf16 kernels convert
/// element by element and training under bf16 autocast is slower than fp32 (measured on an AMD EPYC with AVX2
/// only: ~15x slower per step).
struct Bf16Support {
  bool native = false;
  std::string what;  ///< "AVX512_BF16", "AMX-BF16", "AVX512_BF16, AMX-BF16", "Arm BF16", or why not ("no AVX512_BF16 or AMX-BF16 (x86-64)")
};
Bf16Support cpu_bf16_support();

/// A description of the machine for reports:
///   {"host", "os" (uname: system release machine), "cpu_model" (/proc/cpuinfo), "logical_cores",
///    "usable_cores", "memory_mb" (MemTotal), "libtorch" (TORCH_VERSION), "blas" (blas_info()),
///    "device" ("cpu", "cuda:0"), "device_name" (CPU model, or the GPU's name when the CUDA driver is loaded),
///    "cpu_bf16" (cpu_bf16_support().what), "cpu_bf16_native" (bool),
///    "threads" (`threads` as given), "intra_op_threads" and "interop_threads" (LibTorch's current values),
///    "peak_memory_mb", on CUDA "cuda_peak_allocated_mb"/"cuda_peak_reserved_mb" (cuda_peak_memory(); absent when
///    unknown), "load_average_1m" (other work on the cores skews CPU latency),
///    "env_vars" (those of OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
///    MALLOC_TOP_PAD_, MALLOC_ARENA_MAX, MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
///    GLIBC_TUNABLES, EXPCTL_MALLOC, CUDA_VISIBLE_DEVICES that are set: read at start-up, they change timings),
///    "host_memory" (configure_host_memory().what)}.
/// Values that cannot be read are "unknown" (strings) or 0 (numbers); nothing throws.
///
///     nlohmann::json env = environment_info(torch::kCPU, configure_threads(0));
nlohmann::json environment_info(torch::Device device, int threads);

}  // namespace expctl::metrics
