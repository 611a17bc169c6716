// random: seeded uniform channel scores, the floor every method must beat. See baselines.h.
#include <random>

#include "plugins/baselines/baselines.h"
#include "runner/core/options_binder.h"
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

struct Options {
  int64_t seed = 0;  ///< seeds the channel scores
};

const OptionBinder<Options>& binder() {
  static const OptionBinder<Options> b = [] {
    OptionBinder<Options> b;
    b.add(&Options::seed, "seed", "seed of the random channel scores").min(0);
    return b;
  }();
  return b;
}

PrunerEntry entry() {
  PrunerEntry e = baseline_entry(
      "random", "R", "structured: remove randomly chosen channels (seeded), the baseline every score must beat", 128,
      "not used: the score needs no data; the prune stage still holds them out",
      [](PruneRequest& r, const std::vector<models::ChannelGroup>& groups) {
        const Options o = r.params ? binder().read(*r.params, "random") : Options{};
        return random_scores(groups, static_cast<uint64_t>(o.seed));
      },
      [](const Params&) { return std::string("Random"); });
  e.info.params.append(binder().table());
  return e;
}

}  // namespace

EXPCTL_REGISTER(PrunerRegistry, entry());

}  // namespace expctl::baselines
