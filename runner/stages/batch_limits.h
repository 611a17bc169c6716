// Batch sizes bounded when a scenario is loaded: by the data (a training batch no larger than its split) and by
// memory (a lower bound on one batch's activations against what this machine has available), each message naming
// the key, its limit and why. A batch that passes here can still run out of memory at run time (the bound is a lower
// one); the report stage then names report.latency.large_batch (runner/stages/report.cpp).
//
//     report: {latency: {large_batch: 65536}}
//     # scenario.yaml:9:27: report.latency.large_batch: a batch of 65536 needs at least 17.16 GiB ...
#pragma once
#include <cstdint>

#include "runner/models/graph.h"

namespace expctl {

/// Activation sizes of one image through a graph, in elements (not bytes), from shapes alone.
struct ActivationElements {
  /// The image (its caller holds it through the forward) + the largest (inputs + output) of one node that never
  /// runs in place (conv, linear, batch norm, add, multiply, concat, pool; the image not counted twice): all alive
  /// at once while it runs, so an inference forward holds at least this much.
  int64_t inference = 0;
  /// The inputs of every conv, linear and batch-norm node: autograd keeps each for the backward pass (a weight's
  /// gradient, the normalisation's), so a training step holds at least this much.
  int64_t training = 0;
};

/// Propagates a `channels`×`height`×`width` image through `graph` (conv and pool output sizes from kernel, stride,
/// padding and dilation) and sums as ActivationElements says. All zero when the image is too small for the network.
ActivationElements activation_elements(const models::Graph& graph, int64_t channels, int64_t height, int64_t width);

/// Bytes of memory this process can still use: the lower of /proc/meminfo's MemAvailable and the cgroup's
/// memory.max − memory.current (cgroup v2), or the environment variable EXPCTL_AVAILABLE_MEMORY (bytes) when set,
/// to check a scenario for a smaller machine (and for tests); 0 when unknown.
int64_t available_memory_bytes();

}  // namespace expctl
