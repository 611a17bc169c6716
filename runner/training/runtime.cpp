#include "runner/training/runtime.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "runner/core/compat.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/metrics/environment.h"

namespace expctl {

torch::Device resolve_device(const std::string& spec) {
  if (std::string why = device_problem(spec); !why.empty()) throw Error("runtime.device: " + why);
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  return torch::Device(spec);
}

torch::Device resolve_device(const std::string& spec, const parallel::WorldInfo& world) {
  torch::Device d = resolve_device(spec);
  if (world.world_size > 1 && d.is_cuda() && !d.has_index()) return torch::Device(torch::kCUDA, world.local_rank);
  return d;
}

torch::Device prepare_runtime(const ScenarioConfig& cfg, spdlog::logger& log) {
  const parallel::WorldInfo& world = parallel::world();
  torch::Device device = resolve_device(cfg.run.device, world);
  int64_t requested = cfg.run.threads;
  // Processes of one machine share its cores; a launcher that binds each to its own cores (Slurm) has already
  // narrowed what usable_cores() sees.
  const int cores = metrics::usable_cores();
  if (requested == 0 && world.local_world_size > 1 && unsigned(cores) >= std::thread::hardware_concurrency())
    requested = std::max(1, cores / world.local_world_size);
  int threads = metrics::configure_threads(requested);
  at::globalContext().setFlushDenormal(true);
  log.info("device {}, {} CPU threads, LibTorch {}; host memory: {}", device.str(), threads, compat::torch_version(),
           metrics::configure_host_memory().what);
  return device;
}

void with_process_group(const parallel::WorldInfo& world, const std::vector<const ScenarioConfig*>& scenarios,
                        const std::function<void()>& work) {
  if (world.world_size == 1 || scenarios.empty()) {
    work();
    return;
  }
  const ScenarioConfig& first = *scenarios.front();
  const torch::Device device = resolve_device(first.run.device, world);
  for (const ScenarioConfig* s : scenarios) {
    const torch::Device d = resolve_device(s->run.device, world);
    if (d != device)
      throw Error(s->file.string() + ": runtime.device resolves to " + d.str() + ", but " + first.file.string() +
                  " to " + device.str() + "; scenarios run together over several processes must share the device");
  }
  parallel::init(world, device);
  try {
    work();
  } catch (...) {
    parallel::shutdown(/*graceful=*/false);
    throw;
  }
  parallel::shutdown();
}

}  // namespace expctl
