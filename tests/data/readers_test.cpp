// Readers: small files written in the real formats, every malformed case, and the real Fashion-MNIST files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <vector>

#include "runner/core/error.h"
#include "runner/data/split.h"
#include "tests/core/test_util.h"
#include "tests/data/idx_files.h"

namespace fs = std::filesystem;
using expctl::DataError;
using expctl::test::TempDir;
using namespace expctl::data;

namespace {

using expctl::test::Bytes;
using expctl::test::idx_images;
using expctl::test::idx_labels;
using expctl::test::mnist_pixel;

// A pixel value that differs with every coordinate, so a misplaced plane, row or record is caught.
unsigned char cifar_pixel(int record, int c, int y, int x) { return (record * 37 + c * 91 + y * 13 + x * 3) % 256; }

Bytes cifar_records(int count, int first_record, int label_offset = 0) {
  Bytes b;
  for (int r = first_record; r < first_record + count; ++r) {
    b.push_back(r % 10 + label_offset);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) b.push_back(cifar_pixel(r, c, y, x));
  }
  return b;
}

void write_file(const fs::path& file, const Bytes& bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

void write_gz(const fs::path& file, const Bytes& bytes) {
  gzFile f = gzopen(file.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// Runs `f`, expecting a DataError whose message contains every string in `parts`.
template <class F>
void expect_data_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no DataError thrown";
  } catch (const DataError& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace

// ---- CIFAR-10 ------------------------------------------------------------------------------------------------

TEST(Cifar10Reader, ReadsPlanesAndLabelsExactly) {
  TempDir dir;
  write_file(dir.path() / "test_batch.bin", cifar_records(3, 0));
  Split s = read_cifar10(dir.path(), false);
  ASSERT_EQ(s.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(s.images.dtype(), torch::kUInt8);
  EXPECT_EQ(s.labels.dtype(), torch::kLong);
  EXPECT_TRUE(s.images.is_contiguous());
  EXPECT_EQ(s.num_classes, 10);
  EXPECT_EQ(s.class_names, cifar10_info().class_names);
  EXPECT_EQ(s.norm.mean, cifar10_info().norm.mean);
  EXPECT_NE(s.source.find("CIFAR-10 test"), std::string::npos);
  auto img = s.images.accessor<uint8_t, 4>();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(s.labels[r].item<int64_t>(), r);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) ASSERT_EQ(img[r][c][y][x], cifar_pixel(r, c, y, x)) << r << c << y << x;
  }
  // Channel 0 is the first plane in the file: red.
  EXPECT_EQ(img[1][0][0][0], cifar_pixel(1, 0, 0, 0));
}

TEST(Cifar10Reader, TrainConcatenatesTheFiveBatchesInOrderAndReadsMeta) {
  TempDir dir;
  for (int i = 1; i <= 5; ++i)
    write_file(dir.path() / ("data_batch_" + std::to_string(i) + ".bin"), cifar_records(2, 2 * (i - 1)));
  write_file(dir.path() / "test_batch.bin", cifar_records(1, 0));
  std::ofstream(dir.path() / "batches.meta.txt") << "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n";
  Split s = read_cifar10(dir.path(), true);
  ASSERT_EQ(s.size(), 10);
  EXPECT_TRUE(torch::equal(s.labels, torch::arange(10, torch::kLong)));
  EXPECT_EQ(s.images[7][2][31][5].item<int>(), cifar_pixel(7, 2, 31, 5));
  EXPECT_EQ(s.class_names.front(), "a");
  EXPECT_EQ(s.class_names.back(), "j");
}

TEST(Cifar10Reader, TruncatedRecordNamesTheFile) {
  TempDir dir;
  Bytes b = cifar_records(2, 0);
  b.resize(b.size() - 5);
  write_file(dir.path() / "test_batch.bin", b);
  const std::string file = (dir.path() / "test_batch.bin").string();
  expect_data_error([&] { read_cifar10(dir.path(), false); },
                    {file + ": ", "not a multiple of the record length 3073"});
}

TEST(Cifar10Reader, EmptyFileAndLabelOutOfRange) {
  TempDir dir;
  write_file(dir.path() / "test_batch.bin", {});
  expect_data_error([&] { read_cifar10(dir.path(), false); }, {"test_batch.bin", "empty"});
  write_file(dir.path() / "test_batch.bin", cifar_records(3, 0, 8));  // labels 8, 9, then 10
  expect_data_error([&] { read_cifar10(dir.path(), false); }, {"test_batch.bin", "record 2: label 10 out of range"});
}

TEST(Cifar10Reader, MissingFileOrFolderIsNamed) {
  TempDir dir;
  for (int i : {1, 2, 4, 5}) write_file(dir.path() / ("data_batch_" + std::to_string(i) + ".bin"), cifar_records(1, 0));
  expect_data_error([&] { read_cifar10(dir.path(), true); },
                    {(dir.path() / "data_batch_3.bin").string() + ": file not found"});
  expect_data_error([&] { read_cifar10(dir.path(), false); }, {"test_batch.bin: file not found"});
  expect_data_error([&] { read_cifar10(dir.path() / "nope", false); }, {"nope: directory not found"});
}

TEST(Cifar10Reader, MetaFileWithWrongNameCount) {
  TempDir dir;
  write_file(dir.path() / "test_batch.bin", cifar_records(1, 0));
  std::ofstream(dir.path() / "batches.meta.txt") << "a\nb\nc\n";
  expect_data_error([&] { read_cifar10(dir.path(), false); }, {"batches.meta.txt: expected 10 class names, found 3"});
}

// ---- Fashion-MNIST (small files) -------------------------------------------------------------------------------

TEST(FashionMnistReader, ReadsGzipFilesExactly) {
  TempDir dir;
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(5));
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(5));
  Split s = read_fashion_mnist(dir.path(), false);
  ASSERT_EQ(s.images.sizes(), (std::vector<int64_t>{5, 1, 28, 28}));
  EXPECT_TRUE(s.images.is_contiguous());
  EXPECT_EQ(s.class_names.size(), 10u);
  EXPECT_EQ(s.class_names[0], "T-shirt/top");
  EXPECT_EQ(s.class_names[1], "Trouser");
  EXPECT_EQ(s.class_names[9], "Ankle boot");
  EXPECT_NE(s.source.find("Fashion-MNIST test"), std::string::npos);
  auto img = s.images.accessor<uint8_t, 4>();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(s.labels[i].item<int64_t>(), (i * 3) % 10);
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) ASSERT_EQ(img[i][0][y][x], mnist_pixel(i, y, x));
  }
}

TEST(FashionMnistReader, ReadsUncompressedFiles) {
  TempDir dir;
  write_file(dir.path() / "train-images-idx3-ubyte", idx_images(4));
  write_file(dir.path() / "train-labels-idx1-ubyte", idx_labels(4));
  Split s = read_fashion_mnist(dir.path(), true);
  ASSERT_EQ(s.size(), 4);
  EXPECT_EQ(s.images[3][0][27][1].item<int>(), mnist_pixel(3, 27, 1));
  EXPECT_EQ(s.labels[3].item<int64_t>(), 9);
}

TEST(FashionMnistReader, BadMagicNamesTheFile) {
  TempDir dir;
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(2, 28, 28, 2049));
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(2));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-images-idx3-ubyte.gz: bad magic number 2049 (expected 2051)"});
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(2));
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(2, 2051));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-labels-idx1-ubyte.gz: bad magic number 2051 (expected 2049)"});
}

TEST(FashionMnistReader, CountMismatchNamesBothFiles) {
  TempDir dir;
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3));
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(4));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-labels-idx1-ubyte.gz: count mismatch: 4 labels but 3 images", "t10k-images-idx3-ubyte.gz"});
}

TEST(FashionMnistReader, TruncatedDataTrailingBytesAndWrongShape) {
  TempDir dir;
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(3));
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3, 28, 28, 2051, 2));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-images-idx3-ubyte.gz: truncated: header announces 2352 data bytes, file holds 1568"});
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3, 28, 28, 2051, 4));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); }, {"t10k-images-idx3-ubyte.gz: trailing bytes"});
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3, 27, 28));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-images-idx3-ubyte.gz: images are 27x28, expected 28x28"});
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", Bytes{0, 0, 8});
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); }, {"t10k-images-idx3-ubyte.gz: truncated"});
}

TEST(FashionMnistReader, LabelOutOfRange) {
  TempDir dir;
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3));
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(3, 2049, 1));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); },
                    {"t10k-labels-idx1-ubyte.gz: record 1: label 10 out of range [0, 9]"});
}

TEST(FashionMnistReader, BadGzipNamesTheFile) {
  TempDir dir;
  const fs::path images = dir.path() / "t10k-images-idx3-ubyte.gz";
  write_gz(dir.path() / "t10k-labels-idx1-ubyte.gz", idx_labels(3));
  // A gzip stream cut short.
  write_gz(images, idx_images(3));
  fs::resize_file(images, fs::file_size(images) / 2);
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); }, {images.string() + ": gzip error"});
  // A gzip header followed by data that is not deflate.
  Bytes garbage = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  for (int i = 0; i < 200; ++i) garbage.push_back(0xff);
  write_file(images, garbage);
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); }, {images.string() + ": gzip error"});
  // Plain data under a .gz name.
  write_file(images, idx_images(3));
  expect_data_error([&] { read_fashion_mnist(dir.path(), false); }, {images.string() + ": not gzip-compressed"});
}

TEST(FashionMnistReader, MissingFilesAreNamed) {
  TempDir dir;
  write_gz(dir.path() / "t10k-images-idx3-ubyte.gz", idx_images(3));
  expect_data_error(
      [&] { read_fashion_mnist(dir.path(), false); },
      {(dir.path() / "t10k-labels-idx1-ubyte.gz").string() + ": file not found (nor t10k-labels-idx1-ubyte)"});
  expect_data_error([&] { read_fashion_mnist(dir.path() / "absent", true); }, {"absent: directory not found"});
}

// ---- the real Fashion-MNIST files (Debian's dataset-fashion-mnist) ----------------------------------------------

namespace {
const fs::path kRealFashionMnist = "/usr/share/datasets/fashion-mnist";

class RealFashionMnist : public ::testing::Test {
 protected:
  // Read once for the suite: decompressing the 26 MB train file is the slowest step of these tests.
  static void SetUpTestSuite() {
    if (!fs::exists(kRealFashionMnist / "train-images-idx3-ubyte.gz")) return;
    train_ = new Split(read_fashion_mnist(kRealFashionMnist, true));
    test_ = new Split(read_fashion_mnist(kRealFashionMnist, false));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
    train_ = test_ = nullptr;
  }
  void SetUp() override {
    if (!train_)
      GTEST_FAIL() << "scripts/install-deps.sh installs what is missing: "
                   << "Debian's dataset-fashion-mnist is not installed at " << kRealFashionMnist;
  }
  static Split* train_;
  static Split* test_;
};
Split* RealFashionMnist::train_ = nullptr;
Split* RealFashionMnist::test_ = nullptr;

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}
}  // namespace

TEST_F(RealFashionMnist, ShapesFirstLabelsAndPixels) {
  ASSERT_EQ(train_->images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  ASSERT_EQ(test_->images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(to_vector(train_->labels.narrow(0, 0, 12)), (std::vector<int64_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9}));
  EXPECT_EQ(to_vector(test_->labels.narrow(0, 0, 12)), (std::vector<int64_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5}));
  EXPECT_EQ(to_vector(train_->labels.narrow(0, 59995, 5)), (std::vector<int64_t>{5, 1, 3, 0, 5}));
  // Pixel sums of the first and last images, and one row of the first, computed independently with Python.
  EXPECT_EQ(train_->images[0].sum().item<int64_t>(), 76247);
  EXPECT_EQ(train_->images[59999].sum().item<int64_t>(), 16684);
  EXPECT_EQ(test_->images[0].sum().item<int64_t>(), 33456);
  EXPECT_EQ(to_vector(train_->images[0][0][14].narrow(0, 12, 4)), (std::vector<int64_t>{237, 226, 217, 223}));
}

TEST_F(RealFashionMnist, ClassHistogramsAreBalanced) {
  EXPECT_EQ(to_vector(torch::bincount(train_->labels)), std::vector<int64_t>(10, 6000));
  EXPECT_EQ(to_vector(torch::bincount(test_->labels)), std::vector<int64_t>(10, 1000));
}

TEST_F(RealFashionMnist, StandardStatisticsMatchTheData) {
  const Normalization n = compute_normalization(*train_);
  ASSERT_EQ(n.mean.size(), 1u);
  EXPECT_NEAR(n.mean[0], fashion_mnist_info().norm.mean[0], 5e-4);
  EXPECT_NEAR(n.std[0], fashion_mnist_info().norm.std[0], 5e-4);
}

TEST_F(RealFashionMnist, CalibrationSplitOfTheTestSet) {
  auto [calib, rest] = split_off(*test_, 1000, 7);
  EXPECT_EQ(calib.size(), 1000);
  EXPECT_EQ(rest.size(), 9000);
  EXPECT_EQ(to_vector(torch::bincount(calib.labels, {}, 10)), std::vector<int64_t>(10, 100));
  EXPECT_NE(calib.source.find("subset of 1000 class-balanced samples (seed 7)"), std::string::npos);
}
