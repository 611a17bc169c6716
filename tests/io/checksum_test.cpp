// Checksums against published test vectors, streaming over files larger than the read buffer, and name parsing.
#include "runner/io/checksum.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "runner/core/error.h"
#include "tests/io/io_test_util.h"

namespace expctl::io {
namespace {

using test::TempDir;

TEST(Checksum, KnownVectors) {
  TempDir dir;
  test::write_file(dir.path() / "empty", "");
  test::write_file(dir.path() / "abc", "abc");
  EXPECT_EQ(sha256_file(dir.path() / "empty"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(md5_file(dir.path() / "empty"), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(sha256_file(dir.path() / "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(md5_file(dir.path() / "abc"), "900150983cd24fb0d6963f7d28e17f72");
}

TEST(Checksum, StreamsFilesLargerThanTheBuffer) {
  TempDir dir;
  const std::string bytes = test::deterministic_bytes((3u << 20) + 12345, 42);
  test::write_file(dir.path() / "big", bytes);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  ASSERT_EQ(EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr), 1);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < size; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  EXPECT_EQ(sha256_file(dir.path() / "big"), hex);
}

TEST(Checksum, MissingFileNamesTheFile) {
  TempDir dir;
  const auto missing = dir.path() / "no-such-file.bin";
  try {
    sha256_file(missing);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
  EXPECT_THROW(md5_file(missing), Error);
}

TEST(Checksum, MismatchNamesExpectedAndActual) {
  TempDir dir;
  const auto f = dir.path() / "abc";
  test::write_file(f, "abc");
  EXPECT_EQ(checksum_mismatch(f, "", ""), "");
  EXPECT_EQ(checksum_mismatch(f, "BA7816BF", "900150983cd24fb0d6963f7d28e17f72"), "");
  const std::string why = checksum_mismatch(f, "f37072fd", "c32a1d4ab5d03f1284b67883e8d87530");
  EXPECT_NE(why.find("f37072fd"), std::string::npos) << why;
  EXPECT_NE(why.find("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), std::string::npos) << why;
  EXPECT_NE(why.find("c32a1d4ab5d03f1284b67883e8d87530"), std::string::npos) << why;
  EXPECT_NE(why.find("900150983cd24fb0d6963f7d28e17f72"), std::string::npos) << why;
}

TEST(Checksum, Sha256PrefixFromName) {
  EXPECT_EQ(sha256_prefix_from_name("resnet18-f37072fd.pth"), "f37072fd");
  EXPECT_EQ(sha256_prefix_from_name("resnet34-b627a593.pth"), "b627a593");
  EXPECT_EQ(sha256_prefix_from_name("efficientnet_b0_rwightman-7f5810bc.pth"), "7f5810bc");
  EXPECT_EQ(sha256_prefix_from_name("https://download.pytorch.org/models/resnet18-f37072fd.pth"), "f37072fd");
  EXPECT_EQ(sha256_prefix_from_name("https://example.org/m/model-F37072FD0A.pth?download=1"), "f37072fd0a");
  EXPECT_EQ(sha256_prefix_from_name("downloaded_models/resnet18-f37072fd.pth"), "f37072fd");
  EXPECT_EQ(sha256_prefix_from_name("cifar-10-binary.tar.gz"), "");
  EXPECT_EQ(sha256_prefix_from_name("resnet18.pth"), "");
  EXPECT_EQ(sha256_prefix_from_name("model-deadbee.pth"), "");     // 7 digits: too short
  EXPECT_EQ(sha256_prefix_from_name("model-f37072fg.pth"), "");    // not hex
  EXPECT_EQ(sha256_prefix_from_name("model-v2/weights.pth"), "");  // the dash is in a folder name
  EXPECT_EQ(sha256_prefix_from_name(""), "");
}

}  // namespace
}  // namespace expctl::io
