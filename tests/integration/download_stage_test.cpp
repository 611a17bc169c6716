// The download stage end to end through the expctl binary, the data-set and model registries, and the
// real Fashion-MNIST files from Debian's mirror folder.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "runner/core/config.h"
#include "runner/core/error.h"
#include "runner/data/datasets.h"
#include "runner/io/checksum.h"
#include "runner/models/channel_groups.h"
#include "runner/models/models.h"
#include "runner/models/torch_file.h"
#include "tests/core/test_util.h"
#include "tests/integration/fakes.h"
#include "tests/io/io_test_util.h"

namespace fs = std::filesystem;
using namespace expctl;

namespace {

std::string scenario(const std::string& model, const std::string& dataset) {
  return "schema: 1\nscenario: {test_scenario: TS0, method: Download}\nmodel: " + model + "\ndataset: " + dataset +
         "\nstages: [download]\n";
}

}  // namespace

TEST(DownloadStage, FetchesVerifiesUnpacksAndSkipsWhenUpToDate) {
  test::TempDir tmp;
  fs::path www = tmp / "www";
  fs::create_directories(www);
  io::test::make_archive(www / "cifar-10-binary.tar.gz", io::test::cifar_like_entries(20),
                         io::test::ArchiveFormat::kTarGz);
  fs::path weights = test::write_fake_torchvision_weights(www);
  io::test::HttpServer server(www, tmp / "server.log");
  const std::string weights_path = "/" + weights.filename().string();

  test::write_file(tmp / "s.yaml",
                   scenario("{name: ResNet18, stem: cifar, weights_url: '" + server.url(weights_path) + "'}",
                            "{name: CIFAR10, test_subset: 10, url: '" + server.url("/cifar-10-binary.tar.gz") +
                                "', md5: " + io::md5_file(www / "cifar-10-binary.tar.gz") + "}"));
  auto r = test::run_expctl("run s.yaml", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::is_regular_file(tmp / "downloaded_models" / weights.filename()));
  EXPECT_TRUE(fs::is_regular_file(tmp / "downloaded_datasets/cifar-10-binary.tar.gz"));
  EXPECT_TRUE(fs::is_regular_file(tmp / "downloaded_datasets/CIFAR10/cifar-10-batches-bin/test_batch.bin"));
  EXPECT_TRUE(fs::exists(tmp / "checkpoints/TS0_Download_ResNet18_CIFAR10/manifests/download.json"));
  EXPECT_EQ(server.requests(weights_path).size(), 1u);

  // A rerun is skipped by its manifest: no new request reaches the server.
  r = test::run_expctl("run s.yaml", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stage download: up to date"), std::string::npos) << r.output;
  // --force verifies the present files instead of fetching them again.
  r = test::run_expctl("run s.yaml --force", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("present and verified"), std::string::npos) << r.output;
  EXPECT_EQ(server.requests(weights_path).size(), 1u);
  EXPECT_EQ(server.requests("/cifar-10-binary.tar.gz").size(), 1u);

  // What was downloaded is what the registries read: the data set (subset applied) and the adapted model.
  test::Cwd cwd(tmp.path());
  ScenarioConfig cfg = load_scenario("s.yaml");
  data::Split test = data::load_dataset(cfg, false);
  EXPECT_EQ(test.size(), 10);
  EXPECT_EQ(data::load_dataset(cfg, true).size(), 100);  // 5 batch files of 20 records
  EXPECT_EQ(test.images.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));

  models::ResNet net = models::build_model(cfg);
  EXPECT_EQ(net->spec().num_classes, 10);
  EXPECT_EQ(net->spec().stem, models::Stem::Cifar);
  auto pretrained = models::read_state_dict_file(tmp / "downloaded_models" / weights.filename());
  auto mine = models::state_dict(*net);
  EXPECT_TRUE(torch::equal(mine["layer3.1.conv2.weight"], pretrained["layer3.1.conv2.weight"]));
  EXPECT_TRUE(torch::equal(mine["conv1.weight"], pretrained["conv1.weight"].slice(2, 2, 5).slice(3, 2, 5)));
  EXPECT_EQ(mine["fc.weight"].size(0), 10);
  auto logits = net->forward(test.images.to(torch::kFloat) / 255);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{10, 10}));
}

TEST(DownloadStage, ChecksumMismatchFailsAndLeavesNothing) {
  test::TempDir tmp;
  fs::path www = tmp / "www";
  fs::create_directories(www);
  io::test::make_archive(www / "cifar-10-binary.tar.gz", io::test::cifar_like_entries(2),
                         io::test::ArchiveFormat::kTarGz);
  io::test::HttpServer server(www, tmp / "server.log");
  test::write_file(tmp / "s.yaml", scenario("{name: ResNet18, pretrained: false}",
                                            "{name: CIFAR10, url: '" + server.url("/cifar-10-binary.tar.gz") +
                                                "', md5: 00000000000000000000000000000000}"));
  auto r = test::run_expctl("run s.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("00000000000000000000000000000000"), std::string::npos) << r.output;
  // Only the (empty) lock file that concurrent downloads take turns on remains.
  for (const auto& e : fs::directory_iterator(tmp / "downloaded_datasets"))
    EXPECT_EQ(e.path().filename(), ".download.lock") << r.output;
  EXPECT_FALSE(fs::exists(tmp / "checkpoints/TS0_Download_ResNet18_CIFAR10/manifests/download.json"));
}

TEST(DownloadStage, FashionMnistFromDebiansFolder) {
  const fs::path debian = "/usr/share/datasets/fashion-mnist";
  ASSERT_TRUE(fs::is_directory(debian)) << "install Debian's dataset-fashion-mnist (scripts/install-deps.sh)";
  test::TempDir tmp;
  // Debian recompressed the .gz files: their MD5s differ from the official ones, so they are given here.
  std::vector<std::string> md5;
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                        "t10k-labels-idx1-ubyte.gz"})
    md5.push_back(io::md5_file(debian / f));
  test::write_file(tmp / "s.yaml", scenario("{name: ResNet18, pretrained: false}",
                                            "{name: FashionMNIST, url: 'file://" + debian.string() +
                                                "/', test_subset: 200, md5: [" + join(md5) + "]}"));
  auto r = test::run_expctl("run s.yaml", tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  test::Cwd cwd(tmp.path());
  ScenarioConfig cfg = load_scenario("s.yaml");
  data::Split test = data::load_dataset(cfg, false);
  EXPECT_EQ(test.size(), 200);
  EXPECT_EQ(torch::bincount(test.labels).min().item<int64_t>(), 20);  // class-balanced
  EXPECT_EQ(data::load_dataset(cfg, true).size(), 60000);
  models::ResNet net = models::build_model(cfg);
  EXPECT_EQ(net->spec().in_channels, 1);

  // The official checksums do not match Debian's files: the download is refused.
  test::write_file(tmp / "s2.yaml", scenario("{name: ResNet18, pretrained: false}",
                                             "{name: FashionMNIST, url: 'file://" + debian.string() + "/'}") +
                                        "paths: {datasets: other}\n");
  r = test::run_expctl("run s2.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("8d4fb7e6c68d591d4c3dfef9ec88bf0d"), std::string::npos) << r.output;
}

TEST(DownloadStage, MissingDataOrWeightsSayWhatFetchesThem) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", scenario("{name: ResNet18}", "{name: CIFAR10}") + "paths: {datasets: " +
                                       (tmp / "d").string() + ", models: " + (tmp / "m").string() + "}\n");
  ScenarioConfig cfg = load_scenario(tmp / "s.yaml");
  try {
    data::load_dataset(cfg, false);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), (tmp / "d/CIFAR10/cifar-10-batches-bin").string() +
                                         ": CIFAR-10 not found; the download stage fetches it (expctl run "
                                         "SCENARIO.yaml --only download)");
  }
  try {
    models::build_model(cfg);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), (tmp / "m/resnet18-f37072fd.pth").string() +
                                         ": pretrained weights not found; the download stage fetches them (expctl "
                                         "run SCENARIO.yaml --only download)");
  }
}

TEST(DownloadStage, FashionMnistChecksumListMustHaveFourEntries) {
  test::TempDir tmp;
  test::write_file(tmp / "s.yaml", scenario("{name: ResNet18}", "{name: FashionMNIST, md5: [a, b]}"));
  auto r = test::run_expctl("validate s.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("s.yaml:4:36: dataset.md5: expected 4 checksums (train-images, train-labels, t10k-images, "
                          "t10k-labels) or [], got 2"),
            std::string::npos)
      << r.output;
}

TEST(DownloadStage, AnUnreachableServerNamesTheKeyForAMirror) {
  test::TempDir tmp;
  // Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
  test::write_file(tmp / "s.yaml", scenario("{name: ResNet18, pretrained: false}",
                                            "{name: CIFAR10, url: 'http://127.0.0.1:9/cifar-10-binary.tar.gz'}") +
                                       "download: {retries: 1}\n");
  auto r = test::run_expctl("run s.yaml", tmp.path());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(
      r.output.find("a mirror or a local copy works too: --set dataset.url=file:///path/to/cifar-10-binary.tar.gz"),
      std::string::npos)
      << r.output;
}
