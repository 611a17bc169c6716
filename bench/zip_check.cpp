// What checking a checkpoint's zip records costs: a ResNet-18 checkpoint (ImageNet stem, 1000 classes, ~45 MB) is
// saved to DIR, then read `rounds` times each way: the whole read (read_checkpoint: file read + zip checks +
// unpickling), the file read alone, and io::check_zip alone (record bounds + CRC-32 of every record). Prints the
// median of each; asserts nothing.
//
//   build/expctl_bench_zip_check [DIR=/tmp] [rounds=7]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "runner/core/files.h"
#include "runner/io/zip_check.h"
#include "runner/models/checkpoint.h"
#include "runner/models/zoo.h"

using namespace expctl;
using Clock = std::chrono::steady_clock;

namespace {

template <class F>
double median_ms(int rounds, F&& f) {
  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = Clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "/tmp";
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  models::ResNetSpec spec;
  spec.depth = 18;
  spec.num_classes = 1000;
  const std::filesystem::path file = dir / "expctl_bench_zip_check.pt";
  models::save_checkpoint(file, models::make_resnet(spec));
  const double mb = double(std::filesystem::file_size(file)) / 1048576.0;

  std::string bytes;
  const double read = median_ms(rounds, [&] { bytes = RegularFile(file).read_all(); });
  size_t records = 0;
  const double check = median_ms(rounds, [&] { records = io::check_zip(bytes, file.string()).size(); });
  const double whole = median_ms(rounds, [&] { models::read_checkpoint(file); });
  std::printf("checkpoint %s: %.1f MB, %zu zip records\n", file.c_str(), mb, records);
  std::printf("read_checkpoint (all of it): %8.1f ms (median of %d)\n", whole, rounds);
  std::printf("  file read alone:           %8.1f ms\n", read);
  std::printf("  check_zip alone (CRC-32):  %8.1f ms  = %.0f MB/s, %.0f%% of the whole read\n", check,
              mb / (check / 1000.0), 100.0 * check / whole);
  std::filesystem::remove(file);
  return 0;
}
