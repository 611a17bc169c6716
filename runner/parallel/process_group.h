// Data parallelism over several processes (there is no C++ DistributedDataParallel): which process this is
// (torchrun's or Slurm's variables), a c10d process group over a TCPStore (Gloo on the CPU, NCCL on CUDA when the
// build has it), a few collectives on whole lists of tensors, messages from rank 0 to the others, and a bucketed
// gradient all-reduce. This header is light on purpose: the c10d and Gloo headers stay in process_group.cpp.
//
// A process that was not started as one of several (no RANK/WORLD_SIZE, no Slurm step) is rank 0 of 1: every
// function below then works without a process group (collectives return their input, messages are local).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace expctl::parallel {

/// Where this process stands among the processes of one run.
struct WorldInfo {
  int rank = 0;                   ///< 0 .. world_size - 1; rank 0 writes every file
  int world_size = 1;             ///< processes in the run
  int local_rank = 0;             ///< rank among the processes on this machine (the CUDA device index)
  int local_world_size = 1;       ///< processes on this machine (to share its cores)
  std::string master_addr;        ///< host of rank 0's TCPStore ("" when world_size is 1)
  int master_port = 0;            ///< its port
  std::string source = "single";  ///< "torchrun", "slurm" or "single"
};

/// Reads the world from environment variables, `getenv` standing in for ::getenv (tests pass a map):
/// 1. torchrun (also any launcher that sets the same variables): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
///    MASTER_ADDR, MASTER_PORT — present when RANK or WORLD_SIZE is set;
/// 2. Slurm, inside an srun step (SLURM_STEP_ID and SLURM_PROCID set): rank SLURM_PROCID, world
///    SLURM_STEP_NUM_TASKS (else SLURM_NTASKS), local rank SLURM_LOCALID, local world from
///    SLURM_STEP_TASKS_PER_NODE (its first entry); master MASTER_ADDR or the first host of SLURM_STEP_NODELIST
///    (else SLURM_JOB_NODELIST), port MASTER_PORT or 20000 + SLURM_JOB_ID % 20000;
/// 3. otherwise a single process.
/// Throws expctl::Error naming the variable and its value when one is missing, not a number or out of range
/// (RANK 3 with WORLD_SIZE 2, a port above 65535, ...).
WorldInfo detect_world(const std::function<const char*(const char*)>& getenv = ::getenv);

/// The first host of a Slurm host list: "node[01-04,07],gpu3" -> "node01", "gpu3,node1" -> "gpu3",
/// "rack[2-3]-n[5,7]" -> "rack2-n5". Throws expctl::Error for unbalanced brackets or an empty list.
std::string first_host(const std::string& hostlist);

/// The backends this build can use: "gloo" (built with libgloo-dev and LibTorch's c10d Gloo headers) and
/// "nccl" (LibTorch with CUDA and NCCL). Empty: only single processes.
std::vector<std::string> available_backends();

/// Joins the process group `world` describes: rank 0 serves a TCPStore on master_port, every rank connects to it,
/// then the Gloo (CPU `device`) or NCCL (CUDA `device`) group forms. Each wait is bounded by EXPCTL_DIST_TIMEOUT_S
/// seconds (default 600), so a dead peer ends in an Error, not a hang. With world_size 1 it only records `world`.
/// Throws Error when world_size > 1 and the build lacks the backend (saying which headers/package), when the
/// store cannot be served or reached, or when called twice without shutdown().
void init(const WorldInfo& world, torch::Device device);
/// Whether a process group of two or more processes is up.
bool active();
/// This process's world (rank 0 of 1 before init()).
const WorldInfo& world();
int rank();
int world_size();
/// Rank 0, the process that writes files and reports (true for a single process).
bool is_main();
/// "gloo", "nccl", or "" without a process group.
std::string backend();
/// The device the collectives run on (tensors passed to them must be there; CPU for Gloo).
torch::Device device();
/// The collective timeout in seconds (EXPCTL_DIST_TIMEOUT_S, default 600).
int64_t timeout_seconds();

/// Waits until every rank gets here.
void barrier();
/// Copies rank `root`'s values of `tensors` into every rank's tensors (same shapes and dtypes on every rank;
/// any layout). Tensors of one dtype travel as one flat buffer.
void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
/// Replaces each tensor by its sum over the ranks (element-wise), in place. One flat buffer per dtype.
void all_reduce_sum(std::vector<torch::Tensor>& tensors);
/// Every rank's `value`, by rank (an all-gather of one number).
std::vector<double> all_gather(double value);

/// Rank 0's `value`, on every rank: rank 0 publishes it in the store and returns it; the other ranks wait for it
/// (as long as rank 0 is alive: a message may follow a long rank-0-only step, so there is no time limit; losing
/// the connection to rank 0 throws Error) and return it. Every rank must call this the same number of times in
/// the same order. With `wait_for_readers`, rank 0 returns once every rank has read the message (at most the
/// timeout): use it for the last message before rank 0 exits, whose store the others read from.
std::string share_from_main(const std::string& value, bool wait_for_readers = false);

/// Leaves the process group. `graceful`: a barrier first, so no rank tears down the store (rank 0 serves it)
/// while another still uses it; false after an error, when the others may be gone or elsewhere.
void shutdown(bool graceful = true);

/// All-reduces gradients as DistributedDataParallel does, in buckets of about `bucket_bytes` of one dtype and
/// device, filled with parameters in reverse registration order (the order backward produces them); each bucket's
/// all-reduce is started before waiting for any. Gradients end averaged over the ranks. A parameter without a
/// gradient counts as zeros (and then has one), so every rank sends the same buckets.
/// `extra` values (float32 on the parameters' device) ride in the first bucket and come back summed over the
/// ranks: per-step statistics and a stop flag agree without another round trip.
///
///     parallel::GradientSync sync(model->parameters(), 3);
///     loss.backward();
///     torch::Tensor stats = torch::stack({loss_sum, correct, stop});
///     sync.run(stats);  // gradients averaged, stats summed over the ranks
class GradientSync {
 public:
  GradientSync(const std::vector<torch::Tensor>& params, int64_t extra_values = 0,
               int64_t bucket_bytes = 25 * 1024 * 1024);
  /// All-reduces every gradient (averaged) and `extra` (summed; extra_values float32 elements, or undefined when
  /// extra_values is 0). Collective: every rank calls it once per step.
  void run(torch::Tensor extra = {});
  /// Buckets in use (for logs and tests).
  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<torch::Tensor> params;
    torch::Tensor flat;  // gradient elements, then (first bucket) the extra values
    int64_t grad_numel = 0;
  };
  std::vector<Bucket> buckets_;
  int64_t extra_values_ = 0;
};

}  // namespace expctl::parallel
