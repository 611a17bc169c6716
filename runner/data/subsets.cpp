// Seeded subsets of a split: quick-run subsets and calibration / held-out pairs.
#include <ATen/CPUGeneratorImpl.h>

#include "runner/core/error.h"
#include "runner/data/loader.h"
#include "runner/data/split.h"

namespace expctl::data {

torch::Tensor balanced_order(const Split& split, uint64_t seed) {
  const int64_t n = split.size();
  // Drawn on the CPU so that the choice does not depend on the device the split lives on.
  auto gen = at::detail::createCPUGenerator(derive_seed(seed, 0x5e1ec7));
  auto perm = torch::randperm(n, gen, torch::kLong);
  if (n == 0) return perm;
  auto labels = split.labels.to(torch::kCPU).index_select(0, perm);
  // Rank of each sample among the earlier samples of its class in the permutation: round r takes the r-th
  // sample of every class. A one-hot cumulative sum computes it without a loop; N × classes is small.
  const int64_t classes = std::max<int64_t>(split.num_classes, labels.max().item<int64_t>() + 1);
  auto onehot = torch::zeros({n, classes}, torch::kLong);
  onehot.scatter_(1, labels.unsqueeze(1), 1);
  auto round = onehot.cumsum(0).gather(1, labels.unsqueeze(1)).squeeze(1) - 1;
  // Within a round keep the permutation's order: key = round * n + position is unique, so any sort is stable.
  auto key = round * n + torch::arange(n, torch::kLong);
  return perm.index_select(0, std::get<1>(key.sort()));
}

std::pair<torch::Tensor, torch::Tensor> split_indices(const Split& split, int64_t k, uint64_t seed) {
  const int64_t n = split.size();
  if (k < 0 || k > n)
    throw Error(split.source + ": cannot take " + std::to_string(k) + " samples from a split of " + std::to_string(n));
  auto order = balanced_order(split, seed);
  auto chosen = std::get<0>(order.narrow(0, 0, k).sort());
  auto rest = std::get<0>(order.narrow(0, k, n - k).sort());
  return {chosen, rest};
}

Split select(const Split& split, const torch::Tensor& indices, const std::string& note) {
  auto idx = indices.to(split.labels.device(), torch::kLong).reshape({-1});
  if (idx.numel() > 0) {
    const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
    if (lo < 0 || hi >= split.size())
      throw Error(split.source + ": sample index " + std::to_string(lo < 0 ? lo : hi) + " out of range [0, " +
                  std::to_string(split.size()) + ")");
  }
  Split out = split;
  if (split.images.defined()) out.images = split.images.index_select(0, idx);
  if (split.stream_index.defined()) out.stream_index = split.stream_index.index_select(0, idx.to(torch::kCPU));
  out.labels = split.labels.index_select(0, idx);
  if (!note.empty()) out.source += ", " + note;
  return out;
}

Split subset(const Split& split, int64_t n, uint64_t seed) {
  auto chosen = split_indices(split, n, seed).first;
  return select(split, chosen,
                "class-balanced subset of " + std::to_string(n) + " samples (seed " + std::to_string(seed) + ")");
}

std::pair<Split, Split> split_off(const Split& split, int64_t k, uint64_t seed) {
  auto [chosen, rest] = split_indices(split, k, seed);
  const std::string how = std::to_string(k) + " class-balanced samples (seed " + std::to_string(seed) + ")";
  // Taking every sample selects nothing: the split's own description says all there is (a test_subset of 512
  // calibrated on all 512 read "subset of 512 ..., subset of 512 ..." in the report).
  if (k == split.size()) return {select(split, chosen, ""), select(split, rest, "")};
  return {select(split, chosen, "subset of " + how),
          select(split, rest, "the " + std::to_string(rest.numel()) + " samples outside the subset of " + how)};
}

}  // namespace expctl::data
