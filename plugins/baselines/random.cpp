// random: seeded uniform channel scores, the floor every method must beat. See baselines.h.
#include <random>

#include "plugins/baselines/baselines.h"
#include "runner/core/registry.h"

namespace expctl::baselines {

std::vector<torch::Tensor> random_scores(const std::vector<models::ChannelGroup>& groups, uint64_t seed) {
  // std::mt19937_64's output sequence is fixed by the standard (unlike std::uniform_real_distribution's mapping),
  // so the top 53 bits give the same doubles with every standard library.
  std::mt19937_64 engine(seed);
  std::vector<torch::Tensor> out;
  for (const auto& g : groups) {
    torch::Tensor s = torch::empty({g.size}, torch::kDouble);
    auto a = s.accessor<double, 1>();
    for (int64_t c = 0; c < g.size; ++c) a[c] = static_cast<double>(engine() >> 11) * 0x1.0p-53;
    out.push_back(s);
  }
  return out;
}

namespace {

PrunerEntry entry() {
  PrunerEntry e = baseline_entry(
      "random", "R", "structured: remove randomly chosen channels (seeded), the baseline every score must beat", 128,
      "not used: the score needs no data; the prune stage still holds them out",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        const auto seed = r.params && r.params->has("seed") ? r.params->get_int("seed") : 0;
        return random_scores(groups, static_cast<uint64_t>(seed));
      },
      [](const Params&) { return std::string("Random"); });
  e.info.params.add_int("seed", 0, "seed of the random channel scores").min(0);
  return e;
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::baselines
