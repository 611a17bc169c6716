#include "runner/parallel/process_group.h"

#include <chrono>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "runner/core/compat.h"
#include "runner/core/error.h"

// c10d's headers compile their contents only under USE_C10D_GLOO / USE_C10D_NCCL (LibTorch's own build flags).
#ifdef EXPCTL_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef EXPCTL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(EXPCTL_WITH_GLOO) || defined(EXPCTL_WITH_NCCL)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define EXPCTL_WITH_C10D 1
#endif

namespace expctl::parallel {

// ---- the world from the environment -------------------------------------------------------------

namespace {

using Getenv = std::function<const char*(const char*)>;

std::optional<std::string> env(const Getenv& getenv, const char* name) {
  const char* v = getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int to_int(const char* name, const std::string& value, int64_t min, int64_t max, const std::string& why = "") {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used, 10);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size()) throw Error(std::string(name) + "='" + value + "' is not a whole number");
  if (v < min || v > max)
    throw Error(std::string(name) + "=" + value + " is out of range: " +
                (why.empty() ? "expected " + std::to_string(min) + " to " + std::to_string(max) : why));
  return int(v);
}

int required_int(const Getenv& getenv, const char* name, const std::string& context, int64_t min, int64_t max) {
  auto v = env(getenv, name);
  if (!v) throw Error(std::string(name) + " is not set, but " + context);
  return to_int(name, *v, min, max);
}

// Slurm's SLURM_STEP_TASKS_PER_NODE: "2(x3),1" -> 2 (the tasks on the first node; nodes are filled in order).
int first_count(const char* name, const std::string& value) {
  size_t end = value.find_first_of("(,");
  return to_int(name, value.substr(0, end), 1, 1 << 20);
}

void check_world(WorldInfo& w, const char* rank_var, const char* size_var, const char* local_var) {
  if (w.rank >= w.world_size)
    throw Error(std::string(rank_var) + "=" + std::to_string(w.rank) + " is out of range: " + size_var + " is " +
                std::to_string(w.world_size) + " (ranks are 0 to " + std::to_string(w.world_size - 1) + ")");
  if (w.local_rank >= w.local_world_size) w.local_world_size = w.local_rank + 1;  // never fewer than the rank
  if (w.local_rank > w.rank)
    throw Error(std::string(local_var) + "=" + std::to_string(w.local_rank) + " is larger than " + rank_var + "=" +
                std::to_string(w.rank));
}

}  // namespace

std::string first_host(const std::string& hostlist) {
  // A host list is a comma-separated list of names in which [a-b,c,...] stands for each of the listed numbers
  // (zero padding kept); only the first name is needed: take the first number of every bracket.
  std::string out;
  size_t i = 0;
  while (i < hostlist.size() && hostlist[i] != ',') {
    if (hostlist[i] == ']') throw Error("Slurm host list '" + hostlist + "': ']' without '['");
    if (hostlist[i] != '[') {
      out += hostlist[i++];
      continue;
    }
    size_t close = hostlist.find(']', i);
    if (close == std::string::npos) throw Error("Slurm host list '" + hostlist + "': '[' without ']'");
    std::string inner = hostlist.substr(i + 1, close - i - 1);
    std::string first = inner.substr(0, inner.find_first_of(",-"));
    if (first.empty() || first.find_first_not_of("0123456789") != std::string::npos)
      throw Error("Slurm host list '" + hostlist + "': '[" + inner + "]' is not a list of numbers and ranges");
    out += first;
    i = close + 1;
  }
  if (out.empty()) throw Error("Slurm host list '" + hostlist + "' names no host");
  return out;
}

WorldInfo detect_world(const Getenv& getenv) {
  WorldInfo w;
  if (env(getenv, "RANK") || env(getenv, "WORLD_SIZE")) {
    const std::string ctx = std::string(env(getenv, "RANK") ? "RANK" : "WORLD_SIZE") +
                            " is (torchrun's variables: set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT together, "
                            "or none of them)";
    w.source = "torchrun";
    w.world_size = required_int(getenv, "WORLD_SIZE", ctx, 1, 1 << 20);
    w.rank = required_int(getenv, "RANK", ctx, 0, 1 << 20);
    if (auto v = env(getenv, "LOCAL_RANK")) w.local_rank = to_int("LOCAL_RANK", *v, 0, 1 << 20);
    if (auto v = env(getenv, "LOCAL_WORLD_SIZE")) w.local_world_size = to_int("LOCAL_WORLD_SIZE", *v, 1, 1 << 20);
    check_world(w, "RANK", "WORLD_SIZE", "LOCAL_RANK");
    if (w.world_size > 1) {
      auto addr = env(getenv, "MASTER_ADDR");
      if (!addr)
        throw Error("MASTER_ADDR is not set, but WORLD_SIZE is " + std::to_string(w.world_size) +
                    " (the host of rank 0, e.g. 127.0.0.1 on one machine)");
      w.master_addr = *addr;
      w.master_port = required_int(
          getenv, "MASTER_PORT",
          "WORLD_SIZE is " + std::to_string(w.world_size) + " (a free TCP port on rank 0's host)", 1, 65535);
    }
    return w;
  }
  if (env(getenv, "SLURM_STEP_ID") && env(getenv, "SLURM_PROCID")) {
    w.source = "slurm";
    const std::string ctx = "SLURM_PROCID is (an srun step)";
    const char* size_var = env(getenv, "SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    w.world_size = required_int(getenv, size_var, ctx, 1, 1 << 20);
    w.rank = required_int(getenv, "SLURM_PROCID", ctx, 0, 1 << 20);
    if (auto v = env(getenv, "SLURM_LOCALID")) w.local_rank = to_int("SLURM_LOCALID", *v, 0, 1 << 20);
    if (auto v = env(getenv, "SLURM_STEP_TASKS_PER_NODE"))
      w.local_world_size = first_count("SLURM_STEP_TASKS_PER_NODE", *v);
    check_world(w, "SLURM_PROCID", size_var, "SLURM_LOCALID");
    if (w.world_size > 1) {
      if (auto addr = env(getenv, "MASTER_ADDR")) {
        w.master_addr = *addr;
      } else {
        const char* list_var = env(getenv, "SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST" : "SLURM_JOB_NODELIST";
        auto list = env(getenv, list_var);
        if (!list)
          throw Error(
              "neither MASTER_ADDR nor SLURM_STEP_NODELIST/SLURM_JOB_NODELIST is set in a Slurm step "
              "of " +
              std::to_string(w.world_size) + " tasks: set MASTER_ADDR to rank 0's host");
        try {
          w.master_addr = first_host(*list);
        } catch (const Error& e) {
          throw Error(std::string(list_var) + ": " + e.what());
        }
      }
      if (auto port = env(getenv, "MASTER_PORT")) {
        w.master_port = to_int("MASTER_PORT", *port, 1, 65535);
      } else {
        auto job = env(getenv, "SLURM_JOB_ID");
        if (!job) throw Error("neither MASTER_PORT nor SLURM_JOB_ID is set in a Slurm step: set MASTER_PORT");
        w.master_port = 20000 + to_int("SLURM_JOB_ID", *job, 0, std::numeric_limits<int>::max()) % 20000;
      }
    }
    return w;
  }
  return w;
}

// ---- the process group --------------------------------------------------------------------------

std::vector<std::string> available_backends() {
  std::vector<std::string> out;
#ifdef EXPCTL_WITH_GLOO
  out.push_back("gloo");
#endif
#ifdef EXPCTL_WITH_NCCL
  out.push_back("nccl");
#endif
  return out;
}

namespace {

#ifdef EXPCTL_WITH_C10D
// LibTorch 2.0 moved the collectives from ProcessGroup to Backend (ProcessGroupGloo/NCCL now derive from it).
#if EXPCTL_TORCH_AT_LEAST(2, 0)
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif
#endif

struct State {
  WorldInfo world;
  bool initialised = false;
  std::string backend;
  torch::Device device = torch::kCPU;
  int64_t timeout_s = 600;
  int64_t messages = 0;  // share_from_main() calls so far (the same count on every rank)
#ifdef EXPCTL_WITH_C10D
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
#endif
};

State& state() {
  static State s;
  return s;
}

int64_t read_timeout() {
  const char* v = std::getenv("EXPCTL_DIST_TIMEOUT_S");
  if (v == nullptr || *v == '\0') return 600;
  return to_int("EXPCTL_DIST_TIMEOUT_S", v, 1, 7 * 24 * 3600);
}

bool is_loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

// A failed collective: the usual cause is a peer that failed, was killed or stopped answering.
[[noreturn]] void collective_failed(const std::string& op, const std::exception& e) {
  const State& s = state();
  std::string what = e.what();
  if (auto nl = what.find("\nException raised from"); nl != std::string::npos) what.resize(nl);  // c10 backtrace
  throw Error("data parallel: " + op + " failed on rank " + std::to_string(s.world.rank) + " of " +
              std::to_string(s.world.world_size) + " (" + what +
              "); another process probably failed, was stopped or did not answer within " +
              std::to_string(s.timeout_s) + " s (EXPCTL_DIST_TIMEOUT_S): see its output");
}

#ifdef EXPCTL_WITH_C10D
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works, const std::string& op) {
  std::exception_ptr first;
  for (auto& w : works) {  // wait for every one, also after a failure, so none is in flight when we throw
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) {
    try {
      std::rethrow_exception(first);
    } catch (const std::exception& e) {
      collective_failed(op, e);
    }
  }
}
#endif

// Tensors grouped by dtype and device, each group packed into one flat buffer and unpacked after a collective.
struct Packed {
  std::vector<std::vector<size_t>> groups;  // indices into the caller's list
  std::vector<torch::Tensor> flats;
};

Packed pack(const std::vector<torch::Tensor>& tensors) {
  Packed p;
  std::map<std::pair<int, std::string>, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto key = std::make_pair(int(tensors[i].scalar_type()), tensors[i].device().str());
    auto it = index.find(key);
    if (it == index.end()) {
      it = index.emplace(key, p.groups.size()).first;
      p.groups.emplace_back();
    }
    p.groups[it->second].push_back(i);
  }
  for (const auto& g : p.groups) {
    std::vector<torch::Tensor> parts;
    for (size_t i : g) parts.push_back(tensors[i].detach().reshape({-1}));
    p.flats.push_back(torch::cat(parts));
  }
  return p;
}

void unpack(const Packed& p, std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < p.groups.size(); ++k) {
    int64_t off = 0;
    for (size_t i : p.groups[k]) {
      auto& t = tensors[i];
      t.detach().copy_(p.flats[k].narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

void check_device(const torch::Tensor& t, const char* op) {
  if (t.device() != state().device)
    throw Error(std::string("data parallel: ") + op + " got a tensor on " + t.device().str() + "; the " +
                state().backend + " process group works on " + state().device.str());
}

#ifdef EXPCTL_WITH_C10D
c10::intrusive_ptr<c10d::Work> start_all_reduce(torch::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  return state().group->allreduce(one);  // one tensor per call: a list would be summed across local devices
}
#endif

}  // namespace

#ifdef EXPCTL_WITH_C10D
namespace {

// "gloo" for a CPU device, "nccl" for CUDA; an Error naming what the build lacks when it has no such backend.
std::string choose_backend(torch::Device device, const std::string& who) {
  if (device.is_cuda()) {
#ifdef EXPCTL_WITH_NCCL
    return "nccl";
#else
    throw Error(who + ": training on " + device.str() +
                " over several processes needs NCCL, and this build has "
                "no ProcessGroupNCCL (a LibTorch with CUDA, nccl.h and "
                "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp at build time); use runtime.device: cpu "
                "(Gloo) or rebuild against a CUDA LibTorch");
#endif
  }
#ifdef EXPCTL_WITH_GLOO
  return "gloo";
#else
  throw Error(who +
              ": training on the CPU over several processes needs Gloo: install libgloo-dev (the "
              "headers gloo/context.h) and rebuild; this build has NCCL only, for CUDA devices");
#endif
}

// A c10 exception's message without LibTorch's C++ backtrace.
std::string first_part(const std::exception& e) {
  std::string what = e.what();
  if (auto nl = what.find("\nException raised from"); nl != std::string::npos) what.resize(nl);
  return what;
}

// Rank 0 serves the TCPStore and waits for every rank; the others connect to it.
c10::intrusive_ptr<c10d::Store> connect_store(const WorldInfo& world, int64_t timeout_s, const std::string& who) {
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(world.master_port);
    opts.isServer = world.rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world.world_size);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_s * 1000);
    compat::use_classic_tcp_store(opts);
    return c10::make_intrusive<c10d::TCPStore>(world.master_addr, opts);
  } catch (const std::exception& e) {
    const std::string where = world.master_addr + ":" + std::to_string(world.master_port);
    throw Error(who + ": " +
                (world.rank == 0
                     ? "cannot serve the TCPStore on port " + std::to_string(world.master_port) +
                           " (MASTER_PORT; is it in use?) or not every rank connected within "
                     : "cannot reach rank 0's TCPStore at " + where + " (MASTER_ADDR:MASTER_PORT) within ") +
                std::to_string(timeout_s) + " s: " + first_part(e));
  }
}

// The `backend` process group over `store`.
c10::intrusive_ptr<Group> make_group(const std::string& backend, const c10::intrusive_ptr<c10d::Store>& store,
                                     const WorldInfo& world, std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<Group> group;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("expctl_pg", store);
#ifdef EXPCTL_WITH_NCCL
  if (backend == "nccl") {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, world.rank, world.world_size, opts);
  }
#endif
#ifdef EXPCTL_WITH_GLOO
  if (backend == "gloo") {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // The interface Gloo's peers connect to: GLOO_SOCKET_IFNAME as in PyTorch; on one machine (a loopback
    // master) the loopback address; else the address this host's name resolves to.
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0') {
      std::string first = ifname;
      first = first.substr(0, first.find(','));
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(first));
    } else if (is_loopback(world.master_addr)) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, world.rank, world.world_size, opts);
  }
#endif
  return group;
}

}  // namespace
#endif

void init(const WorldInfo& world, torch::Device device) {
  State& s = state();
  if (s.initialised) throw Error("data parallel: init() called twice");
  s.timeout_s = read_timeout();
  if (world.world_size <= 1) {
    s.world = world;
    s.initialised = true;
    return;
  }
  const std::string who =
      "rank " + std::to_string(world.rank) + " of " + std::to_string(world.world_size) + " (" + world.source + ")";
#ifndef EXPCTL_WITH_C10D
  (void)device;
  throw Error(who +
              ": this expctl was built without a c10d backend, so it runs as a single process only. "
              "Gloo (CPU) needs the headers gloo/context.h (Debian: libgloo-dev) and LibTorch's "
              "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp at build time; install libgloo-dev, "
              "then rerun cmake and rebuild");
#else
  const std::string backend = choose_backend(device, who);
  s.store = connect_store(world, s.timeout_s, who);
  try {
    s.group = make_group(backend, s.store, world, std::chrono::milliseconds(s.timeout_s * 1000));
  } catch (const std::exception& e) {
    s.store.reset();
    throw Error(who + ": the " + backend + " process group did not form (master " + world.master_addr + ":" +
                std::to_string(world.master_port) + "): " + first_part(e));
  }
  s.world = world;
  s.backend = backend;
  s.device = device;
  s.messages = 0;
  s.initialised = true;
#endif
}

bool active() {
#ifdef EXPCTL_WITH_C10D
  return state().group.defined();
#else
  return false;
#endif
}

const WorldInfo& world() { return state().world; }
int rank() { return state().world.rank; }
int world_size() { return state().world.world_size; }
bool is_main() { return state().world.rank == 0; }
std::string backend() { return state().backend; }
torch::Device device() { return state().device; }
int64_t timeout_seconds() { return state().timeout_s; }

void barrier() {
  if (!active()) return;
#ifdef EXPCTL_WITH_C10D
  // A barrier is an all-reduce of one number: the same collective everywhere (Gloo's and NCCL's barriers differ).
  std::vector<torch::Tensor> one{torch::zeros({1}, torch::TensorOptions().device(state().device))};
  all_reduce_sum(one);
#endif
}

void broadcast(std::vector<torch::Tensor>& tensors, int root) {
  if (!active() || tensors.empty()) return;
#ifdef EXPCTL_WITH_C10D
  for (const auto& t : tensors) check_device(t, "broadcast");
  Packed p = pack(tensors);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (auto& flat : p.flats) {
      std::vector<at::Tensor> one{flat};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      works.push_back(state().group->broadcast(one, opts));
    }
  } catch (const std::exception& e) {
    wait_all(works, "broadcast");
    collective_failed("broadcast", e);
  }
  wait_all(works, "broadcast");
  unpack(p, tensors);
#endif
}

void all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!active() || tensors.empty()) return;
#ifdef EXPCTL_WITH_C10D
  for (const auto& t : tensors) check_device(t, "all-reduce");
  Packed p = pack(tensors);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (auto& flat : p.flats) works.push_back(start_all_reduce(flat));
  } catch (const std::exception& e) {
    wait_all(works, "all-reduce");
    collective_failed("all-reduce", e);
  }
  wait_all(works, "all-reduce");
  unpack(p, tensors);
#endif
}

std::vector<double> all_gather(double value) {
  const int w = world_size(), r = rank();
  if (!active()) return std::vector<double>(size_t(w), value);
  std::vector<torch::Tensor> t{torch::zeros({w}, torch::TensorOptions().dtype(torch::kDouble).device(device()))};
  t[0][r] = value;
  all_reduce_sum(t);
  auto cpu = t[0].to(torch::kCPU);
  return std::vector<double>(cpu.data_ptr<double>(), cpu.data_ptr<double>() + w);
}

std::string share_from_main(const std::string& value, bool wait_for_readers) {
  if (!active()) return value;
#ifndef EXPCTL_WITH_C10D
  return value;
#else
  State& s = state();
  const std::string key = "expctl/message/" + std::to_string(s.messages++);
  const std::string read_key = key + "/read";
  try {
    if (s.world.rank == 0) {
      s.store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      if (wait_for_readers) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(s.timeout_s);
        while (s.store->add(read_key, 0) < s.world.world_size - 1 && std::chrono::steady_clock::now() < deadline)
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      return value;
    }
    // Polled rather than waited for with a deadline: rank 0 may spend hours on a stage the others do not share.
    auto pause = std::chrono::milliseconds(5);
    while (!s.store->check({key})) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(500));
    }
    auto bytes = s.store->get(key);
    s.store->add(read_key, 1);
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find("\nException raised from"); nl != std::string::npos) what.resize(nl);
    throw Error("data parallel: rank " + std::to_string(s.world.rank) + " lost contact with rank 0's store at " +
                s.world.master_addr + ":" + std::to_string(s.world.master_port) +
                " (rank 0 probably failed or was stopped; see its output): " + what);
  }
#endif
}

void shutdown(bool graceful) {
  State& s = state();
#ifdef EXPCTL_WITH_C10D
  if (graceful && active()) barrier();
  s.group.reset();
  s.store.reset();
#else
  (void)graceful;
#endif
  s = State();
}

// ---- gradients ------------------------------------------------------------------------------------

GradientSync::GradientSync(const std::vector<torch::Tensor>& params, int64_t extra_values, int64_t bucket_bytes)
    : extra_values_(extra_values) {
  // Reverse registration order, as DDP: the last layers' gradients are ready first.
  std::map<std::pair<int, std::string>, size_t> open;  // (dtype, device) -> the bucket being filled
  std::vector<int64_t> bytes;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const torch::Tensor& p = *it;
    if (!p.requires_grad()) continue;
    auto key = std::make_pair(int(p.scalar_type()), p.device().str());
    auto found = open.find(key);
    if (found == open.end() || bytes[found->second] >= bucket_bytes) {
      open[key] = buckets_.size();
      buckets_.emplace_back();
      bytes.push_back(0);
      found = open.find(key);
    }
    Bucket& b = buckets_[found->second];
    b.params.push_back(p);
    b.grad_numel += p.numel();
    bytes[found->second] += p.numel() * int64_t(p.element_size());
  }
  // The extra values ride in the first float32 bucket (a bucket of their own when there is none).
  size_t with_extra = buckets_.size();
  for (size_t i = 0; i < buckets_.size() && extra_values_ > 0; ++i)
    if (buckets_[i].params.front().scalar_type() == torch::kFloat) {
      with_extra = i;
      break;
    }
  if (extra_values_ > 0 && with_extra == buckets_.size()) buckets_.emplace_back();
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    const int64_t n = b.grad_numel + (i == with_extra ? extra_values_ : 0);
    auto opts = b.params.empty() ? torch::TensorOptions().dtype(torch::kFloat).device(device())
                                 : b.params.front().options().requires_grad(false);
    b.flat = torch::zeros({n}, opts);
  }
  if (with_extra != 0 && with_extra < buckets_.size()) std::swap(buckets_[0], buckets_[with_extra]);
}

void GradientSync::run(torch::Tensor extra) {
  torch::NoGradGuard no_grad;
  if (extra_values_ > 0 && (!extra.defined() || extra.numel() != extra_values_))
    throw Error("GradientSync::run: expected " + std::to_string(extra_values_) + " extra values");
  if (!active()) return;  // one process: the gradients are the average already, the sums are the values
#ifdef EXPCTL_WITH_C10D
  const double ranks = double(world_size());
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (size_t i = 0; i < buckets_.size(); ++i) {
      Bucket& b = buckets_[i];
      int64_t off = 0;
      for (auto& p : b.params) {
        auto slot = b.flat.narrow(0, off, p.numel()).view(p.sizes());
        if (p.grad().defined())
          slot.copy_(p.grad());
        else
          slot.zero_();
        off += p.numel();
      }
      if (i == 0 && extra_values_ > 0) b.flat.narrow(0, b.grad_numel, extra_values_).copy_(extra.reshape({-1}));
      works.push_back(start_all_reduce(b.flat));
    }
  } catch (const std::exception& e) {
    wait_all(works, "gradient all-reduce");
    collective_failed("gradient all-reduce", e);
  }
  wait_all(works, "gradient all-reduce");
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    int64_t off = 0;
    for (auto& p : b.params) {
      auto slot = b.flat.narrow(0, off, p.numel()).view(p.sizes());
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      p.mutable_grad().copy_(slot).div_(ranks);
      off += p.numel();
    }
    if (i == 0 && extra_values_ > 0) extra.copy_(b.flat.narrow(0, b.grad_numel, extra_values_).view(extra.sizes()));
  }
#endif
}

}  // namespace expctl::parallel
