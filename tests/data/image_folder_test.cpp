// Image folders, decoding, transforms and CIFAR-100 against what Python's PIL and torchvision (Debian's) make of
// the same files: tests/data/image_reference.py writes the fixtures and the reference results.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/data/image.h"
#include "runner/data/loader.h"
#include "runner/data/registry.h"
#include "runner/io/archive.h"
#include "tests/core/test_util.h"

namespace fs = std::filesystem;
using namespace expctl;
using namespace expctl::data;

namespace {

// The fixtures and references, made once for the whole suite.
class ImageReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    auto r = test::run_shell("/usr/bin/python3 " + std::string(EXPCTL_SOURCE_DIR) + "/tests/data/image_reference.py " +
                             tmp_->path().string());
    if (r.exit_code != 0) {
      skip_ = "python3 with torchvision and PIL unavailable: " + r.output;
      return;
    }
    ref_ = new nlohmann::json(nlohmann::json::parse(test::read_file(tmp_->path() / "reference.json")));
  }
  static void TearDownTestSuite() {
    delete ref_;
    delete tmp_;
    ref_ = nullptr;
  }
  void SetUp() override {
    // CI installs the Python side (scripts/install-deps.sh): there a missing reference is a failure.
    if (!skip_.empty()) {
      if (std::getenv("CI")) FAIL() << skip_;
      GTEST_SKIP() << skip_;
    }
  }
  static fs::path dir() { return tmp_->path(); }
  static const nlohmann::json& ref() { return *ref_; }

  // A scenario whose data set is the reference image folder (a copy at `root` when given), with extra YAML lines.
  static ScenarioConfig folder_scenario(const fs::path& root, const std::string& extra = "") {
    const fs::path yaml = root.parent_path() / "scenario.yaml";
    test::write_file(yaml, "schema: 1\nscenario: {test_scenario: TS9, method: FineTuning}\n"
                           "model: {name: ResNet18, pretrained: false}\npaths: {datasets: " +
                               (root.parent_path() / "data").string() + "}\ndataset:\n  name: ImageFolder\n  path: " + root.string() +
                               "\n  image_size: 16\n  resize: 18\n" + extra + "\nstages: [finetune]\n");
    return load_scenario(yaml);
  }

  static test::TempDir* tmp_;
  static nlohmann::json* ref_;
  static std::string skip_;
};
test::TempDir* ImageReference::tmp_ = nullptr;
nlohmann::json* ImageReference::ref_ = nullptr;
std::string ImageReference::skip_;

// Interleaved rows → [C, H, W] bytes, to compare with torchvision's tensors.
std::vector<uint8_t> planes(const Image& img) {
  std::vector<uint8_t> out(img.pixels.size());
  to_planes(img, out.data());
  return out;
}

// Largest absolute difference and the share of bytes that differ at all.
std::pair<int, double> compare(const std::vector<uint8_t>& a, const std::string& b) {
  EXPECT_EQ(a.size(), b.size());
  int worst = 0;
  size_t differ = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const int d = std::abs(int(a[i]) - int(uint8_t(b[i])));
    worst = std::max(worst, d);
    differ += d != 0;
  }
  return {worst, a.empty() ? 0.0 : double(differ) / double(a.size())};
}

void copy_folder(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy(from, to, fs::copy_options::recursive);
}

template <typename Fn>
std::string data_error(Fn fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "no DataError";
}

}  // namespace

TEST_F(ImageReference, PngAndJpegDecodeAsPilConvertsThem) {
  for (const auto& [key, shape] : ref()["images"].items()) {
    const std::string name = key.substr(0, key.rfind('.')), mode = key.substr(key.rfind('.') + 1);
    const Image img = read_image(dir() / "images" / name, mode == "RGB" ? 3 : 1);
    EXPECT_EQ(img.height, shape[0].get<int64_t>()) << key;
    EXPECT_EQ(img.width, shape[1].get<int64_t>()) << key;
    const auto [worst, share] = compare(img.pixels, test::read_file(dir() / "pil" / key));
    // PNG is lossless and the conversions are PIL's own arithmetic: equal. JPEG goes through the same
    // libjpeg-turbo with the same settings, so equal too; one level of slack for a differently built library.
    EXPECT_LE(worst, name.find(".jpg") != std::string::npos ? 1 : 0) << key << ": " << share * 100 << "% differ";
  }
}

TEST_F(ImageReference, ResizeAndCropsEqualTorchvisionOnTensors) {
  const Image rgb = read_image(dir() / "images/rgb.png", 3);
  auto check = [&](const std::string& name, const Image& ours, int tolerance) {
    const auto& shape = ref()["transforms"][name];
    EXPECT_EQ(ours.height, shape[1].get<int64_t>()) << name;
    EXPECT_EQ(ours.width, shape[2].get<int64_t>()) << name;
    const auto [worst, share] = compare(planes(ours), test::read_file(dir() / "tv" / name));
    EXPECT_LE(worst, tolerance) << name;
    // A float rounding that lands on .5 the other way is the only allowed difference: rare.
    EXPECT_LT(share, 0.01) << name;
  };
  auto [h20, w20] = resized_shape(rgb.height, rgb.width, 20);
  check("resize_20", resize(rgb, h20, w20), 1);
  auto [h64, w64] = resized_shape(rgb.height, rgb.width, 64);
  check("resize_64", resize(rgb, h64, w64), 1);
  check("resize_exact_30x17", resize(rgb, 30, 17), 1);
  check("center_crop_24x30", center_crop(rgb, 24, 30), 0);
  check("center_crop_40x60", center_crop(rgb, 40, 60), 0);
  check("resized_crop_5_7_20_30_to_16", resize(crop(rgb, 5, 7, 20, 30), 16, 16), 1);
}

TEST_F(ImageReference, RandomResizedCropWindowsEqualTorchvisionsForTheSameSeed) {
  ASSERT_GT(ref()["crops"].size(), 0u);
  for (const auto& c : ref()["crops"]) {
    const CropWindow w = random_resized_crop_window(c["h"], c["w"], c["scale"][0], c["scale"][1], c["ratio"][0],
                                                    c["ratio"][1], c["seed"].get<uint64_t>());
    EXPECT_EQ((std::vector<int64_t>{w.top, w.left, w.height, w.width}), c["window"].get<std::vector<int64_t>>())
        << c.dump();
  }
}

TEST_F(ImageReference, ImageFolderClassesAndLabelsEqualTorchvisionsImageFolder) {
  for (const std::string load : {"stream", "memory"}) {
    const ScenarioConfig cfg = folder_scenario(dir() / "folder", "  load: " + load);
    for (bool train : {true, false}) {
      const auto& expected = ref()["folder"][train ? "train" : "val"];
      const Split s = load_dataset(cfg, train);
      EXPECT_EQ(s.class_names, expected["classes"].get<std::vector<std::string>>());
      ASSERT_EQ(s.size(), int64_t(expected["samples"].size()));
      EXPECT_EQ(s.streamed(), load == "stream");
      for (int64_t i = 0; i < s.size(); ++i)
        EXPECT_EQ(s.labels[i].item<int64_t>(), expected["samples"][size_t(i)][1].get<int64_t>()) << i;
      if (s.streamed())
        for (int64_t i = 0; i < s.size(); ++i)
          EXPECT_EQ(fs::relative(s.stream->path(i), dir() / "folder").string(),
                    expected["samples"][size_t(i)][0].get<std::string>());
      EXPECT_NE(s.source.find("non-image files ignored"), std::string::npos) << s.source;
      EXPECT_EQ(s.channels(), 3);
      EXPECT_EQ(s.height(), 16);
      EXPECT_EQ(s.norm.mean, imagenet_normalization(3).mean) << "ImageFolder's default is ImageNet's statistics";
    }
  }
  // The streamed pixels are the held ones: the same evaluation transforms either way.
  const Split streamed = load_dataset(folder_scenario(dir() / "folder", "  load: stream"), true);
  const Split held = load_dataset(folder_scenario(dir() / "folder", "  load: memory"), true);
  EXPECT_TRUE(torch::equal(streamed.pixels(0, streamed.size()), held.images));
  // A fraction split is stratified, seeded and disjoint.
  const ScenarioConfig frac =
      folder_scenario(dir() / "folder" / "train", "  split: fraction\n  test_fraction: 0.34\n  split_seed: 3\n  load: stream");
  const Split a = load_dataset(frac, true), b = load_dataset(frac, false);
  EXPECT_EQ(a.size() + b.size(), 13);
  EXPECT_EQ(b.size(), 4) << "round(0.34 x 3) = 1 per class of 3 images, round(0.34 x 4) = 1 for cat's 4";
  std::set<std::string> seen;
  for (const Split* s : {&a, &b})
    for (int64_t i = 0; i < s->size(); ++i) EXPECT_TRUE(seen.insert(s->stream ? s->stream->path(i) : "").second);
}

TEST_F(ImageReference, BadImagesEmptyClassesAndSymlinkLoopsAreNamed) {
  test::TempDir t;
  const fs::path root = t.path() / "f";
  copy_folder(dir() / "folder", root);
  // A truncated PNG passes no header check? It does (the header is whole); a file with an image name and
  // no image inside does not.
  test::write_file(root / "train/cat/fake.png", "GIF89a not a png");
  std::string e = data_error([&] { load_dataset(folder_scenario(root), true); });
  EXPECT_NE(e.find("train/cat/fake.png: not a PNG or JPEG image"), std::string::npos) << e;
  EXPECT_NE(e.find("on_bad_image: skip"), std::string::npos) << e;
  Split s = load_dataset(folder_scenario(root, "  on_bad_image: skip"), true);
  EXPECT_EQ(s.size(), 13);
  EXPECT_NE(s.source.find("1 unreadable skipped"), std::string::npos) << s.source;

  // Truncated data is found by a full decode, or when the image is first decoded.
  fs::remove(root / "train/cat/fake.png");
  const std::string png = test::read_file(root / "train/dog/img 0.png");
  test::write_file(root / "train/dog/img 0.png", png.substr(0, png.size() / 2));
  e = data_error([&] { load_dataset(folder_scenario(root, "  verify: decode"), true); });
  EXPECT_NE(e.find("train/dog/img 0.png: corrupt PNG"), std::string::npos) << e;
  e = data_error([&] { load_dataset(folder_scenario(root, "  load: memory"), true); });
  EXPECT_NE(e.find("train/dog/img 0.png: corrupt PNG"), std::string::npos) << e;
  s = load_dataset(folder_scenario(root, "  verify: decode\n  on_bad_image: skip\n  load: memory"), true);
  EXPECT_EQ(s.size(), 12);
  test::write_file(root / "train/dog/img 0.png", png);

  // A symlink back to an ancestor: os.walk(followlinks=True) would loop forever; we name it.
  fs::create_directory_symlink(root / "train/dog", root / "train/dog/nested/loop");
  e = data_error([&] { load_dataset(folder_scenario(root), true); });
  EXPECT_NE(e.find("train/dog/nested/loop: symlink loop"), std::string::npos) << e;
  s = load_dataset(folder_scenario(root, "  on_bad_image: skip"), true);
  EXPECT_EQ(s.size(), 13);
  fs::remove(root / "train/dog/nested/loop");

  // A class folder without images: torchvision refuses it, so do we, whatever the policy.
  fs::create_directories(root / "train/emu");
  test::write_file(root / "train/emu/readme.txt", "x");
  e = data_error([&] { load_dataset(folder_scenario(root, "  on_bad_image: skip"), true); });
  EXPECT_NE(e.find("train/emu: class folder 'emu' holds no .jpg, .jpeg or .png image"), std::string::npos) << e;
  // The validation folder must have the training folder's classes (else labels would differ from torchvision's).
  fs::create_directories(root / "train/emu");
  fs::copy_file(root / "train/dog/img 0.png", root / "train/emu/a.png");
  e = data_error([&] { load_dataset(folder_scenario(root), false); });
  EXPECT_NE(e.find("class folder 'emu' of the training folder is missing"), std::string::npos) << e;
}

TEST_F(ImageReference, TheFolderScanIsReusedUntilAFolderChanges) {
  test::TempDir t;
  const fs::path root = t.path() / "f";
  copy_folder(dir() / "folder", root);
  const Split first = load_dataset(folder_scenario(root, "  load: stream"), true);
  EXPECT_EQ(first.source.find("file list from"), std::string::npos) << first.source;
  ASSERT_EQ(test::count_entries(t.path() / "data/ImageFolder/.scans"), 1u);
  // Nothing changed: the listing (and its header checks) come from the cache, in the same order.
  const Split second = load_dataset(folder_scenario(root, "  load: stream"), true);
  EXPECT_NE(second.source.find("file list from"), std::string::npos) << second.source;
  ASSERT_EQ(second.size(), first.size());
  for (int64_t i = 0; i < first.size(); ++i) EXPECT_EQ(second.stream->path(i), first.stream->path(i));
  EXPECT_TRUE(torch::equal(second.labels, first.labels));
  // A new file changes its folder's time: the folder is scanned again and the file is found and checked.
  test::write_file(root / "train/cat/nested/new.png", "not a png");
  const std::string e = data_error([&] { load_dataset(folder_scenario(root, "  load: stream"), true); });
  EXPECT_NE(e.find("train/cat/nested/new.png: not a PNG or JPEG image"), std::string::npos) << e;
  fs::remove(root / "train/cat/nested/new.png");
  const Split third = load_dataset(folder_scenario(root, "  load: stream"), true);
  EXPECT_EQ(third.source.find("file list from"), std::string::npos) << third.source;
  EXPECT_EQ(third.size(), first.size());
}

TEST_F(ImageReference, ConfigErrorsNameTheFileLineAndKey) {
  test::TempDir t;
  const fs::path yaml = t.path() / "bad.yaml";
  test::write_file(yaml,
                   "schema: 1\nscenario: {test_scenario: TS9, method: FineTuning}\nmodel: {name: ResNet18, pretrained: false}\n"
                   "dataset:\n  name: ImageFolder\n  image_size: 16\n  augment: {scale: [0.5, 0.1]}\nstages: [finetune]\n");
  try {
    load_scenario(yaml);
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("dataset.path: give exactly one of path (a local folder) and url"), std::string::npos) << m;
    EXPECT_NE(m.find("bad.yaml:7:"), std::string::npos) << m;
    EXPECT_NE(m.find("dataset.augment.scale: expected 0 < lo <= hi"), std::string::npos) << m;
  }
}

TEST_F(ImageReference, StreamedBatchesEqualHeldOnesAndPrefetchingChangesNothing) {
  const Split streamed = load_dataset(folder_scenario(dir() / "folder", "  load: stream"), true);
  const Split held = load_dataset(folder_scenario(dir() / "folder", "  load: memory"), true);
  LoaderOptions o;
  o.batch_size = 4;
  o.seed = 5;
  o.augment.horizontal_flip = true;
  o.augment.crop_padding = 2;
  LoaderOptions ahead = o;
  ahead.prefetch = 2;
  Loader a(streamed, o), b(held, o), c(streamed, ahead);
  for (int64_t epoch : {0, 1}) {
    a.set_epoch(epoch);
    b.set_epoch(epoch);
    c.set_epoch(epoch);
    for (int64_t j = 0; j < a.num_batches(); ++j) {
      const Batch x = a.batch(j), y = b.batch(j), z = c.batch(j);
      EXPECT_TRUE(torch::equal(x.images, y.images)) << epoch << " " << j;
      EXPECT_TRUE(torch::equal(x.images, z.images)) << epoch << " " << j;
      EXPECT_TRUE(torch::equal(x.labels, z.labels));
    }
  }
  EXPECT_EQ(a.stream_stats().images, 2 * streamed.size());
  EXPECT_EQ(c.stream_stats().images, 2 * streamed.size()) << "every batch decoded once, ahead or not";
  EXPECT_EQ(b.stream_stats().images, 0);

  // Random resized crops: drawn per sample from (seed, epoch, position), so prefetching and reruns agree, and
  // epochs differ.
  o.augment.resized_crop.enabled = true;
  ahead.augment = o.augment;
  Loader d(streamed, o), e(streamed, ahead);
  const auto first = d.batch(0).images;
  EXPECT_TRUE(torch::equal(first, e.batch(0).images));
  EXPECT_TRUE(torch::equal(e.batch(1).images, d.batch(1).images));
  d.set_epoch(1);
  EXPECT_FALSE(torch::equal(first, d.batch(0).images));
  // Held in memory, the crops come from the held centre crop: same shapes, other pixels.
  Loader f(held, o);
  EXPECT_EQ(f.batch(0).images.sizes(), first.sizes());
}

TEST(Cifar100, ReadsAGeneratedTarballInTheRealLayoutWithFineOrCoarseLabels) {
  test::TempDir t;
  const fs::path src = t.path() / "src" / "cifar-100-binary";
  fs::create_directories(src);
  torch::manual_seed(0);
  auto make = [&](const std::string& name, int64_t n) {
    auto records = torch::randint(0, 256, {n, 3074}, torch::kUInt8);
    records.select(1, 0).copy_(torch::randint(0, 20, {n}, torch::kUInt8));
    records.select(1, 1).copy_(torch::randint(0, 100, {n}, torch::kUInt8));
    test::write_file(src / name, std::string(reinterpret_cast<const char*>(records.data_ptr<uint8_t>()), n * 3074));
    return records;
  };
  const auto train = make("train.bin", 50), test_records = make("test.bin", 20);
  std::string fine;
  for (int i = 0; i < 100; ++i) fine += "class" + std::to_string(i) + "\n";
  test::write_file(src / "fine_label_names.txt", fine);
  const auto tar = test::run_shell("tar czf " + (t.path() / "cifar-100-binary.tar.gz").string() + " -C " +
                                   (t.path() / "src").string() + " cifar-100-binary");
  ASSERT_EQ(tar.exit_code, 0) << tar.output;
  io::extract_archive(t.path() / "cifar-100-binary.tar.gz", t.path() / "CIFAR100");
  const fs::path dir = t.path() / "CIFAR100" / "cifar-100-binary";

  const Split s = read_cifar100(dir, true, false);
  ASSERT_EQ(s.size(), 50);
  EXPECT_EQ(s.num_classes, 100);
  EXPECT_EQ(s.class_names[7], "class7") << "names come from fine_label_names.txt";
  EXPECT_TRUE(torch::equal(s.labels, train.select(1, 1).to(torch::kLong)));
  EXPECT_TRUE(torch::equal(s.images.reshape({50, -1}), train.narrow(1, 2, 3072)));
  const Split c = read_cifar100(dir, false, true);
  EXPECT_EQ(c.num_classes, 20);
  EXPECT_EQ(c.class_names[0], "aquatic_mammals");
  EXPECT_TRUE(torch::equal(c.labels, test_records.select(1, 0).to(torch::kLong)));
  EXPECT_EQ(cifar100_info(false).class_names.size(), 100u);

  // A fine label of 100 in record 3: the file and the record are named.
  auto bad = train.clone();
  bad[3][1] = 100;
  test::write_file(dir / "train.bin", std::string(reinterpret_cast<const char*>(bad.data_ptr<uint8_t>()), 50 * 3074));
  const std::string e = data_error([&] { read_cifar100(dir, true, false); });
  EXPECT_NE(e.find("train.bin: record 3: label 100 out of range [0, 99]"), std::string::npos) << e;
  test::write_file(dir / "test.bin", "short");
  EXPECT_NE(data_error([&] { read_cifar100(dir, false, false); }).find("not a multiple of the record length"),
            std::string::npos);
}
