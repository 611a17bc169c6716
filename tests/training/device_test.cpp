// The training, evaluation, latency and data paths on every device this build can use: the CPU always, CUDA
// when LibTorch sees a GPU (bf16 autocast, channels_last, cuDNN benchmark: the paths only a GPU exercises).
// On a machine without CUDA the "cuda" cases are skipped, saying so; bench/gpu.sh runs them on a GPU
// (ctest -R OnDevice).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "runner/core/compat.h"
#include "runner/data/loader.h"
#include "runner/metrics/metrics.h"
#include "runner/models/checkpoint.h"
#include "tests/training/toy_training.h"

using namespace expctl;
using namespace expctl::test;

namespace {

class OnDevice : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda" && !torch::cuda::is_available())
      GTEST_SKIP() << "LibTorch " << compat::torch_version() << " sees no CUDA device here";
    device_ = torch::Device(GetParam());
  }
  bool cuda() const { return device_.is_cuda(); }
  torch::Device device_{torch::kCPU};
};

// Relative L2 distance of two tensors (on any devices).
double relative_error(const torch::Tensor& a, const torch::Tensor& reference) {
  auto r = reference.to(torch::kCPU, torch::kDouble), x = a.to(torch::kCPU, torch::kDouble);
  return ((x - r).norm() / r.norm()).item<double>();
}

// 4 classes of 8x8 gray noise whose class is the brightness band: a global-average-pooled network learns it in
// a few epochs (the quadrant task of toy_split() needs positions, which such a small network learns slowly).
data::Split brightness_split(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  data::Split s;
  s.labels = torch::randint(0, 4, {n}, torch::kLong);
  s.images = (torch::randint(0, 40, {n, 1, 8, 8}, torch::kLong) + 70 * s.labels.view({n, 1, 1, 1})).to(torch::kUInt8);
  s.num_classes = 4;
  s.source = "brightness bands";
  return s;
}

models::GraphNet cifar_resnet18() {
  torch::manual_seed(11);
  models::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = models::Stem::Cifar;
  return models::make_resnet(spec);
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, OnDevice, testing::Values("cpu", "cuda"),
                         [](const testing::TestParamInfo<std::string>& i) { return i.param; });

// train() on the device: it learns the toy task, keeps masked weights at exactly zero, leaves 4-D weights
// channels_last on CUDA, reports the GPU's peak memory there (and none on the CPU), and writes checkpoints that
// load on the CPU and give the same accuracy there.
TEST_P(OnDevice, TrainingLearnsKeepsMasksAndWritesPortableCheckpoints) {
  Job j(4);
  j.train = brightness_split(512, 1);
  j.test = brightness_split(128, 2);
  j.on(device_);
  const std::string masked = "layer2.0.conv1.weight";
  torch::manual_seed(9);
  j.job.masks[masked] = torch::rand(j.job.model->named_parameters()[masked].sizes()) > 0.5;

  TrainResult r = train(j.job);
  ASSERT_EQ(r.history.size(), 4u);
  for (const auto& e : r.history) EXPECT_TRUE(std::isfinite(e.train_loss)) << "epoch " << e.epoch;
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_GE(r.history.back().test_accuracy, 90.0) << "the CPU reaches 100% in 4 epochs";

  auto params = j.job.model->named_parameters();
  EXPECT_EQ(params[masked].device().type(), device_.type());
  auto pruned = j.job.masks[masked].logical_not().to(device_);
  EXPECT_EQ(params[masked].masked_select(pruned).abs().max().item<float>(), 0.0f);
  if (cuda())
    EXPECT_TRUE(params["layer1.0.conv1.weight"].is_contiguous(at::MemoryFormat::ChannelsLast))
        << "CUDA training converts 4-D weights to channels_last";

  const metrics::CudaMemory gpu = metrics::cuda_peak_memory(device_);
  EXPECT_EQ(gpu.known, cuda()) << "a CUDA build reports the allocator's peaks (CMake option EXPCTL_CUDA_STATS)";
  if (gpu.known) {
    EXPECT_GT(gpu.peak_allocated_mb, 0.0);
    EXPECT_GE(gpu.peak_reserved_mb, gpu.peak_allocated_mb);
  }

  models::Checkpoint ck;
  models::GraphNet loaded = models::load_checkpoint(j.job.checkpoint_path(4), &ck);
  data::Split test_cpu = j.test.to(torch::kCPU);
  const double on_cpu = metrics::evaluate(loaded, test_cpu, 64, torch::kCPU).accuracy;
  const double on_device = metrics::evaluate(j.job.model, j.test, 64, device_).accuracy;
  EXPECT_NEAR(on_cpu, on_device, 100.0 / 128 + 1e-9) << "at most one of 128 test images may differ";
  EXPECT_DOUBLE_EQ(ck.meta["accuracy"].get<double>(), r.history.back().test_accuracy);
}

// A run continues on the device from a checkpoint written on the CPU: the optimizer's momentum is loaded beside the
// parameters, wherever the state was saved.
TEST_P(OnDevice, ResumesOnTheDeviceFromACpuCheckpoint) {
  Job j(2);
  train(j.job);
  std::filesystem::remove(j.job.checkpoint_path(2));
  std::filesystem::remove(models::training_state_path(j.job.checkpoint_path(2)));
  j.job.model = tiny_model();
  j.on(device_);
  TrainResult r = train(j.job);
  EXPECT_EQ(r.resumed_from, 1);
  ASSERT_EQ(r.history.size(), 2u);
  EXPECT_TRUE(std::isfinite(r.history.back().train_loss));
  EXPECT_EQ(j.job.model->named_parameters()["fc.weight"].device().type(), device_.type());
}

// The forward pass on the device matches the CPU's fp32 result: exactly enough in fp32 (cuDNN may use TF32
// on Hopper/Ampere), within bf16's precision under autocast with channels_last inputs, as training runs it.
TEST_P(OnDevice, ForwardMatchesTheCpuInFp32AndUnderBf16Autocast) {
  models::GraphNet net = cifar_resnet18();
  net->eval();
  torch::manual_seed(12);
  auto x = torch::randn({16, 3, 32, 32});
  torch::Tensor reference;
  {
    torch::InferenceMode g;
    reference = net->forward(x);
  }
  net->to(device_);
  torch::InferenceMode g;
  auto xd = x.to(device_).contiguous(at::MemoryFormat::ChannelsLast);
  // CUDA "fp32" convolutions may use TF32 on Ampere and later (LibTorch's default for cuDNN): ~1e-3 per layer.
  EXPECT_LT(relative_error(net->forward(xd), reference), cuda() ? 2e-2 : 1e-5);
  if (!cuda()) return;  // autocast below is CUDA's
  torch::Tensor low;
  {
    compat::Autocast bf16(c10::DeviceType::CUDA, at::kBFloat16);
    low = net->forward(xd);
  }
  EXPECT_EQ(low.scalar_type(), at::kBFloat16) << "autocast did not run the network in bf16";
  EXPECT_LT(relative_error(low, reference), 0.1);
}

// Autocast caches the bf16 copy of each weight; a scope that ends must drop the cache, or the next step's forward
// would run with the old weights after the optimizer changed them in place.
TEST_P(OnDevice, AutocastSeesWeightsChangedInPlaceBetweenScopes) {
  if (!cuda()) GTEST_SKIP() << "autocast is CUDA's here";
  torch::manual_seed(13);
  torch::nn::Linear fc(16, 4);
  fc->to(device_);
  auto x = torch::randn({8, 16}, torch::TensorOptions().device(device_));
  torch::Tensor before, after;
  {
    compat::Autocast bf16(c10::DeviceType::CUDA, at::kBFloat16);
    before = fc->forward(x);
  }
  {
    torch::NoGradGuard no_grad;
    fc->weight.mul_(-3.0);  // as an optimizer step does: in place, same tensor
  }
  {
    compat::Autocast bf16(c10::DeviceType::CUDA, at::kBFloat16);
    after = fc->forward(x);
  }
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = fc->forward(x);
  }
  EXPECT_LT(relative_error(after, expected), 2e-2) << "the second scope ran with stale bf16 weights";
  EXPECT_GT(relative_error(before, expected), 0.5);
}

// The loader draws its permutation and augmentation on the CPU, so a split on CUDA yields the same batches.
TEST_P(OnDevice, LoaderYieldsTheSameBatchesAsOnTheCpu) {
  if (!cuda()) GTEST_SKIP() << "compares CUDA batches with the CPU's";
  data::Split cpu = toy_split(100, 3);
  data::Split dev = cpu.to(device_);
  data::LoaderOptions o;
  o.batch_size = 32;
  o.seed = 4;
  o.augment = {2, true};
  data::Loader a(cpu, o), b(dev, o);
  for (int64_t epoch : {0, 1}) {
    a.set_epoch(epoch);
    b.set_epoch(epoch);
    ASSERT_EQ(a.num_batches(), b.num_batches());
    for (int64_t i = 0; i < a.num_batches(); ++i) {
      data::Batch x = a.batch(i), y = b.batch(i);
      EXPECT_EQ(y.images.device().type(), torch::kCUDA);
      EXPECT_TRUE(torch::equal(x.indices, y.indices.cpu())) << "epoch " << epoch << " batch " << i;
      EXPECT_TRUE(torch::equal(x.labels, y.labels.cpu()));
      EXPECT_TRUE(torch::allclose(x.images, y.images.cpu(), 1e-5, 1e-5)) << "epoch " << epoch << " batch " << i;
    }
  }
}

// measure_latency() on the device gives consistent statistics for batch 1 and a large batch.
TEST_P(OnDevice, LatencyStatisticsAreConsistent) {
  models::GraphNet net = cifar_resnet18();
  net->to(device_);
  for (int64_t batch : {1, 32}) {
    metrics::LatencyOptions o;
    o.batch = batch;
    o.height = o.width = 32;
    o.warmup = 2;
    o.repeats = 5;
    metrics::LatencyStats t = metrics::measure_latency(net, o, device_);
    EXPECT_EQ(t.batch, batch);
    EXPECT_EQ(t.repeats, 5);
    EXPECT_GT(t.min_ms, 0.0);
    EXPECT_LE(t.min_ms, t.median_ms);
    EXPECT_LE(t.median_ms, t.p95_ms);
    EXPECT_LE(t.p95_ms, t.max_ms);
  }
  EXPECT_TRUE(net->is_training()) << "the train/eval mode is restored";
}
