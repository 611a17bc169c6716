// Image folders holding what an image folder should not: a FIFO named like an image, and decompression bombs (a
// few bytes whose header declares billions of pixels). Each is a bad image naming the file, found without
// blocking and before any allocation from the declared size; on_bad_image: skip leaves it out.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <thread>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/data/image.h"
#include "runner/data/registry.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;
using namespace expctl::data;

namespace {

// An 8 x 8 RGB PNG written by libpng.
std::string small_png(int seed) {
  std::vector<uint8_t> rgb(8 * 8 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 7 + seed * 31);
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = 8;
  img.height = 8;
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&img, nullptr, &size, 0, rgb.data(), 0, nullptr);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&img, out.data(), &size, 0, rgb.data(), 0, nullptr))
    throw std::runtime_error("libpng could not write the fixture");
  out.resize(size);
  return out;
}

void put_be32(std::string& s, uint32_t v) {
  for (int k = 3; k >= 0; --k) s.push_back(char((v >> (8 * k)) & 0xff));
}

void put_chunk(std::string& png, const char* type, const std::string& data) {
  put_be32(png, uint32_t(data.size()));
  const std::string body = type + data;
  png += body;
  put_be32(png, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

// A valid PNG header declaring width x height RGB pixels, followed by a tiny IDAT: 65 bytes that would decode to
// width * height * 3 bytes.
std::string png_bomb(uint32_t width, uint32_t height) {
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8));
  put_chunk(png, "IEND", "");
  return png;
}

// A JPEG written by libjpeg (8 x 8 grey), its start-of-frame then patched to declare width x height.
std::string jpeg_bomb(uint16_t width, uint16_t height) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = 8;
  c.image_height = 8;
  c.input_components = 1;
  c.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(8, 128);
  while (c.next_scanline < 8) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string out(reinterpret_cast<char*>(buf), size);
  free(buf);
  const size_t sof = out.find("\xFF\xC0");
  if (sof == std::string::npos) throw std::runtime_error("no SOF0 in the fixture");
  out[sof + 5] = char(height >> 8), out[sof + 6] = char(height & 0xff);
  out[sof + 7] = char(width >> 8), out[sof + 8] = char(width & 0xff);
  return out;
}

long max_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// Runs `fn` on a thread and waits at most `seconds`: a FIFO that blocks must fail the test, not hang the suite.
// A thread still blocked is left behind (detached); the test binary exits anyway.
std::string within(double seconds, const std::function<std::string()>& fn) {
  auto promise = std::make_shared<std::promise<std::string>>();
  auto result = promise->get_future();
  std::thread([promise, fn] {
    try {
      promise->set_value(fn());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  }).detach();
  if (result.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready)
    return "(timed out: blocked)";
  return result.get();
}

// ROOT/train/<a|b>/*.png and ROOT/val/<a|b>/*.png, two good images per class and split.
void write_folder(const fs::path& root) {
  int seed = 0;
  for (const char* split : {"train", "val"})
    for (const char* cls : {"a", "b"})
      for (const char* name : {"1.png", "2.png"}) test::write_file(root / split / cls / name, small_png(seed++));
}

void write_scenario(const fs::path& dir, const std::string& extra) {
  test::write_file(dir / "s.yaml",
                   "schema: 1\nscenario: {test_scenario: TS9, method: FineTuning}\n"
                   "model: {name: ResNet18, pretrained: false}\npaths: {datasets: " +
                       (dir / "data").string() + ", checkpoints: " + (dir / "ckpt").string() +
                       "}\ndataset:\n  name: ImageFolder\n  path: " + (dir / "images").string() +
                       "\n  image_size: 16\n  resize: 18\n  workers: 1\n" + extra +
                       "finetune: {epochs: 1, batch_size: 4}\nstages: [finetune]\n");
}

}  // namespace

TEST(HostileImages, HeaderBombsAreRefusedBeforeDecodingNamingTheFile) {
  test::TempDir tmp;
  const std::string png = png_bomb(60000, 60000), jpg = jpeg_bomb(65000, 65000);
  EXPECT_LT(png.size(), 100u);
  test::write_file(tmp / "bomb.png", png);
  test::write_file(tmp / "bomb.jpg", jpg);
  const long rss = max_rss_kb();
  for (const std::string name : {"bomb.png", "bomb.jpg"}) {
    const fs::path f = tmp / name;
    const std::string side = name == "bomb.png" ? "60000 x 60000" : "65000 x 65000";
    for (const auto& msg : {test::error_of([&] { read_image_header(f); }), test::error_of([&] { read_image(f, 3); })}) {
      EXPECT_EQ(msg.rfind(f.string() + ": " + side + " = ", 0), 0u) << msg;
      EXPECT_NE(msg.find("more than dataset.max_pixels (178956970)"), std::string::npos) << msg;
    }
  }
  EXPECT_LT(max_rss_kb() - rss, 64 * 1024) << "KiB more at peak: something was allocated from a declared size";

  // The limit is the key's value: a 8 x 8 image is refused under max_pixels 63, decoded under 64.
  test::write_file(tmp / "small.png", small_png(0));
  EXPECT_NE(test::error_of([&] { read_image(tmp / "small.png", 3, 63); }).find("8 x 8 = 64 pixels, more than"),
            std::string::npos);
  EXPECT_EQ(read_image(tmp / "small.png", 3, 64).pixels.size(), 8u * 8 * 3);
}

TEST(HostileImages, AFifoIsNamedForWhatItIsAndNeverBlocks) {
  test::TempDir tmp;
  ASSERT_EQ(::mkfifo((tmp / "f.png").c_str(), 0600), 0);
  const std::string expected = (tmp / "f.png").string() + ": is a FIFO (named pipe), not a regular file";
  EXPECT_EQ(within(20, [&] { return test::error_of([&] { read_image_header(tmp / "f.png"); }); }), expected);
  EXPECT_EQ(within(20, [&] { return test::error_of([&] { read_image(tmp / "f.png", 3); }); }), expected);
  fs::create_directory(tmp / "d.png");
  EXPECT_EQ(test::error_of([&] { read_image(tmp / "d.png", 3); }),
            (tmp / "d.png").string() + ": is a directory, not a regular file");
}

// Through the real reader: skip leaves the FIFO and both bombs out and counts them; the good images load.
TEST(HostileImages, OnBadImageSkipLeavesOutFifosAndBombs) {
  test::TempDir tmp;
  write_folder(tmp / "images");
  test::write_file(tmp / "images/train/a/bomb.png", png_bomb(60000, 60000));
  test::write_file(tmp / "images/train/b/bomb.jpg", jpeg_bomb(65000, 65000));
  ASSERT_EQ(::mkfifo((tmp / "images/train/b/f.png").c_str(), 0600), 0);
  write_scenario(tmp.path(), "  on_bad_image: skip\n  load: memory\n");
  test::Cwd cwd(tmp.path());
  const ScenarioConfig cfg = load_scenario("s.yaml");
  const std::string source = within(60, [&] {
    const Split s = load_dataset(cfg, true);
    return std::to_string(s.size()) + " | " + s.source;
  });
  EXPECT_EQ(source.rfind("4 | ", 0), 0u) << source;
  EXPECT_NE(source.find("3 unreadable skipped"), std::string::npos) << source;
}

// Through the binary, on_bad_image: fail: the run ends (exit 1) naming the file and what it is, in seconds.
TEST(HostileImages, TheBinaryStopsAtAFifoOrABombNamingIt) {
  test::TempDir tmp;
  write_folder(tmp / "images");
  write_scenario(tmp.path(), "");
  const fs::path fifo = tmp / "images/train/a/f.png";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r =
      test::run_shell("cd '" + tmp.path().string() + "' && timeout -s KILL 120 '" + EXPCTL_BINARY + "' run s.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(fifo.string() + ": is a FIFO (named pipe), not a regular file"), std::string::npos)
      << r.output;
  fs::remove(fifo);
  const fs::path bomb = tmp / "images/val/b/bomb.png";
  test::write_file(bomb, png_bomb(60000, 60000));
  r = test::run_shell("cd '" + tmp.path().string() + "' && timeout -s KILL 120 '" + EXPCTL_BINARY + "' run s.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(bomb.string() + ": 60000 x 60000 = 3600000000 pixels, more than dataset.max_pixels"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("bad_alloc"), std::string::npos) << r.output;
}
