// Zip-format model files (checkpoints, training states, TorchScript) that are damaged or hostile: a flipped byte
// in tensor data, a record declaring gigabytes, a folder or FIFO given as a file; and `expctl export` asked to
// write over a checkpoint. Each is refused naming the file (and the record), before LibTorch allocates anything
// from a declared size, and nothing is lost.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <zlib.h>

#include <chrono>
#include <cmath>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/io/zip_check.h"
#include "runner/models/checkpoint.h"
#include "runner/models/torchscript_export.h"
#include "runner/models/torchscript_import.h"
#include "runner/models/zoo.h"
#include "tests/core/test_util.h"

namespace em = expctl::models;
namespace fs = std::filesystem;
using expctl::test::error_of;
using expctl::test::TempDir;

namespace {

em::GraphNet tiny_resnet() {
  em::ResNetSpec spec;
  spec.num_classes = 3;
  spec.stage_widths = {4, 4, 4, 4};
  return em::make_resnet(spec);
}

// The record with the most data: a tensor's storage.
// The largest record whose name holds `part` ("" = any).
expctl::io::ZipRecord largest_record(const std::string& bytes, const fs::path& file, const std::string& part = "") {
  auto records = expctl::io::check_zip(bytes, file.string());
  expctl::io::ZipRecord best;
  for (const auto& r : records)
    if (r.compressed_size > best.compressed_size && r.name.find(part) != std::string::npos) best = r;
  return best;
}

void le(std::string& s, uint64_t v, int n) {
  for (int k = 0; k < n; ++k) s.push_back(char((v >> (8 * k)) & 0xff));
}

// A zip of one record `name` holding `data` (already compressed with `method`), whose central directory declares
// `declared` uncompressed bytes in a zip64 field (so it may exceed 4 GiB) and the CRC-32 `crc`.
std::string zip_with_record(const std::string& name, uint16_t method, const std::string& data, uint64_t declared,
                            uint32_t crc) {
  std::string z;
  le(z, 0x04034b50, 4), le(z, 45, 2), le(z, 0, 2), le(z, method, 2), le(z, 0, 4), le(z, crc, 4);
  le(z, data.size(), 4), le(z, declared > 0xFFFFFFFEu ? 0xFFFFFFFFu : declared, 4);
  le(z, name.size(), 2), le(z, 0, 2);
  z += name + data;
  const uint64_t cd = z.size();
  le(z, 0x02014b50, 4), le(z, 45, 2), le(z, 45, 2), le(z, 0, 2), le(z, method, 2), le(z, 0, 4), le(z, crc, 4);
  le(z, 0xFFFFFFFFu, 4), le(z, 0xFFFFFFFFu, 4);  // both sizes in the zip64 field
  le(z, name.size(), 2), le(z, 20, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 2), le(z, 0, 4), le(z, 0, 4);
  z += name;
  le(z, 1, 2), le(z, 16, 2), le(z, declared, 8), le(z, data.size(), 8);
  const uint64_t cd_size = z.size() - cd;
  le(z, 0x06054b50, 4), le(z, 0, 2), le(z, 0, 2), le(z, 1, 2), le(z, 1, 2), le(z, cd_size, 4), le(z, cd, 4);
  le(z, 0, 2);
  return z;
}

std::string deflate_raw(const std::string& in) {
  z_stream s{};
  deflateInit2(&s, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, in.size()), '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  s.avail_in = uInt(in.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = uInt(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

long max_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

}  // namespace

// A bit flip in a tensor's bytes: the record's CRC-32 no longer matches; the checkpoint is refused naming the
// file and the record, through the reader and through `expctl export`, and the file is left as it was.
TEST(HostileZipFiles, AFlippedByteInTensorDataIsFoundByItsCrc) {
  TempDir tmp;
  const fs::path ck = tmp / "ck.pt";
  em::save_checkpoint(ck, tiny_resnet());
  std::string bytes = expctl::test::read_file(ck);
  const auto rec = largest_record(bytes, ck, "/data/");  // a tensor's bytes (a tiny model's pickle is larger)
  ASSERT_NE(rec.name.find("/data/"), std::string::npos) << rec.name;
  bytes[rec.data_offset + rec.compressed_size / 2] ^= 0x10;
  expctl::test::write_file(ck, bytes);
  const std::string expected = ck.string() + ": record '" + rec.name + "': CRC-32 is ";
  const std::string msg = error_of([&] { em::read_checkpoint(ck); });
  EXPECT_EQ(msg.rfind(expected, 0), 0u) << msg;
  EXPECT_NE(msg.find("the file is damaged"), std::string::npos) << msg;

  auto r = expctl::test::run_expctl("export ck.pt -o out.pt", tmp.path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ck.pt: record '" + rec.name + "': CRC-32 is "), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(tmp / "out.pt"));
  EXPECT_EQ(expctl::test::read_file(ck), bytes) << "the damaged checkpoint is kept as it was";

  // A training state (a LibTorch archive) is checked the same way.
  torch::nn::Linear lin(2, 2);
  torch::optim::SGD opt(lin->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  em::save_training_state(tmp / "t.pt", opt, 3);
  const fs::path state = em::training_state_path(tmp / "t.pt");
  std::string sbytes = expctl::test::read_file(state);
  const auto srec = largest_record(sbytes, state);
  sbytes[srec.data_offset + srec.compressed_size / 2] ^= 0x01;
  expctl::test::write_file(state, sbytes);
  EXPECT_EQ(error_of([&] { em::peek_training_state(tmp / "t.pt"); }).rfind(state.string() + ": record '", 0), 0u);
}

// Records whose declared size the file cannot hold: refused before LibTorch allocates it.
TEST(HostileZipFiles, DeclaredSizesBeyondTheFilesLimitsAreRefusedBeforeAllocating) {
  TempDir tmp;
  const std::string payload(4096, 'x');
  const std::string deflated = deflate_raw(payload);
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(payload.data()), uInt(payload.size())));
  const uint64_t eight_gib = uint64_t(8) << 30;
  expctl::test::write_file(tmp / "deflated.pt", zip_with_record("archive/data/0", 8, deflated, eight_gib, crc));
  expctl::test::write_file(tmp / "stored.pt", zip_with_record("archive/data/0", 0, payload, eight_gib, crc));
  // The honest file passes the check (the forgery is only the declared size).
  EXPECT_NO_THROW(expctl::io::check_zip(zip_with_record("archive/data/0", 8, deflated, payload.size(), crc), "ok"));
  EXPECT_EQ(error_of([&] {
              expctl::io::check_zip(zip_with_record("archive/data/0", 8, deflated, payload.size() + 1, crc), "f");
            }),
            "f: record 'archive/data/0': inflates to 4096 bytes, but declares 4097");

  const long rss = max_rss_kb();
  const std::string deflated_msg = (tmp / "deflated.pt").string() + ": record 'archive/data/0': declares 8589934592 " +
                                   "bytes from " + std::to_string(deflated.size()) +
                                   " deflated bytes, more than deflate's largest ratio (1032:1) allows: a damaged or "
                                   "hostile file";
  EXPECT_EQ(error_of([&] { expctl::io::read_torch_file(tmp / "deflated.pt"); }), deflated_msg);
  EXPECT_EQ(error_of([&] { em::import_torchscript(tmp / "deflated.pt", {3, 8, 8}); }), deflated_msg);
  EXPECT_EQ(error_of([&] { expctl::io::read_torch_file(tmp / "stored.pt"); }),
            (tmp / "stored.pt").string() +
                ": record 'archive/data/0': is stored (not compressed) but declares 8589934592 bytes for 4096 bytes of "
                "data");
  EXPECT_LT(max_rss_kb() - rss, 64 * 1024) << "KiB more at peak";
}

// A folder, a FIFO or a link to /dev/zero given as a checkpoint is named for what it is, and never blocks.
TEST(HostileZipFiles, NonRegularFilesGivenAsCheckpointsAreNamed) {
  TempDir tmp;
  fs::create_directory(tmp / "dir.pt");
  ASSERT_EQ(::mkfifo((tmp / "fifo.pt").c_str(), 0600), 0);
  fs::create_symlink("/dev/zero", tmp / "zero.pt");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dir.pt", "is a directory, not a regular file"},
      {"fifo.pt", "is a FIFO (named pipe), not a regular file"},
      {"zero.pt", "is a character device, not a regular file"},
      {"missing.pt", "no such file"}};
  for (const auto& [name, what] : cases) {
    EXPECT_EQ(error_of([&] { em::read_checkpoint(tmp / name); }), (tmp / name).string() + ": " + what);
    auto r = expctl::test::run_shell("cd '" + tmp.path().string() + "' && timeout -s KILL 60 '" + EXPCTL_BINARY +
                                     "' export " + name + " -o out.pt");
    EXPECT_EQ(r.exit_code, 1) << name << "\n" << r.output;
    EXPECT_NE(r.output.find(name + ": " + what), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(tmp / "out.pt"));
  }
  EXPECT_EQ(error_of([&] {
              em::import_torchscript(tmp / "fifo.pt", {3, 8, 8});
            }),
            (tmp / "fifo.pt").string() + ": is a FIFO (named pipe), not a regular file");
}

// `expctl export CK -o X` never writes over CK (by any path to it) nor over another checkpoint; it replaces an
// earlier export.
TEST(HostileZipFiles, ExportNeverOverwritesACheckpoint) {
  TempDir tmp;
  em::save_checkpoint(tmp / "ck.pt", tiny_resnet());
  em::save_checkpoint(tmp / "other.pt", tiny_resnet());
  fs::create_directory(tmp / "sub");
  fs::create_symlink(tmp / "ck.pt", tmp / "link.pt");
  fs::create_hard_link(tmp / "ck.pt", tmp / "hard.pt");
  const std::string ck = expctl::test::read_file(tmp / "ck.pt"), other = expctl::test::read_file(tmp / "other.pt");
  for (const std::string& out :
       std::vector<std::string>{"ck.pt", "./sub/../ck.pt", "link.pt", "hard.pt", (tmp / "ck.pt").string()}) {
    auto r = expctl::test::run_expctl("export ck.pt -o " + out, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << out << "\n" << r.output;
    EXPECT_NE(r.output.find(out + ": is the checkpoint being exported; export does not overwrite it: give another -o"),
              std::string::npos)
        << r.output;
  }
  auto r = expctl::test::run_expctl("export ck.pt -o other.pt", tmp.path());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("other.pt: is an expctl checkpoint (or training state); export does not overwrite it"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(expctl::test::read_file(tmp / "ck.pt"), ck);
  EXPECT_EQ(expctl::test::read_file(tmp / "other.pt"), other);
  EXPECT_TRUE(fs::is_symlink(tmp / "link.pt"));

  // A new file, then the same again: an earlier export is replaced.
  r = expctl::test::run_expctl("export ck.pt -o ck.ts.pt", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = expctl::test::run_expctl("export ck.pt -o ck.ts.pt", tmp.path());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Any other file is kept.
  expctl::test::write_file(tmp / "notes.txt", "mine");
  r = expctl::test::run_expctl("export ck.pt -o notes.txt", tmp.path());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(expctl::test::read_file(tmp / "notes.txt"), "mine");
}

// NaN weights in a TorchScript file are named (file and tensor) before the conversion check could blame the
// conversion for the NaN logits.
TEST(HostileZipFiles, NonFiniteTorchScriptWeightsAreNamedBeforeConversion) {
  TempDir tmp;
  em::GraphNet model = tiny_resnet();
  {
    torch::NoGradGuard g;
    em::state_dict(*model)["fc.weight"].view(-1)[1] = std::nan("");
  }
  model->eval();
  const em::Network net = model;
  em::export_torchscript(*net, net->graph(), tmp / "nan.torchscript.pt");
  const std::string msg = error_of([&] { em::import_torchscript(tmp / "nan.torchscript.pt", {3, 32, 32}); });
  EXPECT_EQ(msg.rfind((tmp / "nan.torchscript.pt").string() + ": tensor '", 0), 0u) << msg;
  EXPECT_NE(msg.find("fc.weight' holds NaN (element 1 of 12, 1 not finite)"), std::string::npos) << msg;
}
