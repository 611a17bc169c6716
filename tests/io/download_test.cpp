// download(): real transfers from a local HTTP server on 127.0.0.1 (tests/io/http_server.py) and file:// URLs.
#include "runner/io/download.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "runner/core/error.h"
#include "runner/io/archive.h"
#include "runner/io/checksum.h"
#include "tests/io/io_test_util.h"

namespace expctl::io {
namespace {

namespace fs = std::filesystem;

using test::HttpServer;
using test::TempDir;

class DownloadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    suite_dir_ = std::make_unique<TempDir>();
    fs::create_directories(www());
    server_ = std::make_unique<HttpServer>(www(), suite_dir_->path() / "requests.log");
  }
  static void TearDownTestSuite() {
    server_.reset();
    suite_dir_.reset();
  }

  static fs::path www() { return suite_dir_->path() / "www"; }

  /// Serves `bytes` as /<name-<sha8>.pth>; returns the file name.
  static std::string serve_weights(const std::string& stem, const std::string& bytes) {
    const fs::path tmp = www() / (stem + ".tmp");
    test::write_file(tmp, bytes);
    const std::string name = stem + "-" + sha256_file(tmp).substr(0, 8) + ".pth";
    fs::rename(tmp, www() / name);
    return name;
  }

  /// Options that keep retries fast and quiet.
  DownloadOptions options(const std::string& url, const std::string& file_name) const {
    DownloadOptions o;
    o.url = url;
    o.destination = dir_.path() / "models" / file_name;
    o.sha256_prefix = sha256_prefix_from_name(file_name);
    o.max_attempts = 3;
    o.backoff_initial_s = 0.01;
    o.backoff_max_s = 0.05;
    o.connect_timeout_s = 5;
    o.stall_timeout_s = 5;
    return o;
  }

  static fs::path part_of(const fs::path& p) { return fs::path(p.string() + ".part"); }

  TempDir dir_;
  static std::unique_ptr<TempDir> suite_dir_;
  static std::unique_ptr<HttpServer> server_;
};

std::unique_ptr<TempDir> DownloadTest::suite_dir_;
std::unique_ptr<HttpServer> DownloadTest::server_;

TEST_F(DownloadTest, DownloadsVerifiesAndDoesNotFetchAgain) {
  const std::string bytes = test::deterministic_bytes(300000, 1);
  const std::string name = serve_weights("tiny", bytes);
  auto o = options(server_->url("/" + name), name);
  ASSERT_EQ(o.sha256_prefix.size(), 8u);

  const DownloadResult first = download(o);
  EXPECT_TRUE(first.fetched);
  EXPECT_EQ(first.path, o.destination);
  EXPECT_EQ(first.bytes, bytes.size());
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_FALSE(fs::exists(part_of(o.destination)));

  const DownloadResult second = download(o);
  EXPECT_FALSE(second.fetched);
  EXPECT_EQ(second.bytes, bytes.size());
  EXPECT_EQ(server_->requests("/" + name).size(), 1u) << "a verified file must not be fetched again";
}

TEST_F(DownloadTest, ResumesAfterTheConnectionIsCut) {
  const std::string bytes = test::deterministic_bytes(200000, 2);
  const std::string name = serve_weights("cut", bytes);
  const std::string path = "/cut/50000/" + name;
  auto o = options(server_->url(path), name);

  const DownloadResult r = download(o);
  EXPECT_TRUE(r.fetched);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  const auto requests = server_->requests(path);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0], "range=-");
  EXPECT_EQ(requests[1], "range=bytes=50000-") << "the second attempt must resume, not start over";
  EXPECT_FALSE(fs::exists(part_of(o.destination)));
}

TEST_F(DownloadTest, ResumesAfterAStall) {
  const std::string bytes = test::deterministic_bytes(100000, 3);
  const std::string name = serve_weights("stall", bytes);
  const std::string path = "/stall/20000/" + name;
  auto o = options(server_->url(path), name);
  // The server goes silent for 60 s after 20000 bytes. libcurl judges the rate averaged over the last seconds,
  // so ask for a rate the 20000-byte burst alone cannot keep up: the stall is then noticed within ~2 s.
  o.stall_timeout_s = 1;
  o.stall_min_bytes_per_s = 1 << 20;

  const auto start = std::chrono::steady_clock::now();
  const DownloadResult r = download(o);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20)) << "the stall was not detected";
  EXPECT_EQ(test::read_file(r.path), bytes);
  const auto requests = server_->requests(path);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1], "range=bytes=20000-");
}

TEST_F(DownloadTest, ResumesAPartLeftByAnEarlierRun) {
  const std::string bytes = test::deterministic_bytes(150000, 4);
  const std::string name = serve_weights("earlier", bytes);
  auto o = options(server_->url("/" + name), name);
  test::write_file(part_of(o.destination), bytes.substr(0, 1000));

  download(o);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_EQ(server_->requests("/" + name), std::vector<std::string>{"range=bytes=1000-"});
}

TEST_F(DownloadTest, AcceptsACompletePartLeftByAnEarlierRun) {
  // A run that died between the last byte and the rename: the server answers 416 to the resume.
  const std::string bytes = test::deterministic_bytes(30000, 16);
  const std::string name = serve_weights("whole", bytes);
  auto o = options(server_->url("/" + name), name);
  test::write_file(part_of(o.destination), bytes);

  EXPECT_TRUE(download(o).fetched);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_EQ(server_->requests("/" + name), std::vector<std::string>{"range=bytes=30000-"});
  EXPECT_FALSE(fs::exists(part_of(o.destination)));
}

TEST_F(DownloadTest, DiscardsAStalePartThatDoesNotVerify) {
  const std::string bytes = test::deterministic_bytes(150000, 5);
  const std::string name = serve_weights("stale", bytes);
  auto o = options(server_->url("/" + name), name);
  test::write_file(part_of(o.destination), std::string(1000, 'x'));  // from another version of the file

  const DownloadResult r = download(o);
  EXPECT_EQ(test::read_file(r.path), bytes);
  EXPECT_EQ(server_->requests("/" + name), (std::vector<std::string>{"range=bytes=1000-", "range=-"}));
}

TEST_F(DownloadTest, RestartsWhenTheServerIgnoresRange) {
  const std::string bytes = test::deterministic_bytes(50000, 6);
  const std::string name = serve_weights("norange", bytes);
  const std::string path = "/norange/" + name;
  auto o = options(server_->url(path), name);
  test::write_file(part_of(o.destination), bytes.substr(0, 1000));

  download(o);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_EQ(server_->requests(path), (std::vector<std::string>{"range=bytes=1000-", "range=-"}));
}

TEST_F(DownloadTest, ChecksumMismatchIsRejectedAndLeavesNothing) {
  const std::string bytes = test::deterministic_bytes(60000, 7);
  const std::string name = serve_weights("bad", bytes);
  const std::string actual = sha256_file(www() / name);
  auto o = options(server_->url("/" + name), name);
  o.sha256_prefix = actual[0] == '0' ? "11111111" : "00000000";

  try {
    download(o);
    FAIL() << "expected a checksum error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(o.url), std::string::npos) << msg;
    EXPECT_NE(msg.find(o.destination.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find(o.sha256_prefix), std::string::npos) << msg;
    EXPECT_NE(msg.find(actual), std::string::npos) << msg;
  }
  EXPECT_TRUE(test::list_tree(o.destination.parent_path()).empty());
}

TEST_F(DownloadTest, Md5MismatchIsRejected) {
  const std::string name = serve_weights("md5", test::deterministic_bytes(1000, 8));
  auto o = options(server_->url("/" + name), name);
  o.sha256_prefix.clear();
  o.md5 = "c32a1d4ab5d03f1284b67883e8d87530";
  EXPECT_THROW(download(o), Error);
  EXPECT_TRUE(test::list_tree(o.destination.parent_path()).empty());
  o.md5 = md5_file(www() / name);
  EXPECT_TRUE(download(o).fetched);
}

TEST_F(DownloadTest, NotFoundIsAClearErrorAndNotRetried) {
  auto o = options(server_->url("/missing-0123abcd.pth"), "missing-0123abcd.pth");
  try {
    download(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(o.url), std::string::npos) << msg;
    EXPECT_NE(msg.find("HTTP status 404"), std::string::npos) << msg;
  }
  EXPECT_EQ(server_->requests("/missing-0123abcd.pth").size(), 1u);
  EXPECT_TRUE(test::list_tree(o.destination.parent_path()).empty());
}

TEST_F(DownloadTest, ServerErrorsAreRetried) {
  const std::string bytes = test::deterministic_bytes(10000, 9);
  const std::string name = serve_weights("busy", bytes);
  const std::string path = "/fail/503/2/" + name;
  const DownloadResult r = download(options(server_->url(path), name));
  EXPECT_EQ(test::read_file(r.path), bytes);
  EXPECT_EQ(server_->requests(path).size(), 3u);
}

TEST_F(DownloadTest, TooManyRequestsIsRetried) {
  const std::string name = serve_weights("throttled", test::deterministic_bytes(1000, 10));
  const std::string path = "/fail/429/1/" + name;
  download(options(server_->url(path), name));
  EXPECT_EQ(server_->requests(path).size(), 2u);
}

TEST_F(DownloadTest, ForbiddenIsNotRetried) {
  const std::string name = serve_weights("forbidden", test::deterministic_bytes(1000, 11));
  const std::string path = "/fail/403/9/" + name;
  auto o = options(server_->url(path), name);
  try {
    download(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP status 403"), std::string::npos) << e.what();
  }
  EXPECT_EQ(server_->requests(path).size(), 1u);
  EXPECT_TRUE(test::list_tree(o.destination.parent_path()).empty());
}

TEST_F(DownloadTest, GivesUpAfterMaxAttemptsAndKeepsThePart) {
  const std::string bytes = test::deterministic_bytes(100000, 12);
  const std::string name = serve_weights("flaky", bytes);
  const std::string path = "/cutalways/10000/" + name;
  auto o = options(server_->url(path), name);
  o.max_attempts = 2;
  try {
    download(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(o.url), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 attempts"), std::string::npos) << msg;
  }
  EXPECT_EQ(server_->requests(path).size(), 2u);
  ASSERT_TRUE(fs::exists(part_of(o.destination)));
  EXPECT_EQ(test::read_file(part_of(o.destination)), bytes.substr(0, 20000));
  EXPECT_FALSE(fs::exists(o.destination));

  // The next run resumes the kept part from where it stopped.
  o.url = server_->url("/" + name);
  download(o);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_EQ(server_->requests("/" + name), std::vector<std::string>{"range=bytes=20000-"});
}

TEST_F(DownloadTest, PresentFileThatDoesNotVerifyIsFetchedAgain) {
  const std::string bytes = test::deterministic_bytes(5000, 13);
  const std::string name = serve_weights("corrupt", bytes);
  auto o = options(server_->url("/" + name), name);
  test::write_file(o.destination, "not the weights");
  const DownloadResult r = download(o);
  EXPECT_TRUE(r.fetched);
  EXPECT_EQ(test::read_file(o.destination), bytes);
}

TEST_F(DownloadTest, PresentFileWithoutChecksumIsKept) {
  auto o = options(server_->url("/never-requested.bin"), "never-requested.bin");
  ASSERT_TRUE(o.sha256_prefix.empty());
  test::write_file(o.destination, "already here");
  EXPECT_FALSE(download(o).fetched);
  EXPECT_TRUE(server_->requests("/never-requested.bin").empty());
}

// Without a checksum, what was recorded at the download is the reference: a file changed since is fetched again.
TEST_F(DownloadTest, AFileWithoutChecksumThatChangedSinceItsDownloadIsFetchedAgain) {
  const std::string bytes = test::deterministic_bytes(3000, 21);
  test::write_file(www() / "plain.bin", bytes);
  auto o = options(server_->url("/plain.bin"), "plain.bin");
  ASSERT_TRUE(o.sha256_prefix.empty());
  EXPECT_EQ(download(o).sha256, sha256_file(www() / "plain.bin"));
  EXPECT_FALSE(download(o).fetched);
  test::write_file(o.destination, "damaged");
  EXPECT_THROW(check_verified(o.destination), DataError);
  EXPECT_TRUE(download(o).fetched);
  EXPECT_EQ(test::read_file(o.destination), bytes);
  EXPECT_NO_THROW(check_verified(o.destination));
  EXPECT_EQ(server_->requests("/plain.bin").size(), 2u);
}

TEST_F(DownloadTest, FileUrl) {
  const std::string bytes = test::deterministic_bytes(70000, 14);
  const std::string name = serve_weights("local", bytes);
  auto o = options("file://" + (www() / name).string(), name);
  DownloadResult r = download(o);
  EXPECT_TRUE(r.fetched);
  EXPECT_EQ(test::read_file(r.path), bytes);

  // A missing local file fails at once, naming the URL.
  auto missing = options("file://" + (www() / "nope-0123abcd.pth").string(), "nope-0123abcd.pth");
  try {
    download(missing);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing.url), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(missing.destination));
  EXPECT_FALSE(fs::exists(part_of(missing.destination)));
}

TEST_F(DownloadTest, ConcurrentDownloadsOfOneFileFetchItOnce) {
  const std::string bytes = test::deterministic_bytes(400000, 15);
  const std::string name = serve_weights("shared", bytes);
  const auto o = options(server_->url("/" + name), name);
  DownloadResult results[2];
  std::string other_error;
  std::thread other([&] {
    try {
      results[1] = download(o);
    } catch (const std::exception& e) {
      other_error = e.what();
    }
  });
  results[0] = download(o);
  other.join();
  ASSERT_EQ(other_error, "");
  EXPECT_NE(results[0].fetched, results[1].fetched) << "exactly one of them fetches";
  EXPECT_EQ(server_->requests("/" + name).size(), 1u);
  EXPECT_EQ(test::read_file(o.destination), bytes);
}

TEST_F(DownloadTest, InvalidOptionsAreRejected) {
  auto o = options(server_->url("/x"), "x.bin");
  o.md5 = "1234";
  EXPECT_THROW(download(o), Error);
  o = options(server_->url("/x"), "x.bin");
  o.sha256_prefix = "not-hex";
  EXPECT_THROW(download(o), Error);
  o = options("", "x.bin");
  EXPECT_THROW(download(o), Error);
  EXPECT_TRUE(server_->requests("/x").empty());
}

TEST_F(DownloadTest, CifarLikeTarballDownloadsVerifiesAndExtracts) {
  const fs::path tarball = www() / "cifar-10-binary.tar.gz";
  const auto entries = test::cifar_like_entries(3);
  test::make_archive(tarball, entries, test::ArchiveFormat::kTarGz);

  DownloadOptions o = options(server_->url("/cifar-10-binary.tar.gz"), "cifar-10-binary.tar.gz");
  o.destination = dir_.path() / "downloaded_datasets" / "cifar-10-binary.tar.gz";
  o.md5 = md5_file(tarball);
  const DownloadResult r = download(o);
  EXPECT_EQ(test::read_file(r.path), test::read_file(tarball));

  const fs::path dest = dir_.path() / "downloaded_datasets" / "cifar10";
  EXPECT_TRUE(extract_archive(r.path, dest));
  for (const auto& e : entries) {
    if (e.kind != test::Entry::kFile) continue;
    EXPECT_EQ(test::read_file(dest / e.name), e.content) << e.name;
  }
  EXPECT_EQ(fs::file_size(dest / "cifar-10-batches-bin" / "data_batch_1.bin"), 3u * 3073u);
  EXPECT_FALSE(download(o).fetched);
  EXPECT_FALSE(extract_archive(r.path, dest));
}

}  // namespace
}  // namespace expctl::io
