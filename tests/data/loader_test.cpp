// Loader (order, sharding, augmentation, normalisation) and subsets, on small synthetic splits.
#include "runner/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "runner/core/error.h"

using namespace expctl::data;

namespace {

// N samples of C×H×W random pixels, label i % classes.
Split synthetic(int64_t n, int64_t c = 3, int64_t h = 6, int64_t w = 6, int64_t classes = 10) {
  auto gen = at::detail::createCPUGenerator(1234);
  Split s;
  s.images = torch::randint(0, 256, {n, c, h, w}, gen, torch::kLong).to(torch::kUInt8);
  s.labels = torch::arange(n, torch::kLong).remainder(classes);
  s.num_classes = classes;
  s.source = "synthetic";
  return s;
}

LoaderOptions plain(int64_t batch) {
  LoaderOptions o;
  o.batch_size = batch;
  o.norm = Normalization{};  // pixels / 255 only, so values can be compared with the raw bytes
  return o;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> iota(int64_t n) { return to_vector(torch::arange(n, torch::kLong)); }

// All batches of the current epoch, concatenated.
Batch concat(const Loader& loader) {
  std::vector<torch::Tensor> images, labels, indices;
  for (const Batch& b : loader) {
    images.push_back(b.images);
    labels.push_back(b.labels);
    indices.push_back(b.indices);
  }
  return {torch::cat(images), torch::cat(labels), torch::cat(indices)};
}

}  // namespace

// ---- order --------------------------------------------------------------------------------------------------

TEST(Loader, EverySampleExactlyOncePerEpoch) {
  Split s = synthetic(103);
  Loader loader(s, plain(16));
  EXPECT_EQ(loader.num_batches(), 7);
  EXPECT_EQ(loader.num_samples(), 103);
  for (int64_t epoch : {0, 1, 2}) {
    loader.set_epoch(epoch);
    std::vector<int64_t> sizes;
    for (const Batch& b : loader) {
      sizes.push_back(b.labels.size(0));
      EXPECT_EQ(b.images.dtype(), torch::kFloat);
      EXPECT_EQ(b.images.sizes(), (std::vector<int64_t>{b.labels.size(0), 3, 6, 6}));
    }
    EXPECT_EQ(sizes, (std::vector<int64_t>{16, 16, 16, 16, 16, 16, 7}));
    Batch all = concat(loader);
    EXPECT_EQ(sorted(to_vector(all.indices)), iota(103));
    EXPECT_EQ(to_vector(all.indices), to_vector(loader.epoch_indices()));
    EXPECT_TRUE(torch::equal(all.labels, s.labels.index_select(0, all.indices)));
    EXPECT_TRUE(torch::allclose(all.images, s.images.index_select(0, all.indices).to(torch::kFloat) / 255.0));
  }
}

TEST(Loader, DropLastDropsOnlyTheIncompleteBatch) {
  LoaderOptions o = plain(16);
  o.drop_last = true;
  Loader loader(synthetic(103), o);
  EXPECT_EQ(loader.num_batches(), 6);
  auto idx = to_vector(loader.epoch_indices());
  EXPECT_EQ(idx.size(), 96u);
  EXPECT_EQ(std::set<int64_t>(idx.begin(), idx.end()).size(), 96u);
  for (const Batch& b : loader) EXPECT_EQ(b.labels.size(0), 16);
}

TEST(Loader, SameSeedSameOrderOtherEpochOrSeedOtherOrder) {
  Split s = synthetic(200);
  LoaderOptions o = plain(32);
  o.seed = 5;
  Loader a(s, o), b(s, o);
  const auto e0 = to_vector(a.epoch_indices());
  EXPECT_EQ(e0, to_vector(b.epoch_indices()));
  EXPECT_NE(e0, iota(200));
  a.set_epoch(1);
  const auto e1 = to_vector(a.epoch_indices());
  EXPECT_NE(e0, e1);
  b.set_epoch(1);
  EXPECT_EQ(e1, to_vector(b.epoch_indices()));
  a.set_epoch(0);
  EXPECT_EQ(e0, to_vector(a.epoch_indices()));
  o.seed = 6;
  EXPECT_NE(e0, to_vector(Loader(s, o).epoch_indices()));
  o.shuffle = false;
  EXPECT_EQ(to_vector(Loader(s, o).epoch_indices()), iota(200));
}

TEST(Loader, EmptySplitHasNoBatches) {
  Loader loader(synthetic(0), plain(8));
  EXPECT_EQ(loader.num_batches(), 0);
  EXPECT_EQ(loader.begin(), loader.end());
  EXPECT_EQ(loader.epoch_indices().numel(), 0);
}

// ---- sharding -----------------------------------------------------------------------------------------------

TEST(Loader, ShardsAreDisjointCoveringAndMatchTheGlobalBatches) {
  Split s = synthetic(103);
  for (bool drop_last : {false, true}) {
    LoaderOptions single = plain(24);
    single.drop_last = drop_last;
    single.seed = 3;
    single.augment = {2, true};
    Loader whole(s, single);
    whole.set_epoch(4);
    std::vector<Loader> ranks;
    for (int64_t r = 0; r < 3; ++r) {
      LoaderOptions o = single;
      o.batch_size = 8;
      o.rank = r;
      o.world_size = 3;
      ranks.emplace_back(s, o);
      ranks.back().set_epoch(4);
      EXPECT_EQ(ranks.back().num_batches(), whole.num_batches()) << "rank " << r;
    }
    std::vector<int64_t> all;
    for (const auto& l : ranks) {
      auto idx = to_vector(l.epoch_indices());
      all.insert(all.end(), idx.begin(), idx.end());
    }
    EXPECT_EQ(sorted(all), sorted(to_vector(whole.epoch_indices())));  // disjoint and covering
    if (!drop_last) EXPECT_EQ(sorted(all), iota(103));
    // The ranks' batch j together are the single-process batch j, pixels (augmentation) included.
    for (int64_t j = 0; j < whole.num_batches(); ++j) {
      std::vector<torch::Tensor> images, indices;
      for (const auto& l : ranks) {
        Batch b = l.batch(j);
        if (drop_last) EXPECT_EQ(b.labels.size(0), 8);
        images.push_back(b.images);
        indices.push_back(b.indices);
      }
      Batch g = whole.batch(j);
      EXPECT_TRUE(torch::equal(torch::cat(indices), g.indices)) << "batch " << j;
      EXPECT_TRUE(torch::equal(torch::cat(images), g.images)) << "batch " << j;
    }
  }
}

TEST(Loader, MoreRanksThanSamplesGivesEmptyButAlignedBatches) {
  Split s = synthetic(2);
  std::vector<int64_t> sizes;
  for (int64_t r = 0; r < 3; ++r) {
    LoaderOptions o = plain(1);
    o.rank = r;
    o.world_size = 3;
    o.augment = {1, true};
    Loader l(s, o);
    ASSERT_EQ(l.num_batches(), 1);
    Batch b = l.batch(0);
    EXPECT_EQ(b.images.sizes(), (std::vector<int64_t>{b.labels.size(0), 3, 6, 6}));
    sizes.push_back(b.labels.size(0));
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{0, 1, 1}));
}

// ---- augmentation ---------------------------------------------------------------------------------------------

namespace {
// Slow per-sample reference of crop_flip: pad one image, slice the window, mirror it.
torch::Tensor reference_crop_flip(const torch::Tensor& images, const torch::Tensor& top, const torch::Tensor& left,
                                  const torch::Tensor& flip, int64_t p) {
  std::vector<torch::Tensor> out;
  const int64_t h = images.size(2), w = images.size(3);
  for (int64_t b = 0; b < images.size(0); ++b) {
    auto padded = torch::zeros({images.size(1), h + 2 * p, w + 2 * p}, images.options());
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        padded.select(1, y + p).select(1, x + p).copy_(images[b].select(1, y).select(1, x));
    auto window = padded.narrow(1, top[b].item<int64_t>(), h).narrow(2, left[b].item<int64_t>(), w);
    out.push_back(flip[b].item<bool>() ? window.flip({2}) : window);
  }
  return torch::stack(out);
}
}  // namespace

TEST(Augmentation, CropFlipMatchesPerSampleReference) {
  auto gen = at::detail::createCPUGenerator(99);
  auto images = torch::randint(0, 256, {12, 3, 5, 7}, gen, torch::kLong).to(torch::kUInt8);
  for (int64_t p : {0, 1, 3}) {
    auto top = torch::randint(0, 2 * p + 1, {12}, gen, torch::kLong);
    auto left = torch::randint(0, 2 * p + 1, {12}, gen, torch::kLong);
    auto flip = torch::randint(0, 2, {12}, gen, torch::kLong).to(torch::kBool);
    auto got = crop_flip(images, top, left, flip, p);
    ASSERT_EQ(got.sizes(), images.sizes());
    EXPECT_EQ(got.dtype(), torch::kUInt8);
    EXPECT_TRUE(torch::equal(got, reference_crop_flip(images, top, left, flip, p))) << "padding " << p;
  }
  // No padding, no flip: the identity.
  auto zero = torch::zeros({12}, torch::kLong);
  EXPECT_TRUE(torch::equal(crop_flip(images, zero, zero, zero.to(torch::kBool), 0), images));
}

TEST(Augmentation, LoaderCropsAreTrueSubWindowsAndReproducible) {
  const int64_t p = 2, n = 40;
  Split s = synthetic(n, 2, 5, 5);
  LoaderOptions o = plain(16);
  o.seed = 11;
  o.augment = {p, true};
  Loader loader(s, o);
  Batch all = concat(loader);
  auto pixels = (all.images * 255).round().to(torch::kUInt8);
  ASSERT_EQ(pixels.sizes(), (std::vector<int64_t>{n, 2, 5, 5}));
  // Brute force: each output must equal one of the (2p+1)² × 2 windows of its own padded source image.
  std::set<std::tuple<int64_t, int64_t, bool>> seen;
  for (int64_t i = 0; i < n; ++i) {
    auto src = s.images[all.indices[i].item<int64_t>()].unsqueeze(0);
    bool found = false;
    for (int64_t t = 0; t <= 2 * p && !found; ++t)
      for (int64_t l = 0; l <= 2 * p && !found; ++l)
        for (bool f : {false, true}) {
          auto cand = reference_crop_flip(src, torch::tensor({t}), torch::tensor({l}), torch::tensor({f}), p);
          if (torch::equal(cand[0], pixels[i])) {
            seen.insert({t, l, f});
            found = true;
            break;
          }
        }
    EXPECT_TRUE(found) << "sample " << i << " is not a window of its padded source";
  }
  EXPECT_GT(seen.size(), 10u);  // offsets and flips really vary
  // Same seed and epoch → same pixels; another epoch → other pixels.
  Loader again(s, o);
  EXPECT_TRUE(torch::equal(concat(again).images, all.images));
  again.set_epoch(1);
  Batch e1 = concat(again);
  auto order = std::get<1>(e1.indices.sort());
  auto order0 = std::get<1>(all.indices.sort());
  EXPECT_FALSE(torch::equal(e1.images.index_select(0, order), all.images.index_select(0, order0)));
}

// ---- normalisation --------------------------------------------------------------------------------------------

TEST(Normalisation, AppliesPerChannelMeanAndStd) {
  Split s = synthetic(4, 3, 2, 2);
  s.images.select(1, 0).fill_(255);
  s.images.select(1, 1).fill_(0);
  s.images.select(1, 2).fill_(51);  // 0.2
  s.norm = cifar10_info().norm;
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  Batch b = Loader(s, o).batch(0);  // norm unset: the split's (CIFAR-10) statistics
  const auto& n = cifar10_info().norm;
  EXPECT_NEAR(b.images[0][0][0][0].item<float>(), (1.0f - n.mean[0]) / n.std[0], 1e-5);
  EXPECT_NEAR(b.images[1][1][1][0].item<float>(), (0.0f - n.mean[1]) / n.std[1], 1e-5);
  EXPECT_NEAR(b.images[3][2][0][1].item<float>(), (0.2f - n.mean[2]) / n.std[2], 1e-5);
  EXPECT_NEAR(b.images[0][0][0][0].item<float>(), (1.0f - 0.4914f) / 0.2470f, 1e-5);
  // Explicit statistics override the split's.
  o.norm = Normalization{{0.5f, 0.5f, 0.5f}, {0.25f, 0.5f, 1.0f}};
  b = Loader(s, o).batch(0);
  EXPECT_FLOAT_EQ(b.images[2][0][1][1].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(b.images[2][1][1][1].item<float>(), -1.0f);
  EXPECT_NEAR(b.images[2][2][1][1].item<float>(), -0.3f, 1e-6);
}

TEST(Normalisation, StandardStatisticsAreData) {
  EXPECT_EQ(cifar10_info().norm.mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f}));
  EXPECT_EQ(cifar10_info().norm.std, (std::vector<float>{0.2470f, 0.2435f, 0.2616f}));
  EXPECT_EQ(fashion_mnist_info().norm.mean, (std::vector<float>{0.2860f}));
  EXPECT_EQ(fashion_mnist_info().norm.std, (std::vector<float>{0.3530f}));
  EXPECT_EQ(cifar10_info().channels, 3);
  EXPECT_EQ(fashion_mnist_info().height, 28);
}

TEST(Normalisation, ComputedStatistics) {
  Split s = synthetic(8, 2, 2, 2);
  s.images.select(1, 0).fill_(51);  // mean 0.2, std 0
  s.images.select(1, 1).copy_(torch::tensor({0, 255}).to(torch::kUInt8).repeat({8, 2, 1}).view({8, 2, 2}));
  Normalization n = compute_normalization(s);
  EXPECT_NEAR(n.mean[0], 0.2f, 1e-6);
  EXPECT_NEAR(n.std[0], 0.0f, 1e-6);
  EXPECT_NEAR(n.mean[1], 0.5f, 1e-6);
  EXPECT_NEAR(n.std[1], 0.5f, 1e-6);
}

TEST(Loader, RejectsInvalidOptions) {
  Split s = synthetic(10);
  auto bad = [&](auto change) {
    LoaderOptions o = plain(4);
    change(o);
    EXPECT_THROW(Loader(s, o), expctl::Error);
  };
  bad([](LoaderOptions& o) { o.batch_size = 0; });
  bad([](LoaderOptions& o) { o.world_size = 0; });
  bad([](LoaderOptions& o) { o.world_size = 2, o.rank = 2; });
  bad([](LoaderOptions& o) { o.augment.crop_padding = -1; });
  bad([](LoaderOptions& o) { o.norm = Normalization{{0.5f}, {0.5f}}; });
  bad([](LoaderOptions& o) { o.norm = Normalization{{0, 0, 0}, {1, 0, 1}}; });
}

// ---- subsets --------------------------------------------------------------------------------------------------

TEST(Subsets, BalancedOrderPrefixesAreBalanced) {
  Split s = synthetic(103);
  auto order = balanced_order(s, 1);
  EXPECT_EQ(sorted(to_vector(order)), iota(103));
  EXPECT_EQ(to_vector(order), to_vector(balanced_order(s, 1)));
  EXPECT_NE(to_vector(order), to_vector(balanced_order(s, 2)));
  for (int64_t k : {10, 37, 100}) {
    auto counts = to_vector(torch::bincount(s.labels.index_select(0, order.narrow(0, 0, k)), {}, 10));
    EXPECT_LE(*std::max_element(counts.begin(), counts.end()) - *std::min_element(counts.begin(), counts.end()), 1)
        << "k = " << k;
  }
  // A rare class runs out and the others stay balanced.
  Split skewed = synthetic(40, 1, 2, 2, 4);
  skewed.labels = torch::cat({torch::zeros({2}, torch::kLong), torch::arange(38, torch::kLong).remainder(3) + 1});
  auto counts = to_vector(torch::bincount(skewed.labels.index_select(0, balanced_order(skewed, 0).narrow(0, 0, 20))));
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 6, 6, 6}));
}

TEST(Subsets, SplitOffIsDisjointCoveringAndSeeded) {
  Split s = synthetic(103);
  auto [calib, rest] = split_off(s, 23, 9);
  EXPECT_EQ(calib.size(), 23);
  EXPECT_EQ(rest.size(), 80);
  auto [ci, ri] = split_indices(s, 23, 9);
  std::vector<int64_t> all = to_vector(ci), r = to_vector(ri);
  all.insert(all.end(), r.begin(), r.end());
  EXPECT_EQ(sorted(all), iota(103));
  EXPECT_TRUE(torch::equal(calib.images, s.images.index_select(0, ci)));
  EXPECT_TRUE(torch::equal(rest.labels, s.labels.index_select(0, ri)));
  EXPECT_EQ(calib.num_classes, 10);
  EXPECT_EQ(calib.source, "synthetic, subset of 23 class-balanced samples (seed 9)");
  EXPECT_EQ(rest.source, "synthetic, the 80 samples outside the subset of 23 class-balanced samples (seed 9)");
  EXPECT_TRUE(torch::equal(split_indices(s, 23, 9).first, ci));
  EXPECT_FALSE(torch::equal(split_indices(s, 23, 10).first, ci));
  EXPECT_EQ(split_off(s, 0, 1).first.size(), 0);
  EXPECT_EQ(split_off(s, 103, 1).second.size(), 0);
  EXPECT_THROW(split_off(s, 104, 1), expctl::Error);
  EXPECT_THROW(subset(s, -1, 1), expctl::Error);
}

TEST(Subsets, TakingAWholeSubsetDescribesItOnce) {
  // A test_subset of 40 calibrated on all 40: the caption said "subset of 40 ... (seed 0), subset of 40 ...".
  const Split s = subset(synthetic(103), 40, 0);
  ASSERT_EQ(s.source, "synthetic, class-balanced subset of 40 samples (seed 0)");
  auto [calib, rest] = split_off(s, 40, 0);
  EXPECT_EQ(calib.size(), 40);
  EXPECT_EQ(calib.source, s.source);
  EXPECT_EQ(rest.size(), 0);
  EXPECT_EQ(split_off(s, 39, 0).first.source, s.source + ", subset of 39 class-balanced samples (seed 0)");
}

TEST(Subsets, SubsetAndSelect) {
  Split s = synthetic(103);
  Split q = subset(s, 50, 4);
  EXPECT_EQ(q.size(), 50);
  EXPECT_EQ(to_vector(torch::bincount(q.labels, {}, 10)), std::vector<int64_t>(10, 5));
  Split sel = select(s, torch::tensor({5, 2, 5}), "picked");
  EXPECT_EQ(to_vector(sel.labels), (std::vector<int64_t>{5, 2, 5}));
  EXPECT_TRUE(torch::equal(sel.images[1], s.images[2]));
  EXPECT_EQ(sel.source, "synthetic, picked");
  EXPECT_THROW(select(s, torch::tensor({103}), ""), expctl::Error);
  EXPECT_THROW(select(s, torch::tensor({-1}), ""), expctl::Error);
}

TEST(Seeds, DerivedSeedsDiffer) {
  std::set<uint64_t> seeds;
  for (uint64_t seed : {0, 1})
    for (uint64_t a : {0, 1, 2})
      for (uint64_t b : {0, 1, 2}) seeds.insert(derive_seed(seed, a, b));
  EXPECT_EQ(seeds.size(), 18u);
  EXPECT_EQ(derive_seed(3, 1, 2, 3), derive_seed(3, 1, 2, 3));
}
