// Torch files that are damaged or hostile: refused quickly, with bounded memory, naming the file and what is wrong.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <functional>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/models/checkpoint.h"
#include "runner/models/zoo.h"
#include "tests/core/test_util.h"

namespace em = expctl::models;
namespace fs = std::filesystem;
using expctl::test::TempDir;
using expctl::test::error_of;

namespace {

// A zip-format torch file holding `pickle` as data.pkl and no storages.
void write_torch_zip(const fs::path& file, const std::string& pickle) {
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* data, size_t n) -> size_t {
    out.insert(out.end(), static_cast<const char*>(data), static_cast<const char*>(data) + n);
    return n;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
  expctl::write_file_atomic(file, out);
}

// Pickle bytes from opcodes and operands (string literals would stop at NUL and merge hex escapes).
std::string ops(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

long max_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

// Item 2 of issue 12: a pickle under 1 KB whose memo GETs double a structure 100 times.
TEST(HostileTorchFiles, APickleBombIsRefusedQuicklyWithBoundedMemory) {
  TempDir tmp;
  std::string p = ops({0x80, 2, ']', 'q', 0});                                  // PROTO 2, EMPTY_LIST, BINPUT 0
  for (int i = 0; i < 100; ++i) p += ops({'0', 'h', 0, 'h', 0, 0x86, 'q', 0});  // POP; memo[0] = (memo[0], memo[0])
  p += ".";
  ASSERT_LT(p.size(), 1024u);
  write_torch_zip(tmp / "bomb.pt", p);
  const long rss = max_rss_kb();
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { expctl::io::read_torch_file(tmp / "bomb.pt"); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_LT(max_rss_kb() - rss, 64 * 1024) << "KiB more at peak";
  EXPECT_EQ(msg, (tmp / "bomb.pt").string() +
                     ": more than 1000000 pickle objects (shared references expanded) (a limit of expctl's torch-file "
                     "reader: a damaged or hostile file must not exhaust memory)");
}

TEST(HostileTorchFiles, CyclesDepthMemoAndOversizedTensorsHitNamedLimits) {
  TempDir tmp;
  auto refused = [&](const std::string& name, const std::string& pickle) {
    write_torch_zip(tmp / name, pickle);
    return error_of([&] { expctl::io::read_torch_file(tmp / name); });
  };
  // A list that contains itself.
  EXPECT_EQ(refused("cycle.pt", ops({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'})),
            (tmp / "cycle.pt").string() + ": a container contains itself (a cyclic reference)");
  // 300 nested MARKs, and a chain of 300 lists built with APPEND (no MARK).
  EXPECT_NE(refused("marks.pt", ops({0x80, 2}) + std::string(300, '(')).find("data.pkl: nested deeper than 200 levels"),
            std::string::npos);
  std::string chain = ops({0x80, 2});
  for (int i = 0; i < 300; ++i) chain += "]";
  for (int i = 0; i < 299; ++i) chain += "a";
  EXPECT_NE(refused("chain.pt", chain + ".").find(": nested deeper than 200 levels"), std::string::npos);
  // One million and one memo entries (LONG_BINPUT of distinct indices).
  std::string memo = ops({0x80, 2, 'N'});
  for (uint32_t i = 0; i <= 1000000; ++i) memo += std::string("r") + std::string(reinterpret_cast<const char*>(&i), 4);
  EXPECT_NE(refused("memo.pt", memo + ".").find("data.pkl: more than 1000000 memo entries"), std::string::npos);
}

TEST(HostileTorchFiles, TensorsLargerThanTheirStoragesAreRefused) {
  TempDir tmp;
  auto d = expctl::io::PickleValue::dict();
  d.set("w", expctl::io::PickleValue::from(torch::ones({4})));
  expctl::write_file_atomic(tmp / "ok.pt", expctl::io::serialize_torch_file(d));
  caffe2::serialize::PyTorchStreamReader reader((tmp / "ok.pt").string());
  auto [pkl, pkl_size] = reader.getRecord("data.pkl");
  auto [data, data_size] = reader.getRecord("data/0");
  std::string pickle(static_cast<const char*>(pkl.get()), pkl_size);
  // Size (4,) becomes (2^40,) and stride (1,) becomes (0,): a view of element 0 that asks for 4 TiB.
  auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = pickle.find(from);
    ASSERT_NE(at, std::string::npos);
    pickle.replace(at, from.size(), to);
  };
  replace(std::string("(J\x04\x00\x00\x00t", 7), std::string("(\x8a\x08\x00\x00\x00\x00\x00\x01\x00\x00t", 12));
  replace(std::string("(J\x01\x00\x00\x00t", 7), std::string("(J\x00\x00\x00\x00t", 7));
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer([&out](const void* p, size_t n) -> size_t {
    out.insert(out.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
    return n;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeRecord("data/0", data.get(), data_size);
  writer.writeEndOfFile();
  expctl::write_file_atomic(tmp / "huge.pt", out);
  EXPECT_EQ(error_of([&] { expctl::io::read_torch_file(tmp / "huge.pt"); }),
            (tmp / "huge.pt").string() +
                ": 4398046511104 bytes of tensors from 16 bytes of storage: more than storage + 16777216 bytes (a "
                "limit of expctl's torch-file reader: a damaged or hostile file must not exhaust memory)");
}

// Item 4 of issue 12: NaN or Inf in loaded weights is refused, naming the file and the tensor.
TEST(HostileTorchFiles, NonFiniteWeightsAreRefusedNamingFileAndTensor) {
  TempDir tmp;
  em::ResNetSpec spec;
  spec.num_classes = 3;
  spec.stage_widths = {4, 4, 4, 4};
  em::GraphNet model = em::make_resnet(spec);
  {
    torch::NoGradGuard g;
    em::state_dict(*model)["layer1.1.conv2.weight"].view(-1)[5] = std::nan("");
  }
  em::save_checkpoint(tmp / "nan.pt", model);
  EXPECT_EQ(error_of([&] { em::load_checkpoint(tmp / "nan.pt"); }),
            (tmp / "nan.pt").string() +
                ": state_dict: tensor 'layer1.1.conv2.weight' holds NaN (element 5 of 144, 1 not finite): the file is "
                "damaged or comes from a diverged run; refusing to use it");

  auto d = expctl::io::PickleValue::dict();
  d.set("fc.bias", expctl::io::PickleValue::from(torch::tensor({1.0f, -INFINITY, 2.0f})));
  expctl::write_file_atomic(tmp / "inf.pth", expctl::io::serialize_torch_file(d));
  EXPECT_EQ(error_of([&] { expctl::io::read_state_dict_file(tmp / "inf.pth"); }),
            (tmp / "inf.pth").string() +
                ": tensor 'fc.bias' holds -Inf (element 1 of 3, 1 not finite): the file is damaged or comes from a "
                "diverged run; refusing to use it");
}
