#include "runner/stages/batch_limits.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "plugins/pruner.h"
#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/data/registry.h"
#include "runner/models/models.h"
#include "runner/parallel/process_group.h"
#include "runner/stages/report.h"
#include "runner/training/training_params.h"

namespace expctl {

ActivationElements activation_elements(const models::Graph& graph, int64_t channels, int64_t height, int64_t width) {
  struct Shape {
    int64_t c = 0, h = 0, w = 0;
    int64_t elements() const { return c * h * w; }
  };
  const auto& nodes = graph.nodes();
  std::vector<Shape> shapes(nodes.size());
  ActivationElements out;
  auto window = [](int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
    return (size + 2 * padding - dilation * (kernel - 1) - 1) / std::max<int64_t>(stride, 1) + 1;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const models::Node& n = nodes[i];
    Shape in = n.inputs.empty() ? Shape{} : shapes[size_t(n.inputs[0])];
    Shape s = in;
    int64_t read = 0, read_inner = 0;  // elements of every input; of those that are not the image
    for (int j : n.inputs) {
      read += shapes[size_t(j)].elements();
      if (nodes[size_t(j)].op != models::Op::Input) read_inner += shapes[size_t(j)].elements();
    }
    switch (n.op) {
      case models::Op::Input:
        s = {channels, height, width};
        break;
      case models::Op::Conv:
        s = {n.out_channels, window(in.h, n.kernel, n.stride, n.padding, n.dilation),
             window(in.w, n.kernel, n.stride, n.padding, n.dilation)};
        break;
      case models::Op::Pool:
        if (n.kind == "adaptive_avg" || n.kind == "adaptive_max")
          s = {in.c, n.out_h, n.out_w};
        else
          s = {in.c, window(in.h, n.kernel, n.stride, n.padding, 1), window(in.w, n.kernel, n.stride, n.padding, 1)};
        break;
      case models::Op::Mul:  // broadcast (squeeze-excitation): the larger operand's shape
        for (int j : n.inputs)
          if (shapes[size_t(j)].elements() > s.elements()) s = shapes[size_t(j)];
        break;
      case models::Op::Concat:
        s.c = 0;
        for (int j : n.inputs) s.c += shapes[size_t(j)].c;
        break;
      case models::Op::Flatten:
        s = {in.elements(), 1, 1};
        break;
      case models::Op::Linear:
        s = {n.out_channels, 1, 1};
        break;
      default:  // batch norm, activation, dropout, add, output: the input's shape
        break;
    }
    if (s.c <= 0 || s.h <= 0 || s.w <= 0) return {};  // the image is too small: build_model() says so
    shapes[i] = s;
    // Nodes that never run in place (both ResNet's and GraphNet's forwards): their inputs and output coexist. The
    // image is counted once, below: the caller holds it for the whole forward.
    const bool out_of_place = n.op == models::Op::Conv || n.op == models::Op::Linear ||
                              n.op == models::Op::BatchNorm || n.op == models::Op::Add || n.op == models::Op::Mul ||
                              n.op == models::Op::Concat || n.op == models::Op::Pool;
    if (out_of_place) out.inference = std::max(out.inference, read_inner + s.elements());
    if (n.op == models::Op::Conv || n.op == models::Op::Linear || n.op == models::Op::BatchNorm) out.training += read;
  }
  out.inference += channels * height * width;
  return out;
}

namespace {

// The first number on the line of `file` that starts with `key` (/proc/meminfo: "MemAvailable:  123 kB"), or -1.
int64_t number_after(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) {
      std::istringstream rest(line.substr(key.size()));
      int64_t v = -1;
      rest >> v;
      return rest ? v : -1;
    }
  return -1;
}

}  // namespace

int64_t available_memory_bytes() {
  if (const char* set = std::getenv("EXPCTL_AVAILABLE_MEMORY"); set && *set) {
    char* end = nullptr;
    const long long v = std::strtoll(set, &end, 10);
    if (*end == '\0' && v > 0) return v;
  }
  int64_t avail = number_after("/proc/meminfo", "MemAvailable:");
  avail = avail > 0 ? avail * 1024 : 0;
  // A container's limit is lower than the host's free memory; "max" (no limit) reads as -1.
  const int64_t limit = number_after("/sys/fs/cgroup/memory.max", "");
  const int64_t used = number_after("/sys/fs/cgroup/memory.current", "");
  if (limit > 0 && used >= 0) {
    const int64_t left = std::max<int64_t>(limit - used, 1);
    avail = avail > 0 ? std::min(avail, left) : left;
  }
  return avail;
}

namespace {

// A key of a stage block that sizes a batch, and how that batch is used.
struct BatchKey {
  std::string stage;
  std::string key;
  enum class Use { Train, Evaluate, Synthetic } use;
};

// Every batch-size key: training batches (finetune, recover), evaluation batches over the test split, the prune
// stage's calibration and evaluation batches, and the report's synthetic latency batch; named by their binders.
const std::vector<BatchKey>& batch_keys() {
  static const std::vector<BatchKey> keys = [] {
    const auto training = training_binder(1);
    const std::string& batch = training.key(&TrainingOptions::batch_size);
    const std::string& eval = training.key(&TrainingOptions::eval_batch_size);
    return std::vector<BatchKey>{
        {"finetune", batch, BatchKey::Use::Train},
        {"finetune", eval, BatchKey::Use::Evaluate},
        {"recover", batch, BatchKey::Use::Train},
        {"recover", eval, BatchKey::Use::Evaluate},
        {"prune", prune_stage_binder().key(&PruneStageOptions::calibration_batch_size), BatchKey::Use::Evaluate},
        {"report", report_binder().key(&ReportOptions::large_batch), BatchKey::Use::Synthetic},
    };
  }();
  return keys;
}

// A factor no built-in network's largest layer exceeds over its input image (MobileNetV2's small-input stem on a
// gray image is about 130): below `available / factor` no estimate can refuse the batch, so no model is built.
constexpr int64_t kMaxExpansion = 1024;

std::string gib(double bytes) {
  std::ostringstream s;
  s.precision(bytes >= 10.0 * (1 << 30) ? 1 : 2);
  s << std::fixed << bytes / double(1 << 30) << " GiB";
  return s.str();
}

// The graph of the scenario's model (fresh, as build_model() makes it before loading weights), cached per model
// block and data set: a sweep validates the same model for every cell. Building it draws from torch's global
// generator; the state is put back so that a run's random numbers do not depend on what was validated.
const models::Graph* model_graph(const ScenarioConfig& cfg, const data::DatasetInfo& d) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<models::Graph>> cache;
  const std::string id = cfg.model.to_json().dump() + "|" + std::to_string(d.num_classes) + "|" +
                         std::to_string(d.channels);
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(id); it != cache.end()) return it->second.get();
  const models::ModelEntry* e = models::ModelRegistry::find(cfg.model_name());
  if (!e || cfg.model_name() == "TorchScript") return nullptr;  // a file to convert: its size is checked at run time
  auto gen = at::detail::getDefaultCPUGenerator();
  const auto state = gen.get_state();
  std::unique_ptr<models::Graph> g;
  try {
    torch::NoGradGuard no_grad;
    g = std::make_unique<models::Graph>(e->create(cfg.model, d.num_classes, d.channels)->graph());
  } catch (const std::exception&) {
    // A model that cannot be built is reported when the run builds it.
  }
  gen.set_state(state);
  return (cache[id] = std::move(g)).get();
}

bool runs_on_cpu(const ScenarioConfig& cfg) {
  const std::string& device = cfg.run.device;
  return device == "cpu" || (device == "auto" && !torch::cuda::is_available());
}

// A training batch larger than its split trains on nothing (the last, incomplete batch is dropped), and every
// batch's activations must fit in memory. Evaluation batches are cut to the split, so only memory bounds them.
void check_batch_sizes(const ScenarioConfig& cfg, std::vector<Diagnostic>& diags) {
  data::DatasetInfo d;
  try {
    d = data::dataset_info(cfg);
  } catch (const std::exception&) {
    return;  // an image folder not downloaded yet: nothing is known of its images
  }
  const int64_t train_images = data::expected_split_size(cfg, true);
  const int64_t test_images = data::expected_split_size(cfg, false);
  const int64_t available = runs_on_cpu(cfg) ? available_memory_bytes() : 0;
  const int64_t image_elements = d.channels * d.height * d.width;
  // batch_size is the global batch: the processes on this machine hold local_world / world of it.
  parallel::WorldInfo world;
  try {
    world = parallel::detect_world();
  } catch (const std::exception&) {
    // a malformed launcher environment is reported when the run starts
  }
  for (const BatchKey& b : batch_keys()) {
    if (!cfg.has_stage(b.stage) || !cfg.stage(b.stage).has(b.key)) continue;
    const Params& p = cfg.stage(b.stage);
    const Value& v = p.at(b.key);
    const auto* set = std::get_if<int64_t>(&v.v);
    if (!set) continue;
    const std::string key = b.stage + "." + b.key;
    int64_t batch = *set;
    if (b.use == BatchKey::Use::Train && train_images > 0 && batch > train_images) {
      // A default batch has no line: point at what made the split too small for it.
      const Value& subset = data::common_reader().value(cfg.dataset, &data::CommonOptions::train_subset);
      const bool by_subset = std::get<int64_t>(subset.v) == train_images;
      const Mark where = !v.is_default ? v.mark : by_subset ? subset.mark : cfg.dataset.at(kPluginKey).mark;
      diags.push_back({where, key,
                       "must be at most " + std::to_string(train_images) + ", the images of the train split" +
                           (by_subset ? " (dataset.train_subset)" : "") +
                           ": a larger batch is never full, and incomplete batches are dropped; got " +
                           std::to_string(batch)});
      continue;
    }
    // A default has no line: point at the model, whose size makes the batch too large.
    const Mark where = v.is_default ? cfg.model.at(kPluginKey).mark : v.mark;
    if (b.use == BatchKey::Use::Evaluate && test_images > 0) batch = std::min(batch, test_images);
    if (b.use == BatchKey::Use::Train && world.world_size > 1)
      batch = std::max<int64_t>(1, batch * world.local_world_size / world.world_size);
    if (available <= 0 || image_elements <= 0) continue;
    // Cheap first: an input of `batch` float images this much smaller than what is available cannot fail below.
    if (batch * image_elements * 4 * kMaxExpansion <= available) continue;
    const models::Graph* g = model_graph(cfg, d);
    if (!g) continue;
    const ActivationElements a = activation_elements(*g, d.channels, d.height, d.width);
    // Training keeps its activations in bf16 under autocast (2 bytes), fp32 otherwise; evaluation is fp32.
    const bool train = b.use == BatchKey::Use::Train;
    const int64_t bytes_per_element = train && training_options(p).precision != "fp32" ? 2 : 4;
    const int64_t per_image = (train ? a.training : a.inference) * bytes_per_element;
    if (per_image <= 0 || double(batch) * double(per_image) <= double(available)) continue;
    const int64_t fits = available / per_image;
    std::string reason = "a batch of " + std::to_string(batch) + " needs at least " +
                         gib(double(batch) * double(per_image)) + " for " + cfg.model_name() + "'s activations on " +
                         std::to_string(d.channels) + "x" + std::to_string(d.height) + "x" +
                         std::to_string(d.width) + " images, more than the " + gib(double(available)) +
                         " of memory available; at most " + std::to_string(fits) + " fits (" +
                         std::to_string(per_image) + " bytes per image: " +
                         (train ? "every conv, linear and batch-norm layer's input, kept for the backward pass, at " +
                                      std::to_string(bytes_per_element) + " bytes"
                                : std::string("the image, and the largest layer's inputs and output, at 4 bytes")) +
                         ")";
    diags.push_back({where, key, reason});
  }
}

}  // namespace

static const bool kBatchSizesChecked = add_scenario_check(check_batch_sizes);

}  // namespace expctl
