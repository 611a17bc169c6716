// Metrics: MACs against an independent formula and the published ResNet-18 figures, non-zero MACs, size,
// accuracy on rigged and random models, latency statistics, threads and the environment description.
#include "runner/metrics/metrics.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/metrics/environment.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"

namespace em = expctl::models;
namespace ex = expctl::metrics;
namespace ed = expctl::data;

namespace {

// MACs of a BasicBlock ResNet written down from the architecture alone (torchvision's resnet.py), without the
// model object: conv MACs = C_in·C_out·k²·H_out·W_out, fc = in·out, H_out = (H + 2p − k) / s + 1.
int64_t reference_macs(const em::ResNetSpec& spec_in, int64_t h, int64_t w) {
  const em::ResNetSpec spec = spec_in.resolved();
  auto out = [](int64_t n, int64_t k, int64_t s, int64_t p) { return (n + 2 * p - k) / s + 1; };
  int64_t total = 0;
  const int64_t stem_width = spec.stage_widths[0];
  if (spec.stem == em::Stem::ImageNet) {
    h = out(h, 7, 2, 3), w = out(w, 7, 2, 3);
    total += spec.in_channels * stem_width * 7 * 7 * h * w;
    h = out(h, 3, 2, 1), w = out(w, 3, 2, 1);  // max-pool
  } else {
    h = out(h, 3, 1, 1), w = out(w, 3, 1, 1);
    total += spec.in_channels * stem_width * 3 * 3 * h * w;
  }
  const auto blocks = spec.blocks_per_stage();
  int64_t in = stem_width;
  size_t block = 0;
  for (size_t s = 0; s < 4; ++s) {
    for (int b = 0; b < blocks[s]; ++b) {
      const bool first = b == 0 && s > 0;
      const int64_t stride = first ? 2 : 1, inner = spec.block_widths[block++], width = spec.stage_widths[s];
      const int64_t h1 = out(h, 3, stride, 1), w1 = out(w, 3, stride, 1);
      total += in * inner * 9 * h1 * w1;         // conv1
      total += inner * width * 9 * h1 * w1;      // conv2
      if (first) total += in * width * h1 * w1;  // downsample 1×1, stride 2
      h = h1, w = w1, in = width;
    }
  }
  return total + in * spec.num_classes;  // fc
}

em::ResNetSpec spec_of(em::Stem stem, int64_t classes) {
  em::ResNetSpec s;
  s.stem = stem;
  s.num_classes = classes;
  return s;
}

em::ResNetSpec thin_spec(int64_t classes) {
  em::ResNetSpec s;
  s.num_classes = classes;
  s.stem = em::Stem::Cifar;
  s.stage_widths = {4, 6, 8, 10};
  return s;
}

torch::Tensor weight_of(em::GraphNet& model, const std::string& name) {
  for (const auto& p : model->named_parameters())
    if (p.key() == name) return p.value();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

ed::Split random_split(int64_t n, int64_t classes, uint64_t seed) {
  torch::manual_seed(seed);
  ed::Split s;
  s.images = torch::randint(0, 256, {n, 3, 8, 8}).to(torch::kUInt8);
  s.labels = torch::randint(0, classes, {n}, torch::kLong);
  s.num_classes = classes;
  s.norm = {{0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.3f}};
  s.source = "random test split";
  return s;
}

}  // namespace

// ---- MACs ------------------------------------------------------------------------------------------

TEST(Macs, ResNet18At224MatchesTheFormulaAndThePublishedFigure) {
  torch::manual_seed(0);
  auto spec = spec_of(em::Stem::ImageNet, 1000);
  auto model = em::make_resnet(spec);
  const ex::MacsReport m = ex::count_macs(model, 224, 224);
  EXPECT_EQ(m.macs, reference_macs(spec, 224, 224));
  EXPECT_EQ(m.macs, 1'814'073'344);  // torchvision's "1.81 GFLOPS" (it counts multiply-adds)
  EXPECT_EQ(m.flops(), 2 * m.macs);
  EXPECT_EQ(m.nonzero_macs, m.macs);  // kaiming-normal weights: no exact zeros

  // The per-layer breakdown: every Conv2d/Linear once, in forward order, with the right shapes.
  ASSERT_EQ(m.layers.size(), model->layer_names().size());
  for (size_t i = 0; i < m.layers.size(); ++i) EXPECT_EQ(m.layers[i].name, model->layer_names()[i]);
  int64_t sum = 0;
  for (const auto& l : m.layers) sum += l.macs;
  EXPECT_EQ(sum, m.macs);
  const ex::LayerMacs& conv1 = m.layers.front();
  EXPECT_EQ(conv1.kind, "conv");
  EXPECT_EQ(conv1.input_shape, (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_EQ(conv1.output_shape, (std::vector<int64_t>{1, 64, 112, 112}));
  EXPECT_EQ(conv1.weight_shape, (std::vector<int64_t>{64, 3, 7, 7}));
  EXPECT_EQ(conv1.macs, 64LL * 3 * 49 * 112 * 112);
  for (const auto& l : m.layers) {
    if (l.name == "layer2.0.downsample.0") {
      EXPECT_EQ(l.input_shape, (std::vector<int64_t>{1, 64, 56, 56}));
      EXPECT_EQ(l.output_shape, (std::vector<int64_t>{1, 128, 28, 28}));
      EXPECT_EQ(l.macs, 64LL * 128 * 28 * 28);
    }
  }
  // ResNet-34 too: torchvision's "3.66 GFLOPS"; the exact count is that of forward hooks on torchvision's
  // resnet34 Conv2d/Linear modules at 224x224 (3,663,761,408).
  auto spec34 = spec;
  spec34.depth = 34;
  auto model34 = em::make_resnet(spec34);
  EXPECT_EQ(ex::count_macs(model34, 224, 224).macs, 3'663'761'408);
  const ex::LayerMacs& fc = m.layers.back();
  EXPECT_EQ(fc.kind, "linear");
  EXPECT_EQ(fc.input_shape, (std::vector<int64_t>{1, 512}));
  EXPECT_EQ(fc.output_shape, (std::vector<int64_t>{1, 1000}));
  EXPECT_EQ(fc.macs, 512'000);
}

TEST(Macs, ResNet18At32WithBothStems) {
  torch::manual_seed(0);
  auto imagenet = spec_of(em::Stem::ImageNet, 1000);
  auto m1 = em::make_resnet(imagenet);
  const int64_t imagenet_macs = ex::count_macs(m1, 32, 32).macs;
  EXPECT_EQ(imagenet_macs, reference_macs(imagenet, 32, 32));
  EXPECT_NEAR(imagenet_macs / 1e6, 37.5, 0.05);

  auto cifar = spec_of(em::Stem::Cifar, 10);
  auto m2 = em::make_resnet(cifar);
  const int64_t cifar_macs = ex::count_macs(m2, 32, 32).macs;
  EXPECT_EQ(cifar_macs, reference_macs(cifar, 32, 32));
  EXPECT_NEAR(cifar_macs / 1e9, 0.555, 0.0005);

  // Non-square and odd sizes follow torch's floor arithmetic, and gray inputs change conv1 only.
  auto gray = cifar;
  gray.in_channels = 1;
  auto m3 = em::make_resnet(gray);
  EXPECT_EQ(ex::count_macs(m3, 28, 20).macs, reference_macs(gray, 28, 20));
  auto m4 = em::make_resnet(imagenet);
  EXPECT_EQ(ex::count_macs(m4, 57, 45).macs, reference_macs(imagenet, 57, 45));
}

TEST(Macs, PruningAGroupRemovesExactlyItsProducts) {
  torch::manual_seed(1);
  auto spec = spec_of(em::Stem::Cifar, 10);
  auto model = em::make_resnet(spec);
  const int64_t before = ex::count_macs(model, 32, 32).macs;

  // layer1.0's inner width 64 → 32: its conv1 loses 32 output channels and its conv2 32 input channels, both at
  // 32×32 with 3×3 kernels against 64 channels.
  em::ChannelGroup inner;
  for (const auto& g : em::channel_groups(model))
    if (g.name == "layer1.0.conv1") inner = g;
  ASSERT_EQ(inner.name, "layer1.0.conv1");
  em::prune_groups(model, {{"layer1.0.conv1", torch::arange(0, 64, 2)}});
  const int64_t after_inner = ex::count_macs(model, 32, 32).macs;
  EXPECT_EQ(before - after_inner, 2LL * 32 * 64 * 9 * 32 * 32);

  // A residual stream too: layer4 512 → 100 channels; the formula on the pruned spec agrees.
  em::prune_groups(model, {{"layer4", torch::arange(0, 100)}});
  EXPECT_EQ(em::resnet_spec(*model).stage_widths[3], 100);
  EXPECT_EQ(ex::count_macs(model, 32, 32).macs, reference_macs(em::resnet_spec(*model), 32, 32));
}

TEST(Macs, NonZeroMacsFollowTheMask) {
  torch::manual_seed(2);
  auto model = em::make_resnet(spec_of(em::Stem::Cifar, 10));
  auto w = weight_of(model, "layer2.1.conv2.weight");
  const ex::ParamCount before = ex::count_parameters(*model);
  {
    torch::NoGradGuard g;
    w.view({-1}).slice(0, 0, w.numel() / 2).zero_();  // 50% of the layer's weights
  }
  const ex::MacsReport m = ex::count_macs(model, 32, 32);
  int64_t layer_macs = 0;
  for (const auto& l : m.layers) {
    if (l.name == "layer2.1.conv2") {
      layer_macs = l.macs;
      EXPECT_EQ(l.weights, 128LL * 128 * 9);
      EXPECT_EQ(l.nonzero_weights, l.weights / 2);
      EXPECT_EQ(l.nonzero_macs, l.macs / 2);
    } else {
      EXPECT_EQ(l.nonzero_macs, l.macs) << l.name;
    }
  }
  EXPECT_EQ(layer_macs, 128LL * 128 * 9 * 16 * 16);
  EXPECT_EQ(m.macs, reference_macs(spec_of(em::Stem::Cifar, 10), 32, 32));
  EXPECT_EQ(m.nonzero_macs, m.macs - layer_macs / 2);
  EXPECT_EQ(m.nonzero_flops(), 2 * m.nonzero_macs);

  const ex::ParamCount after = ex::count_parameters(*model);
  EXPECT_EQ(after.total, before.total);
  EXPECT_EQ(after.nonzero, before.nonzero - w.numel() / 2);
}

TEST(Macs, KeepsTheModeAndBatchNormStatistics) {
  torch::manual_seed(3);
  auto model = em::make_resnet(thin_spec(5));
  model->train();
  auto mean_before = em::state_dict(*model)["bn1.running_mean"].clone();
  ex::count_macs(model, 16, 16);
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(torch::equal(em::state_dict(*model)["bn1.running_mean"], mean_before));  // the forward ran in eval mode
  EXPECT_THROW(ex::count_macs(model, 0, 16), expctl::Error);
}

// ---- parameters and size ---------------------------------------------------------------------------

TEST(Size, ResNet18WithImageNetClassesIsTorchvisionsSize) {
  torch::manual_seed(4);
  auto model = em::make_resnet(spec_of(em::Stem::ImageNet, 1000));
  {
    // Known values: every parameter 1, except BN biases, 0 (64 + 4·64 + 5·128 + 5·256 + 5·512 = 4800 elements).
    torch::NoGradGuard g;
    for (const auto& p : model->parameters()) p.fill_(1.0);
    for (const auto& m : model->modules(false))
      if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) bn->bias.zero_();
  }
  const ex::ParamCount p = ex::count_parameters(*model);
  EXPECT_EQ(p.total, 11'689'512);  // torchvision's resnet18
  EXPECT_EQ(p.nonzero, p.total - 4800);

  const ex::ModelSize s = ex::model_size(*model);
  EXPECT_GE(s.dense_mb(), 44.6);
  EXPECT_LE(s.dense_mb(), 44.7);
  EXPECT_DOUBLE_EQ(s.dense_mb(), double(s.dense_bytes) / (1024.0 * 1024.0));
}

TEST(Size, CompactSizeFollowsTheFormula) {
  torch::manual_seed(5);
  auto model = em::make_resnet(spec_of(em::Stem::Cifar, 10));
  const ex::ModelSize dense = ex::model_size(*model);

  // Zero every other element of each conv/linear weight (a 50% mask) and one BN weight (stays dense).
  int64_t expected_change = 0;
  {
    torch::NoGradGuard g;
    for (const auto& p : model->named_parameters()) {
      auto t = p.value();
      if (t.dim() < 2) continue;
      t.view({-1}).slice(0, 0, t.numel(), 2).zero_();
      const int64_t numel = t.numel(), nonzero = numel / 2;  // odd positions survive
      expected_change += -4 * numel + 4 * nonzero + (numel + 7) / 8;
    }
    em::state_dict(*model)["bn1.weight"][0] = 0;
  }
  const ex::ModelSize masked = ex::model_size(*model);
  EXPECT_EQ(masked.dense_bytes, dense.dense_bytes);  // zeros take as much room as any value
  EXPECT_EQ(masked.compact_bytes, masked.dense_bytes + expected_change);
  EXPECT_LT(masked.compact_mb(), 0.6 * masked.dense_mb());
  // Dense weights: the masks are pure overhead, one bit per weight element.
  const ex::ParamCount p = ex::count_parameters(*model);
  EXPECT_GT(dense.compact_bytes, dense.dense_bytes);
  EXPECT_LT(dense.compact_bytes - dense.dense_bytes, p.total / 8 + 64);
}

// ---- accuracy ----------------------------------------------------------------------------------------

TEST(Evaluate, RiggedClassifierScoresThatClassShare) {
  torch::manual_seed(6);
  auto model = em::make_resnet(thin_spec(4));
  {
    torch::NoGradGuard g;
    em::state_dict(*model)["fc.weight"].zero_();
    em::state_dict(*model)["fc.bias"].copy_(torch::tensor({0.0f, 0.0f, 1.0f, 0.0f}));  // every logit vector is (0, 0, 1, 0)
  }
  ed::Split split = random_split(10, 4, 7);
  split.labels = torch::tensor({2, 0, 2, 1, 3, 2, 0, 1, 1, 3}, torch::kLong);  // 3 of 10 are class 2
  model->train();
  const ex::EvalResult r = ex::evaluate(model, split, 4, torch::kCPU);  // batches of 4, 4, 2
  EXPECT_EQ(r.count, 10);
  EXPECT_EQ(r.correct, 3);
  EXPECT_DOUBLE_EQ(r.accuracy, 30.0);
  // Cross-entropy of logits (0,0,1,0): log(3 + e) − 1 for label 2, log(3 + e) otherwise.
  const double lse = std::log(3.0 + std::exp(1.0));
  EXPECT_NEAR(r.loss, (3 * (lse - 1) + 7 * lse) / 10, 1e-6);
  EXPECT_TRUE(model->is_training());
}

TEST(Evaluate, MatchesAOneBatchReference) {
  torch::manual_seed(8);
  auto model = em::make_resnet(thin_spec(5));
  ed::Split split = random_split(23, 5, 9);
  model->eval();
  torch::Tensor logits;
  {
    torch::NoGradGuard g;
    logits = model->forward(ed::normalize(split.images, split.norm));
  }
  const int64_t correct = logits.argmax(1).eq(split.labels).sum().item<int64_t>();
  const double loss = torch::nn::functional::cross_entropy(logits, split.labels).item<double>();
  for (int64_t batch : {1, 5, 23, 100}) {
    const ex::EvalResult r = ex::evaluate(model, split, batch, torch::kCPU);
    EXPECT_EQ(r.correct, correct) << batch;
    EXPECT_DOUBLE_EQ(r.accuracy, 100.0 * double(correct) / 23.0) << batch;
    EXPECT_NEAR(r.loss, loss, 1e-5) << batch;
  }
  EXPECT_FALSE(model->is_training());
}

// A forward in another precision: its logits are converted to fp32 before the loss and the arg-max, and the images
// it gets are the normalised ones of each batch.
TEST(Evaluate, AForwardOfAnyPrecisionIsEvaluatedLikeTheNetwork) {
  torch::manual_seed(8);
  auto model = em::make_resnet(thin_spec(5));
  ed::Split split = random_split(23, 5, 9);
  model->eval();
  int64_t images = 0;
  const ex::EvalResult bf16 = ex::evaluate_forward(
      [&](const torch::Tensor& x) {
        images += x.size(0);
        return model->forward(x).to(torch::kBFloat16);
      },
      split, 5, torch::kCPU);
  EXPECT_EQ(images, 23);
  torch::Tensor logits;
  {
    torch::NoGradGuard g;
    logits = model->forward(ed::normalize(split.images, split.norm)).to(torch::kBFloat16).to(torch::kFloat);
  }
  EXPECT_EQ(bf16.correct, logits.argmax(1).eq(split.labels).sum().item<int64_t>());
  EXPECT_NEAR(bf16.loss, torch::nn::functional::cross_entropy(logits, split.labels).item<double>(), 1e-5);
  const ex::EvalResult fp32 =
      ex::evaluate_forward([&](const torch::Tensor& x) { return model->forward(x); }, split, 5, torch::kCPU);
  const ex::EvalResult net = ex::evaluate(model, split, 5, torch::kCPU);
  EXPECT_EQ(fp32.correct, net.correct);
  EXPECT_DOUBLE_EQ(fp32.loss, net.loss);
}

TEST(Evaluate, RejectsEmptySplitsAndBadBatchSizes) {
  auto model = em::make_resnet(thin_spec(5));
  ed::Split empty = random_split(0, 5, 1);
  try {
    ex::evaluate(model, empty, 4, torch::kCPU);
    FAIL() << "no error for an empty split";
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("random test split"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ex::evaluate(model, random_split(3, 5, 1), 0, torch::kCPU), expctl::Error);
}

// ---- latency -----------------------------------------------------------------------------------------

TEST(Latency, StatisticsOfKnownTimes) {
  const ex::LatencyStats s = ex::latency_stats({5, 1, 3, 2, 4}, 4);
  EXPECT_EQ(s.repeats, 5);
  EXPECT_EQ(s.batch, 4);
  EXPECT_DOUBLE_EQ(s.median_ms, 3);
  EXPECT_DOUBLE_EQ(s.mean_ms, 3);
  EXPECT_DOUBLE_EQ(s.min_ms, 1);
  EXPECT_DOUBLE_EQ(s.max_ms, 5);
  EXPECT_DOUBLE_EQ(s.p95_ms, 5);
  EXPECT_DOUBLE_EQ(s.std_ms, std::sqrt(2.5));
  EXPECT_DOUBLE_EQ(s.per_image_median_ms(), 0.75);
  const ex::LatencyStats even = ex::latency_stats({4, 1, 3, 2}, 1);
  EXPECT_DOUBLE_EQ(even.median_ms, 2.5);
  std::vector<double> twenty;
  for (int i = 1; i <= 20; ++i) twenty.push_back(i);
  EXPECT_DOUBLE_EQ(ex::latency_stats(twenty, 1).p95_ms, 19);  // ⌈0.95·20⌉ = 19th smallest
  EXPECT_DOUBLE_EQ(ex::latency_stats({7}, 1).std_ms, 0);
  EXPECT_THROW(ex::latency_stats({}, 1), expctl::Error);
}

TEST(Latency, MeasuresFinitePositiveTimes) {
  torch::manual_seed(10);
  auto model = em::make_resnet(thin_spec(5));
  model->train();
  auto mean_before = em::state_dict(*model)["bn1.running_mean"].clone();
  ex::LatencyOptions o;
  o.batch = 2;
  o.height = o.width = 16;
  o.warmup = 1;
  o.repeats = 3;
  const ex::LatencyStats s = ex::measure_latency(model, o, torch::kCPU);
  EXPECT_EQ(s.repeats, 3);
  EXPECT_EQ(s.batch, 2);
  for (double v : {s.median_ms, s.mean_ms, s.p95_ms, s.min_ms, s.max_ms}) {
    EXPECT_TRUE(std::isfinite(v));
    EXPECT_GT(v, 0);
  }
  EXPECT_TRUE(std::isfinite(s.std_ms));
  EXPECT_LE(s.min_ms, s.median_ms);
  EXPECT_LE(s.median_ms, s.max_ms);
  EXPECT_LE(s.p95_ms, s.max_ms);
  EXPECT_DOUBLE_EQ(s.per_image_median_ms(), s.median_ms / 2);
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(torch::equal(em::state_dict(*model)["bn1.running_mean"], mean_before));

  o.repeats = 0;
  EXPECT_THROW(ex::measure_latency(model, o, torch::kCPU), expctl::Error);
  o.repeats = 1;
  EXPECT_THROW(ex::measure_latency(model, o, torch::Device("cuda:0")), expctl::Error);  // model is on the CPU
}

// ---- threads, memory, environment -------------------------------------------------------------------

TEST(Environment, ConfigureThreads) {
  EXPECT_GE(ex::usable_cores(), 1);
  EXPECT_EQ(ex::configure_threads(1), 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  const int all = ex::configure_threads(0);
  EXPECT_GE(all, 1);
  EXPECT_EQ(all, ex::usable_cores());
  EXPECT_EQ(at::get_num_threads(), all);
  EXPECT_THROW(ex::configure_threads(-1), expctl::Error);
}

TEST(Environment, DescribesTheMachine) {
  const nlohmann::json env = ex::environment_info(torch::kCPU, 3);
  for (const char* key : {"host", "os", "cpu_model", "logical_cores", "usable_cores", "memory_mb", "libtorch", "blas",
                          "device", "device_name", "threads", "intra_op_threads", "interop_threads", "peak_memory_mb",
                          "load_average_1m", "env_vars", "host_memory"})
    EXPECT_TRUE(env.contains(key)) << key;
  EXPECT_EQ(env["libtorch"], TORCH_VERSION);
  EXPECT_EQ(env["device"], "cpu");
  EXPECT_EQ(env["threads"], 3);
  EXPECT_GE(env["usable_cores"].get<int>(), 1);
  EXPECT_GT(env["memory_mb"].get<int64_t>(), 0);
  EXPECT_GT(ex::peak_memory_mb(), 1.0);
  EXPECT_EQ(env["device_name"], env["cpu_model"]);
}

TEST(Environment, HostMemoryPolicyFollowsTheEnvironment) {
  auto with = [](std::map<std::string, std::string> vars) {
    return ex::decide_host_memory([vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    });
  };
#ifdef __GLIBC__
  ex::HostMemory m = with({});
  EXPECT_TRUE(m.kept);
  EXPECT_EQ(m.setting, "keep");
  EXPECT_NE(m.what.find("EXPCTL_MALLOC=default turns this off"), std::string::npos) << m.what;
  EXPECT_TRUE(with({{"EXPCTL_MALLOC", "keep"}}).kept);
  EXPECT_TRUE(with({{"GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2"}}).kept) << "not a malloc tunable";
  for (const char* off : {"default", "system"}) {
    m = with({{"EXPCTL_MALLOC", off}});
    EXPECT_FALSE(m.kept) << off;
    EXPECT_EQ(m.setting, "default");
  }
  m = with({{"MALLOC_TOP_PAD_", "1073741824"}, {"MALLOC_MMAP_MAX_", "0"}});
  EXPECT_FALSE(m.kept) << "the user's own settings win";
  EXPECT_EQ(m.setting, "environment");
  EXPECT_NE(m.what.find("MALLOC_MMAP_MAX_, MALLOC_TOP_PAD_"), std::string::npos) << m.what;
  EXPECT_EQ(with({{"GLIBC_TUNABLES", "glibc.malloc.mmap_max=0"}}).setting, "environment");
#endif
  try {
    with({{"EXPCTL_MALLOC", "tcmalloc"}});
    ADD_FAILURE() << "an unknown EXPCTL_MALLOC value was accepted";
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("EXPCTL_MALLOC=tcmalloc: unknown value"), std::string::npos) << e.what();
  }
}

// The point of the policy: a block freed and allocated again is not mapped (and zero-filled page by page) again.
TEST(Environment, KeptMemoryIsReusedWithoutNewPageFaults) {
  const ex::HostMemory& m = ex::configure_host_memory();
  if (!m.kept) GTEST_SKIP() << m.what;
  const size_t bytes = size_t(64) << 20;  // above glibc's largest mmap threshold (32 MiB): mmapped by default
  auto touch_and_free = [&] {
    volatile char* p = static_cast<volatile char*>(std::malloc(bytes));
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    std::free(const_cast<char*>(p));
  };
  touch_and_free();  // the first time maps the pages
  const int64_t before = ex::process_usage().minor_faults;
  for (int i = 0; i < 3; ++i) touch_and_free();
  const int64_t faults = ex::process_usage().minor_faults - before;
  // With mmap, each round faults in all 16,384 pages again (49,152 in all).
  EXPECT_LT(faults, 2000) << m.what;
}

TEST(Environment, ProcessUsageCountsCpuTimeAndFaults) {
  const ex::ProcessUsage a = ex::process_usage();
  volatile double x = 0;
  for (int i = 0; i < 20000000; ++i) x = x + 1e-9 * i;
  const ex::ProcessUsage b = ex::process_usage();
  EXPECT_GT(b.user_seconds + b.system_seconds, a.user_seconds + a.system_seconds);
  EXPECT_GE(b.minor_faults, a.minor_faults);
  EXPECT_GT(a.minor_faults, 0) << "a process that loaded LibTorch has faulted pages in";
}
