// The device and runtime set-up every LibTorch stage and subcommand needs: which device `runtime.device` means for
// this process, and the threads, denormals and host memory a run starts with.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "runner/parallel/process_group.h"

namespace spdlog {
class logger;
}

namespace expctl {

struct ScenarioConfig;

/// "auto" -> CUDA when available, else CPU; "cpu", "cuda", "cuda:N". Throws expctl::Error naming runtime.device.
torch::Device resolve_device(const std::string& spec);
/// resolve_device() for one of several processes: "auto" or "cuda" on CUDA become cuda:LOCAL_RANK, so each
/// process of a machine gets its own GPU; a device with an index is kept.
torch::Device resolve_device(const std::string& spec, const parallel::WorldInfo& world);

/// Sets up what every LibTorch stage needs from `runtime`: the device (per process, see resolve_device), the thread
/// count (0: one per usable core, shared among the processes of this machine unless they are bound to their own
/// cores) and flushing of denormals; logs them and returns the device.
torch::Device prepare_runtime(const ScenarioConfig& cfg, spdlog::logger& log);

/// Runs `work` inside the one process group of a command started as several processes (`expctl run` and `expctl
/// sweep` under torchrun or srun): every scenario's runtime.device must resolve to the same device for `world`
/// (else an Error naming both files, before anything runs); the group's backend follows it (Gloo on the CPU, NCCL
/// on CUDA). Leaves the group gracefully after `work`, at once when it throws. A single process just runs `work`.
void with_process_group(const parallel::WorldInfo& world, const std::vector<const ScenarioConfig*>& scenarios,
                        const std::function<void()>& work);

}  // namespace expctl
