// torch files: torchvision state dicts in, expctl checkpoints out, both checked against Python's torch.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/io/torch_file.h"
#include "runner/models/channel_groups.h"
#include "runner/models/checkpoint.h"
#include "runner/models/torchscript_export.h"
#include "runner/models/zoo.h"

namespace em = expctl::models;
namespace fs = std::filesystem;

namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kScripts = std::string(EXPCTL_SOURCE_DIR) + "/tests/models/";

// Runs a shell command; returns its exit status and (stdout + stderr).
int run(const std::string& cmd, std::string* output) {
  FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) output->append(buf.data(), n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

fs::path make_temp_dir(const std::string& tag) {
  auto dir = fs::temp_directory_path() / ("expctl_models_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary);
  out << bytes;
}

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Expects `fn` to throw expctl::DataError whose message contains every one of `parts`.
template <typename Fn>
void expect_data_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no DataError";
  } catch (const expctl::DataError& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n(missing: " << p << ")";
  }
}

// The "arch" entry versions before the single executor wrote for a ResNet-18/34.
expctl::io::PickleValue legacy_arch(const em::ResNetSpec& spec) {
  const em::ResNetSpec s = spec.resolved();
  auto ints = [](const std::vector<int64_t>& v) {
    auto l = expctl::io::PickleValue::list();
    for (int64_t x : v) l.items.push_back(expctl::io::PickleValue::from(x));
    return l;
  };
  auto arch = expctl::io::PickleValue::dict();
  arch.set("family", expctl::io::PickleValue::from("resnet"));
  arch.set("name", expctl::io::PickleValue::from(s.name()));
  arch.set("depth", expctl::io::PickleValue::from(int64_t{s.depth}));
  arch.set("num_classes", expctl::io::PickleValue::from(s.num_classes));
  arch.set("stem", expctl::io::PickleValue::from(em::to_string(s.stem)));
  arch.set("in_channels", expctl::io::PickleValue::from(s.in_channels));
  arch.set("stage_widths", ints(s.stage_widths));
  arch.set("block_widths", ints(s.block_widths));
  return arch;
}

void randomise(em::GraphNet& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& m : model->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.normal_(0, 0.1);
      bn->running_mean.normal_(0, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
      bn->num_batches_tracked.fill_(11);
    }
  }
}

float max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<float>(); }

}  // namespace

// Fixtures from torchvision, made once for the suite by tests/models/make_torchvision_fixtures.py.
class TorchvisionInterop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = make_temp_dir("tv");
    std::string out;
    if (run(kPython + " -c 'import torch, torchvision'", &out) != 0) {
      skip_ = "python3 with torch + torchvision unavailable: " + out;
      return;
    }
    out.clear();
    if (run(kPython + " " + kScripts + "make_torchvision_fixtures.py " + dir_.string(), &out) != 0)
      failure_ = "fixture script failed:\n" + out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  void SetUp() override {
    if (!skip_.empty()) GTEST_FAIL() << "scripts/install-deps.sh installs what is missing: " << skip_;
    ASSERT_TRUE(failure_.empty()) << failure_;
  }
  static fs::path file(const std::string& name) { return dir_ / name; }

  // Runs the input saved in `io` through `model` and compares with the logits Python saved beside it.
  static void expect_same_logits(em::GraphNet model, const std::string& io) {
    const auto v = expctl::io::read_torch_file(file(io));
    ASSERT_EQ(v.kind, expctl::io::PickleValue::Kind::Dict);
    torch::NoGradGuard g;
    model->eval();
    const auto logits = model->forward(v.find("x")->tensor);
    EXPECT_LE(max_diff(logits, v.find("logits")->tensor), 1e-5) << io;
  }

  static inline fs::path dir_;
  static inline std::string skip_, failure_;
};

TEST_F(TorchvisionInterop, LoadsTorchvisionStateDictsAndGivesTheSameLogits) {
  for (const std::string variant : {"imagenet", "cifar"}) {
    const auto sd = expctl::io::read_state_dict_file(file("tv_" + variant + ".pth"));
    EXPECT_EQ(sd.size(), 122u);
    EXPECT_EQ(sd["bn1.num_batches_tracked"].scalar_type(), torch::kLong);
    EXPECT_EQ(sd["bn1.num_batches_tracked"].item<int64_t>(), 7);
    const auto spec = em::infer_spec(sd);
    EXPECT_EQ(spec.num_classes, 10);
    EXPECT_EQ(spec.stem, variant == "cifar" ? em::Stem::Cifar : em::Stem::ImageNet);
    em::GraphNet model = em::make_resnet(spec);
    em::load_state_dict(*model, sd, variant);
    expect_same_logits(model, "io_" + variant + ".pth");
  }
}

TEST_F(TorchvisionInterop, LoadsTheLegacyFormatWithoutNumBatchesTracked) {
  const auto legacy = expctl::io::read_state_dict_file(file("tv_imagenet_legacy.pth"));
  EXPECT_EQ(legacy.size(), 122u - 20u);
  const auto zip = expctl::io::read_state_dict_file(file("tv_imagenet.pth"));
  for (const auto& item : legacy) EXPECT_TRUE(torch::equal(item.value(), zip[item.key()])) << item.key();
  em::ResNetSpec spec;
  spec.num_classes = 10;
  em::GraphNet model = em::make_resnet(spec);
  em::load_state_dict(*model, legacy, "legacy");  // missing num_batches_tracked is tolerated
  expect_same_logits(model, "io_imagenet.pth");
}

TEST_F(TorchvisionInterop, AdaptingToTheCifarStemMatchesPython) {
  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = em::Stem::Cifar;
  auto model = em::make_pretrained_resnet(spec, expctl::io::read_state_dict_file(file("tv_imagenet.pth")));
  expect_same_logits(model, "io_adapted_cifar.pth");
}

TEST_F(TorchvisionInterop, ForeignTruncatedAndMismatchedFilesAreClearErrors) {
  const auto whole = file("whole_module.pth").string();
  expect_data_error([&] { expctl::io::read_state_dict_file(whole); },
                    {whole, "torch.nn.modules.linear.Linear", "state_dict()"});

  const std::string bytes = read_bytes(file("tv_cifar.pth"));
  const auto cut = file("cut.pth");
  write_bytes(cut, bytes.substr(0, bytes.size() / 2));
  expect_data_error([&] { expctl::io::read_state_dict_file(cut); }, {cut.string(), "truncated"});
  const std::string legacy = read_bytes(file("tv_imagenet_legacy.pth"));
  write_bytes(cut, legacy.substr(0, legacy.size() - 1000));
  expect_data_error([&] { expctl::io::read_state_dict_file(cut); }, {cut.string(), "end of file"});

  const auto text = file("text.pth");
  write_bytes(text, "hello, not a model\n");
  expect_data_error([&] { expctl::io::read_state_dict_file(text); }, {text.string(), "not a PyTorch file"});
  write_bytes(text, "");
  expect_data_error([&] { expctl::io::read_state_dict_file(text); }, {text.string(), "empty"});
  expect_data_error([&] { expctl::io::read_state_dict_file(file("nope.pth")); }, {"nope.pth", "no such file"});

  // A ResNet-18 file into a ResNet-34 / a 1000-class model: names the keys and shapes.
  const auto sd = expctl::io::read_state_dict_file(file("tv_cifar.pth"));
  em::ResNetSpec r34;
  r34.depth = 34;
  r34.num_classes = 10;
  r34.stem = em::Stem::Cifar;
  em::GraphNet m34 = em::make_resnet(r34);
  expect_data_error([&] { em::load_state_dict(*m34, sd, "tv_cifar.pth"); },
                    {"tv_cifar.pth", "missing keys: layer1.2.conv1.weight"});
  em::ResNetSpec wide;
  wide.stem = em::Stem::Cifar;
  em::GraphNet m1000 = em::make_resnet(wide);
  expect_data_error([&] { em::load_state_dict(*m1000, sd, "tv_cifar.pth"); },
                    {"fc.weight: file has [10, 512], model has [1000, 512]"});
  // Pretrained weights are not a checkpoint.
  expect_data_error([&] { em::read_checkpoint(file("tv_cifar.pth")); },
                    {"not an expctl checkpoint", "plain state dict"});
}

// expctl checkpoints: saved here, opened by Python's torch.load (weights_only) and rebuilt in torchvision.
class Checkpoints : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_temp_dir("ckpt"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(Checkpoints, RoundTripAndPythonReproducesTheLogits) {
  torch::NoGradGuard g;
  struct Case {
    std::string name;
    em::ResNetSpec spec;
    bool prune;
    std::vector<int64_t> input;
  };
  em::ResNetSpec cifar;
  cifar.num_classes = 10;
  cifar.stem = em::Stem::Cifar;
  em::ResNetSpec r34;
  r34.depth = 34;
  r34.num_classes = 5;
  r34.stage_widths = {16, 24, 32, 40};
  std::vector<Case> cases = {{"dense", cifar, false, {2, 3, 32, 32}},
                             {"pruned", cifar, true, {2, 3, 32, 32}},
                             {"r34_pruned", r34, true, {1, 3, 64, 64}}};
  std::string args;
  for (const auto& c : cases) {
    em::GraphNet model = em::make_resnet(c.spec);
    randomise(model, 9);
    if (c.prune) {
      // Different widths in every group, including the residual streams.
      torch::manual_seed(2);
      for (const auto& group : em::channel_groups(model))
        em::prune_group(model, group, torch::randperm(group.size).slice(0, 0, group.size * 2 / 3 + 1));
    }
    model->eval();
    const auto x = torch::randn(c.input);
    const auto logits = model->forward(x);
    em::StateDict masks;
    masks.insert("layer1.0.conv1.weight", em::state_dict(*model)["layer1.0.conv1.weight"].abs() > 0.01);
    const nlohmann::json meta = {{"epoch", 5}, {"accuracy", 91.25}, {"config_hash", "abc123"}, {"pruned", c.prune}};
    const auto ckpt = dir_ / "sub" / (c.name + ".pt");
    em::save_checkpoint(ckpt, model, meta, masks);
    em::export_torchscript(*model, model->graph(), dir_ / "sub" / (c.name + ".torchscript.pt"));
    auto io = expctl::io::PickleValue::dict();
    io.set("x", expctl::io::PickleValue::from(x));
    io.set("logits", expctl::io::PickleValue::from(logits));
    expctl::write_file_atomic(dir_ / (c.name + "_io.pt"), expctl::io::serialize_torch_file(io), "io");
    args += " " + ckpt.string() + " " + (dir_ / (c.name + "_io.pt")).string();

    em::Checkpoint contents;
    em::GraphNet back = em::load_checkpoint(ckpt, &contents);
    back->eval();
    EXPECT_TRUE(torch::equal(back->forward(x), logits)) << c.name;
    EXPECT_EQ(contents.family, "graph");
    EXPECT_EQ(em::resnet_spec(*back), em::resnet_spec(*model));
    EXPECT_EQ(contents.meta, meta);
    ASSERT_EQ(contents.masks.size(), 1u);
    EXPECT_TRUE(torch::equal(contents.masks["layer1.0.conv1.weight"], masks["layer1.0.conv1.weight"]));
    EXPECT_EQ(contents.state_dict["bn1.num_batches_tracked"].item<int64_t>(), 11);
    if (c.prune) EXPECT_NE(em::resnet_spec(*back).stage_widths, c.spec.resolved().stage_widths);
  }
  std::string out;
  if (run(kPython + " -c 'import torch, torchvision'", &out) != 0)
    GTEST_FAIL() << "scripts/install-deps.sh installs what is missing: "
                 << "python3 with torchvision unavailable";
  out.clear();
  EXPECT_EQ(run(kPython + " " + kScripts + "check_expctl_checkpoints.py" + args, &out), 0) << out;
  std::cout << out;
}

TEST_F(Checkpoints, TruncatedForeignAndInconsistentFilesAreClearErrors) {
  em::GraphNet model = em::make_resnet(em::ResNetSpec{});
  const auto ckpt = dir_ / "m.pt";
  em::save_checkpoint(ckpt, model);
  const std::string bytes = read_bytes(ckpt);
  for (size_t keep : {bytes.size() - 100, bytes.size() / 2, size_t{3000}, size_t{10}}) {
    const auto cut = dir_ / "cut.pt";
    write_bytes(cut, bytes.substr(0, keep));
    expect_data_error([&] { em::read_checkpoint(cut); }, {cut.string()});
  }
  auto notckpt = expctl::io::PickleValue::dict();
  notckpt.set("weights", expctl::io::PickleValue::from(int64_t{3}));
  expctl::write_file_atomic(dir_ / "other.pt", expctl::io::serialize_torch_file(notckpt), "x");
  expect_data_error([&] { em::read_checkpoint(dir_ / "other.pt"); }, {"other.pt", "not an expctl checkpoint"});
  // A checkpoint whose arch disagrees with its tensors: a graph with another class count, and a file of an earlier
  // version whose ResNet widths say so.
  auto v = expctl::io::read_torch_file(ckpt);
  auto* arch = const_cast<expctl::io::PickleValue*>(v.find("arch"));
  em::ResNetSpec twelve;
  twelve.num_classes = 12;
  em::save_checkpoint(dir_ / "twelve.pt", em::make_resnet(twelve));
  const auto twelve_file = expctl::io::read_torch_file(dir_ / "twelve.pt");
  arch->set("graph", *twelve_file.find("arch")->find("graph"));
  expctl::write_file_atomic(dir_ / "bad_arch.pt", expctl::io::serialize_torch_file(v), "x");
  expect_data_error([&] { em::load_checkpoint(dir_ / "bad_arch.pt"); },
                    {"bad_arch.pt", "fc.weight: file has [1000, 512], model has [12, 512]"});
  *arch = legacy_arch(twelve);
  expctl::write_file_atomic(dir_ / "bad_arch.pt", expctl::io::serialize_torch_file(v), "x");
  expect_data_error([&] { em::load_checkpoint(dir_ / "bad_arch.pt"); },
                    {"bad_arch.pt", "fc.weight: file has [1000, 512], model has [12, 512]"});
  arch->set("depth", expctl::io::PickleValue::from(int64_t{50}));
  expctl::write_file_atomic(dir_ / "bad_arch.pt", expctl::io::serialize_torch_file(v), "x");
  expect_data_error([&] { em::read_checkpoint(dir_ / "bad_arch.pt"); }, {"bad_arch.pt", "depth 50"});
}

TEST_F(Checkpoints, ResNetFilesOfEarlierVersionsLoadAsTheirGraph) {
  // Versions before the single executor wrote ResNet-18/34 as {"family": "resnet", widths}: users have such files.
  torch::NoGradGuard g;
  em::ResNetSpec spec;
  spec.num_classes = 10;
  spec.stem = em::Stem::Cifar;
  spec.in_channels = 1;
  em::GraphNet model = em::make_resnet(spec);
  randomise(model, 4);
  torch::manual_seed(5);
  for (const auto& group : em::channel_groups(model))
    em::prune_group(model, group, torch::randperm(group.size).slice(0, 0, group.size / 2 + 1));
  model->eval();
  const em::ResNetSpec pruned = em::resnet_spec(*model);
  EXPECT_NE(pruned, spec);
  const auto x = torch::randn({2, 1, 32, 32});
  const auto logits = model->forward(x);
  em::StateDict masks;
  masks.insert("fc.weight", em::state_dict(*model)["fc.weight"].abs() > 0.01);
  const auto ckpt = dir_ / "now.pt";
  em::save_checkpoint(ckpt, model, {{"epoch", 3}}, masks);
  auto v = expctl::io::read_torch_file(ckpt);
  *const_cast<expctl::io::PickleValue*>(v.find("arch")) = legacy_arch(pruned);
  const auto old_file = dir_ / "ResNet18_FashionMNIST_FTAP_NC_3.pt";
  expctl::write_file_atomic(old_file, expctl::io::serialize_torch_file(v), "x");

  em::Checkpoint contents;
  em::GraphNet back = em::load_checkpoint(old_file, &contents);
  EXPECT_EQ(contents.family, "resnet");
  EXPECT_EQ(contents.name, "resnet18");
  EXPECT_EQ(contents.graph.to_json(), model->graph().to_json());
  EXPECT_EQ(contents.meta, (nlohmann::json{{"epoch", 3}}));
  EXPECT_TRUE(torch::equal(contents.masks["fc.weight"], masks["fc.weight"]));
  EXPECT_EQ(back->arch_name(), "resnet18");
  EXPECT_EQ(em::resnet_spec(*back), pruned);
  back->eval();
  EXPECT_TRUE(torch::equal(back->forward(x), logits));
  // Saved again, it is a graph checkpoint like every other model's.
  em::save_checkpoint(dir_ / "again.pt", back);
  EXPECT_EQ(em::read_checkpoint(dir_ / "again.pt").family, "graph");
}

TEST_F(Checkpoints, FailedSaveLeavesThePreviousCheckpointIntact) {
  em::ResNetSpec spec;
  spec.num_classes = 3;
  spec.stage_widths = {4, 4, 4, 4};
  em::GraphNet model = em::make_resnet(spec);
  const auto ckpt = dir_ / "keep.pt";
  em::save_checkpoint(ckpt, model, {{"epoch", 1}});
  const std::string before = read_bytes(ckpt);
  // Block the temporary file's name with a folder, so writing it fails.
  fs::create_directories(dir_ / (".keep.pt.tmp" + std::to_string(::getpid())));
  try {
    em::save_checkpoint(ckpt, model, {{"epoch", 2}});
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("previous checkpoint is intact"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(ckpt.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(ckpt), before);
  em::Checkpoint c;
  em::load_checkpoint(ckpt, &c);
  EXPECT_EQ(c.meta["epoch"], 1);
  // Bad masks fail before anything is written.
  em::StateDict masks;
  masks.insert("fc.weight", torch::ones({2, 2}, torch::kBool));
  EXPECT_THROW(em::save_checkpoint(ckpt, model, {}, masks), expctl::Error);
  EXPECT_EQ(read_bytes(ckpt), before);
}

TEST_F(Checkpoints, TrainingStateRestoresOptimizerEpochAndRng) {
  em::ResNetSpec spec;
  spec.num_classes = 3;
  spec.stem = em::Stem::Cifar;
  spec.stage_widths = {4, 6, 8, 10};
  em::GraphNet model = em::make_resnet(spec);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto step = [&](em::GraphNet& m, torch::optim::Optimizer& o) {
    o.zero_grad();
    auto loss = m->forward(torch::ones({2, 3, 8, 8})).sum();
    loss.backward();
    o.step();
  };
  step(model, opt);
  const auto ckpt = dir_ / "ft_5.pt";
  em::save_checkpoint(ckpt, model, {{"epoch", 5}});
  em::save_training_state(ckpt, opt, 5, {{"best", 0.5}});
  EXPECT_EQ(em::training_state_path(ckpt), dir_ / "ft_5.train.pt");
  EXPECT_TRUE(fs::exists(dir_ / "ft_5.train.pt"));
  const auto after_save = torch::rand({4});
  step(model, opt);
  const auto expected = em::state_dict(*model)["fc.weight"].clone();

  em::GraphNet resumed = em::load_checkpoint(ckpt);
  torch::optim::SGD opt2(resumed->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto state = em::load_training_state(ckpt, opt2);
  EXPECT_EQ(state.epoch, 5);
  EXPECT_EQ(state.extra["best"], 0.5);
  EXPECT_TRUE(torch::equal(torch::rand({4}), after_save));  // RNG restored
  step(resumed, opt2);  // with the momentum buffers restored, the same step as the uninterrupted run
  EXPECT_LT(max_diff(em::state_dict(*resumed)["fc.weight"], expected), 1e-6);

  write_bytes(dir_ / "junk.train.pt", "junk");
  expect_data_error([&] { em::load_training_state(dir_ / "junk.pt", opt2); }, {"junk.train.pt"});
  expect_data_error([&] { em::load_training_state(dir_ / "none.pt", opt2); }, {"none.train.pt", "no such file"});
}
