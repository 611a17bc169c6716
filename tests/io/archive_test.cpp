// extract_archive(): real tar/tar.gz/zip files made by the test, good ones and hostile ones.
#include "runner/io/archive.h"

#include <gtest/gtest.h>

#include "runner/core/error.h"
#include "tests/io/io_test_util.h"

namespace expctl::io {
namespace {

namespace fs = std::filesystem;

using test::ArchiveFormat;
using test::Entry;
using test::TempDir;

class ArchiveTest : public ::testing::Test {
 protected:
  fs::path archive(const std::vector<Entry>& entries, ArchiveFormat format = ArchiveFormat::kTarGz) {
    const fs::path p = dir_.path() / "in" / (format == ArchiveFormat::kZip ? "a.zip" : "a.tar.gz");
    fs::create_directories(p.parent_path());
    test::make_archive(p, entries, format);
    return p;
  }

  /// Extraction must fail naming the archive and `bad_entry`, and leave nothing in `out/` (the parent of dest).
  void expect_rejected(const std::vector<Entry>& entries, const std::string& bad_entry) {
    const fs::path a = archive(entries);
    const fs::path out = dir_.path() / "out";
    try {
      extract_archive(a, out / "dest");
      ADD_FAILURE() << "expected " << bad_entry << " to be rejected";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(a.string()), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + bad_entry + "'"), std::string::npos) << msg;
    }
    EXPECT_TRUE(test::list_tree(out).empty()) << "left behind: " << testing::PrintToString(test::list_tree(out));
    EXPECT_FALSE(fs::exists(dir_.path() / "evil.txt"));
  }

  TempDir dir_;
};

TEST_F(ArchiveTest, ExtractsCifarLikeTarGzOnce) {
  const auto entries = test::cifar_like_entries(4);
  const fs::path a = archive(entries);
  const fs::path dest = dir_.path() / "datasets" / "cifar10";
  EXPECT_TRUE(extract_archive(a, dest));
  for (const auto& e : entries) {
    if (e.kind == Entry::kFile) EXPECT_EQ(test::read_file(dest / e.name), e.content) << e.name;
  }
  EXPECT_TRUE(fs::exists(dest / kExtractMarker));
  EXPECT_EQ(fs::file_size(dest / "cifar-10-batches-bin" / "test_batch.bin"), 4u * 3073u);
  // Only dest itself in its parent: the temporary folder is gone.
  EXPECT_EQ(test::list_tree(dest.parent_path()).front(), "cifar10");
  EXPECT_EQ(std::distance(fs::directory_iterator(dest.parent_path()), fs::directory_iterator()), 1);

  // Idempotent: a completed folder is not touched again, even when the archive is gone.
  fs::remove(a);
  EXPECT_FALSE(extract_archive(a, dest));
}

TEST_F(ArchiveTest, ExtractsZipAndPlainTar) {
  const std::vector<Entry> entries = {{Entry::kFile, "d/x.bin", test::deterministic_bytes(5000, 1), ""},
                                      {Entry::kFile, "./y.txt", "hello", ""}};
  const fs::path zip = archive(entries, ArchiveFormat::kZip);
  EXPECT_TRUE(extract_archive(zip, dir_.path() / "z"));
  EXPECT_EQ(test::read_file(dir_.path() / "z" / "d" / "x.bin"), entries[0].content);
  EXPECT_EQ(test::read_file(dir_.path() / "z" / "y.txt"), "hello");

  const fs::path tar = dir_.path() / "plain.tar";
  test::make_archive(tar, entries, ArchiveFormat::kTar);
  EXPECT_TRUE(extract_archive(tar, dir_.path() / "t/"));  // a trailing slash is fine
  EXPECT_EQ(test::read_file(dir_.path() / "t" / "y.txt"), "hello");
}

TEST_F(ArchiveTest, LinksInsideTheFolderAreKept) {
  const fs::path a = archive({{Entry::kFile, "data/file.bin", "payload", ""},
                              {Entry::kSymlink, "alias.bin", "", "data/file.bin"},
                              {Entry::kSymlink, "data/self", "", "../data"},
                              {Entry::kHardlink, "data/hard.bin", "", "data/file.bin"}});
  const fs::path dest = dir_.path() / "links";
  EXPECT_TRUE(extract_archive(a, dest));
  EXPECT_TRUE(fs::is_symlink(dest / "alias.bin"));
  EXPECT_EQ(test::read_file(dest / "alias.bin"), "payload");
  EXPECT_EQ(test::read_file(dest / "data" / "hard.bin"), "payload");
  EXPECT_EQ(fs::hard_link_count(dest / "data" / "file.bin"), 2u);
}

TEST_F(ArchiveTest, RejectsDotDotEntries) {
  expect_rejected({{Entry::kFile, "ok.txt", "fine", ""}, {Entry::kFile, "../evil.txt", "gotcha", ""}}, "../evil.txt");
  expect_rejected({{Entry::kFile, "a/../../evil.txt", "gotcha", ""}}, "a/../../evil.txt");
}

TEST_F(ArchiveTest, RejectsAbsolutePaths) {
  const fs::path target = dir_.path() / "evil.txt";
  expect_rejected({{Entry::kFile, "ok.txt", "fine", ""}, {Entry::kFile, target.string(), "gotcha", ""}},
                  target.string());
}

TEST_F(ArchiveTest, RejectsSymlinksPointingOutside) {
  expect_rejected({{Entry::kFile, "ok.txt", "fine", ""}, {Entry::kSymlink, "sub/link", "", "../../evil.txt"}},
                  "sub/link");
  expect_rejected({{Entry::kSymlink, "abs", "", (dir_.path() / "evil.txt").string()}}, "abs");
  // Each link alone stays inside; together they lead out (b -> a/.. with a -> . is the parent of the folder).
  expect_rejected({{Entry::kSymlink, "a", "", "."}, {Entry::kSymlink, "b", "", "a/.."}}, "b");
}

TEST_F(ArchiveTest, RejectsWritingThroughASymlinkChain) {
  // a -> . and b -> a/.. pass the lexical check one by one, but b resolves to the parent of the folder:
  // a file written below b would land outside.
  expect_rejected(
      {{Entry::kSymlink, "a", "", "."}, {Entry::kSymlink, "b", "", "a/.."}, {Entry::kFile, "b/evil.txt", "gotcha", ""}},
      "b/evil.txt");
}

TEST_F(ArchiveTest, RejectsHardlinksPointingOutside) {
  test::write_file(dir_.path() / "secret.txt", "secret");
  expect_rejected({{Entry::kHardlink, "h", "", "../secret.txt"}}, "h");
  expect_rejected({{Entry::kHardlink, "h", "", (dir_.path() / "secret.txt").string()}}, "h");
  EXPECT_EQ(fs::hard_link_count(dir_.path() / "secret.txt"), 1u);
}

TEST_F(ArchiveTest, CorruptArchiveLeavesNothing) {
  const fs::path good = archive(test::cifar_like_entries(50));
  const std::string bytes = test::read_file(good);
  const fs::path truncated = dir_.path() / "truncated.tar.gz";
  test::write_file(truncated, bytes.substr(0, bytes.size() / 2));
  const fs::path out = dir_.path() / "out";
  try {
    extract_archive(truncated, out / "dest");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(truncated.string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(test::list_tree(out).empty());

  test::write_file(dir_.path() / "not-an-archive.bin", test::deterministic_bytes(4096, 3));
  EXPECT_THROW(extract_archive(dir_.path() / "not-an-archive.bin", out / "dest"), Error);
  EXPECT_THROW(extract_archive(dir_.path() / "missing.tar.gz", out / "dest"), Error);
  EXPECT_TRUE(test::list_tree(out).empty());
}

TEST_F(ArchiveTest, ExistingFolderWithoutMarkerIsNotOverwritten) {
  const fs::path a = archive({{Entry::kFile, "x.txt", "new", ""}});
  const fs::path dest = dir_.path() / "user";
  test::write_file(dest / "mine.txt", "keep me");
  EXPECT_THROW(extract_archive(a, dest), Error);
  EXPECT_EQ(test::read_file(dest / "mine.txt"), "keep me");

  const fs::path empty = dir_.path() / "empty";
  fs::create_directories(empty);
  EXPECT_TRUE(extract_archive(a, empty));
  EXPECT_EQ(test::read_file(empty / "x.txt"), "new");
}

TEST_F(ArchiveTest, ContentIsCheckedBeforeItIsMarkedDone) {
  const fs::path a = archive({{Entry::kFile, "d/x.bin", "123", ""}});
  const fs::path out = dir_.path() / "out";
  ExtractOptions o;
  o.check_content = [](const fs::path& root) {
    if (fs::file_size(root / "d/x.bin") != 4) throw DataError((root / "d/x.bin").string() + ": expected 4 bytes");
  };
  try {
    extract_archive(a, out / "dest", o);
    FAIL() << "expected the content to be refused";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              a.string() + ": unpacked content is not valid: d/x.bin: expected 4 bytes; nothing was extracted");
  }
  EXPECT_TRUE(test::list_tree(out).empty()) << testing::PrintToString(test::list_tree(out));
}

TEST_F(ArchiveTest, AnotherSourceIsExtractedAgainAndChangedFilesAreNoticed) {
  const fs::path dest = dir_.path() / "dest";
  const fs::path a = archive({{Entry::kFile, "x.txt", "one", ""}});
  EXPECT_TRUE(extract_archive(a, dest, {"sha-one", {}}));
  EXPECT_FALSE(extract_archive(a, dest, {"sha-one", {}}));
  const fs::path b = archive({{Entry::kFile, "y.txt", "two", ""}});
  EXPECT_TRUE(extract_archive(b, dest, {"sha-two", {}}));
  EXPECT_FALSE(fs::exists(dest / "x.txt"));
  EXPECT_EQ(test::read_file(dest / "y.txt"), "two");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()), 2);  // in/ and dest/

  EXPECT_NO_THROW(check_extracted(dest));
  test::write_file(dest / "y.txt", "tw0");
  EXPECT_THROW(check_extracted(dest), DataError);
  fs::remove(dest / "y.txt");
  try {
    check_extracted(dest);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find((dest / "y.txt").string() + ": missing (it was extracted from "),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace expctl::io
