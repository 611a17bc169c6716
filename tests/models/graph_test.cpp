// The model graph and the channel groups derived from it: ResNet's derived groups against the groups that used
// to be declared by hand, and small graphs with each dependency rule (concat offsets, depthwise convs, flatten
// spans, squeeze-excitation multiplies, grouped convs) against hand-written expectations.
#include "runner/models/graph.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "runner/core/error.h"
#include "runner/models/channel_groups.h"
#include "runner/models/zoo.h"
#include "tests/models/tiny_net.h"

namespace em = expctl::models;

namespace expctl::models {
void PrintTo(const GroupMember& m, std::ostream* os) {
  *os << m.tensor << "[dim " << m.dim << ", offset " << m.offset << ", span " << m.span << "]";
}
}  // namespace expctl::models

namespace {

using Members = std::set<em::GroupMember>;

// ---- ResNet: the groups that were declared by hand before the graph existed ------------------------------------

void add_conv_out(em::ChannelGroup& g, const std::string& conv, const std::string& bn) {
  g.members.push_back({conv + ".weight", 0});
  for (const char* t : {"weight", "bias", "running_mean", "running_var"}) g.members.push_back({bn + "." + t, 0});
  g.producers.push_back(conv);
}

void add_consumer(em::ChannelGroup& g, const std::string& layer) {
  g.members.push_back({layer + ".weight", 1});
  g.consumers.push_back(layer);
}

/// expctl's hand-declared ResNet groups up to issue #14 (runner/models/channel_groups.cpp at e03d561).
std::vector<em::ChannelGroup> hand_declared(const em::ResNetSpec& spec) {
  std::vector<em::ChannelGroup> groups;
  const auto blocks = spec.blocks_per_stage();
  size_t block_index = 0;
  for (size_t s = 0; s < blocks.size(); ++s) {
    const std::string stage = "layer" + std::to_string(s + 1);
    em::ChannelGroup stream;
    stream.name = stage;
    stream.size = spec.stage_widths[s];
    if (s == 0) {
      add_conv_out(stream, "conv1", "bn1");
      stream.activation_points.push_back("relu");
    } else {
      add_conv_out(stream, stage + ".0.downsample.0", stage + ".0.downsample.1");
    }
    std::vector<em::ChannelGroup> inner;
    for (int b = 0; b < blocks[s]; ++b, ++block_index) {
      const std::string block = stage + "." + std::to_string(b);
      add_conv_out(stream, block + ".conv2", block + ".bn2");
      stream.activation_points.push_back(block);
      if (b > 0 || s == 0) add_consumer(stream, block + ".conv1");
      em::ChannelGroup g;
      g.name = block + ".conv1";
      g.size = spec.block_widths[block_index];
      add_conv_out(g, block + ".conv1", block + ".bn1");
      add_consumer(g, block + ".conv2");
      g.activation_points.push_back(block + ".relu1");
      inner.push_back(std::move(g));
    }
    if (s + 1 < blocks.size()) {
      const std::string next = "layer" + std::to_string(s + 2) + ".0";
      add_consumer(stream, next + ".conv1");
      add_consumer(stream, next + ".downsample.0");
    } else {
      add_consumer(stream, "fc");
    }
    groups.push_back(std::move(stream));
    for (auto& g : inner) groups.push_back(std::move(g));
  }
  return groups;
}

std::set<std::string> as_set(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

TEST(DerivedGroups, ResNetEqualsTheHandDeclaredGroups) {
  for (int depth : {18, 34}) {
    for (auto stem : {em::Stem::ImageNet, em::Stem::Cifar}) {
      for (int64_t in_channels : {3, 1}) {
        em::ResNetSpec spec;
        spec.depth = depth;
        spec.stem = stem;
        spec.in_channels = in_channels;
        spec.num_classes = 10;
        spec.stage_widths = {8, 12, 16, 20};
        spec = spec.resolved();
        spec.block_widths[1] = 5;  // a pruned inner width
        const em::GraphNet model = em::make_resnet(spec);
        const auto derived = em::derive_channel_groups(model->graph());
        const auto expected = hand_declared(spec);
        ASSERT_EQ(derived.size(), expected.size()) << depth;
        for (size_t i = 0; i < expected.size(); ++i) {
          const auto& d = derived[i];
          const auto& e = expected[i];
          SCOPED_TRACE(e.name);
          EXPECT_EQ(d.name, e.name);  // same names, same order
          EXPECT_EQ(d.size, e.size);
          EXPECT_EQ(Members(d.members.begin(), d.members.end()), Members(e.members.begin(), e.members.end()));
          EXPECT_EQ(d.members.size(), e.members.size());  // no duplicates
          EXPECT_EQ(d.activation_points, e.activation_points);  // forward order (NC averages over them)
          EXPECT_EQ(d.consumers, e.consumers);                  // forward order (Wanda-sp sums over them)
          EXPECT_EQ(as_set(d.producers), as_set(e.producers));
          EXPECT_TRUE(d.depthwise.empty());
        }
        // channel_groups() is the derivation.
        const auto via_model = em::channel_groups(model);
        ASSERT_EQ(via_model.size(), derived.size());
        for (size_t i = 0; i < derived.size(); ++i) EXPECT_EQ(via_model[i].members, derived[i].members);
      }
    }
  }
}

// ---- small graphs: one rule each ---------------------------------------------------------------------------------

const em::ChannelGroup& group(const std::vector<em::ChannelGroup>& groups, const std::string& name) {
  for (const auto& g : groups)
    if (g.name == name) return g;
  throw std::runtime_error("no group " + name);
}

Members bn(const std::string& name, int64_t offset = 0) {
  Members m;
  for (const char* t : {"weight", "bias", "running_mean", "running_var"}) m.insert({name + "." + t, 0, offset, 1});
  return m;
}

Members operator+(Members a, const Members& b) {
  a.insert(b.begin(), b.end());
  return a;
}

Members members(const em::ChannelGroup& g) { return {g.members.begin(), g.members.end()}; }

TEST(DerivedGroups, ConcatenationPlacesEachInputAtItsOffset) {
  // A DenseNet-style block: b reads a; c reads BN+ReLU of concat(a, b).
  em::Graph g;
  int x = g.input("input", 3);
  const int a = g.conv("a", x, 3, 4, 1);
  const int b = g.conv("b", g.activation("b_in", a), 4, 5, 1);
  x = g.activation("relu", g.batch_norm("norm", g.concat("cat", {a, b})));
  g.output(g.conv("c", x, 9, 6, 1, 1, 0, 1, true));
  const auto groups = em::derive_channel_groups(g);
  ASSERT_EQ(groups.size(), 2u);  // c's outputs are the logits
  const auto& ga = group(groups, "a");
  EXPECT_EQ(ga.size, 4);
  EXPECT_EQ(members(ga), (Members{{"a.weight", 0, 0, 1}, {"b.weight", 1, 0, 1}, {"c.weight", 1, 0, 1}} + bn("norm", 0)));
  EXPECT_EQ(ga.consumers, (std::vector<std::string>{"b", "c"}));
  // "relu" carries a's channels at 0 and b's at 4.
  EXPECT_EQ(ga.activation_points, (std::vector<std::string>{"b_in", "relu"}));
  EXPECT_EQ(ga.activation_offsets, (std::vector<int64_t>{0, 0}));
  const auto& gb = group(groups, "b");
  EXPECT_EQ(gb.size, 5);
  EXPECT_EQ(members(gb), (Members{{"b.weight", 0, 0, 1}, {"c.weight", 1, 4, 1}} + bn("norm", 4)));
  EXPECT_EQ(gb.activation_points, std::vector<std::string>{"relu"});
  EXPECT_EQ(gb.activation_offsets, std::vector<int64_t>{4});
}

TEST(DerivedGroups, DepthwiseConvCarriesItsInputChannels) {
  // MobileNetV2's inverted residual: expand 1x1, depthwise 3x3, project 1x1, residual add.
  em::Graph g;
  int x = g.input("input", 3);
  x = g.activation("stem.relu", g.batch_norm("stem.bn", g.conv("stem.conv", x, 3, 8, 1)));
  int y = g.activation("b.relu1", g.batch_norm("b.bn1", g.conv("b.expand", x, 8, 24, 1)));
  y = g.activation("b.relu2", g.batch_norm("b.bn2", g.conv("b.dw", y, 24, 24, 1, 1, 0, 24)));
  y = g.batch_norm("b.bn3", g.conv("b.project", y, 24, 8, 1));
  x = g.add("b.add", {x, y});
  g.output(g.linear("fc", g.flatten("flatten", g.adaptive_avg_pool("pool", x, 1, 1), 1), 8, 2));
  const auto groups = em::derive_channel_groups(g);
  ASSERT_EQ(groups.size(), 2u);
  const auto& inner = group(groups, "b.expand");
  EXPECT_EQ(inner.size, 24);
  EXPECT_EQ(members(inner), (Members{{"b.expand.weight", 0, 0, 1}, {"b.dw.weight", 0, 0, 1}, {"b.project.weight", 1, 0, 1}} +
                             bn("b.bn1") + bn("b.bn2")));
  EXPECT_EQ(inner.depthwise, std::vector<std::string>{"b.dw"});
  EXPECT_EQ(inner.activation_points, (std::vector<std::string>{"b.relu1", "b.relu2"}));
  EXPECT_EQ(inner.producers, std::vector<std::string>{"b.expand"});
  EXPECT_EQ(inner.consumers, std::vector<std::string>{"b.project"});
  // The residual stream: the add's block name.
  const auto& stream = group(groups, "b");
  EXPECT_EQ(members(stream), (Members{{"stem.conv.weight", 0, 0, 1}, {"b.expand.weight", 1, 0, 1},
                                      {"b.project.weight", 0, 0, 1}, {"fc.weight", 1, 0, 1}} +
                              bn("stem.bn") + bn("b.bn3")));
  EXPECT_EQ(stream.producers, (std::vector<std::string>{"stem.conv", "b.project"}));
}

TEST(DerivedGroups, FlattenGivesEachChannelSpanFeatures) {
  // VGG's head: 4 channels pooled to 3x3, flattened to 36 features.
  em::Graph g;
  int x = g.input("input", 1);
  x = g.activation("relu", g.conv("features.0", x, 1, 4, 1, 1, 0, 1, true));
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 3, 3), 9);
  x = g.dropout("drop", g.activation("classifier.1", g.linear("classifier.0", x, 36, 16)));
  g.output(g.linear("classifier.3", x, 16, 10));
  const auto groups = em::derive_channel_groups(g);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(members(group(groups, "features.0")),
            (Members{{"features.0.weight", 0, 0, 1}, {"features.0.bias", 0, 0, 1}, {"classifier.0.weight", 1, 0, 9}}));
  EXPECT_EQ(members(group(groups, "classifier.0")), (Members{{"classifier.0.weight", 0, 0, 1},
                                                             {"classifier.0.bias", 0, 0, 1},
                                                             {"classifier.3.weight", 1, 0, 1}}));
  EXPECT_EQ(group(groups, "classifier.0").activation_points, std::vector<std::string>{"classifier.1"});
  // Wrong span: the linear layer's in_features no longer match.
  em::Graph bad;
  int y = bad.flatten("flatten", bad.conv("c", bad.input("input", 1), 1, 4, 1), 8);
  bad.output(bad.linear("fc", y, 36, 10));
  EXPECT_THROW(em::derive_channel_groups(bad), expctl::Error);
}

TEST(DerivedGroups, SqueezeExcitationMultiplyTiesTheScaleToTheFeatures) {
  em::Graph g;
  int x = g.input("input", 3);
  x = g.activation("relu", g.batch_norm("bn", g.conv("conv", x, 3, 8, 1)));
  int s = g.activation("se.relu", g.conv("se.fc1", g.adaptive_avg_pool("se.pool", x, 1, 1), 8, 2, 1, 1, 0, 1, true));
  s = g.activation("se.sigmoid", g.conv("se.fc2", s, 2, 8, 1, 1, 0, 1, true), "sigmoid");
  x = g.mul("se.mul", x, s);
  g.output(g.conv("head", x, 8, 4, 1));
  const auto groups = em::derive_channel_groups(g);
  ASSERT_EQ(groups.size(), 2u);
  const auto& features = group(groups, "se");
  EXPECT_EQ(members(features), (Members{{"conv.weight", 0, 0, 1}, {"se.fc1.weight", 1, 0, 1}, {"se.fc2.weight", 0, 0, 1},
                                        {"se.fc2.bias", 0, 0, 1}, {"head.weight", 1, 0, 1}} +
                                bn("bn")));
  EXPECT_EQ(features.activation_points, (std::vector<std::string>{"relu", "se.sigmoid"}));
  EXPECT_EQ(members(group(groups, "se.fc1")),
            (Members{{"se.fc1.weight", 0, 0, 1}, {"se.fc1.bias", 0, 0, 1}, {"se.fc2.weight", 1, 0, 1}}));
}

TEST(DerivedGroups, GroupedConvsAndTheImageAndLogitsStayWhole) {
  em::Graph g;
  int x = g.input("input", 4);
  x = g.conv("grouped", x, 4, 8, 1, 1, 0, 2);  // neither its input (the image) nor its output can shrink
  x = g.conv("a", x, 8, 6, 1);
  x = g.conv("multiplier", x, 6, 12, 1, 1, 0, 6);  // depthwise with 2 filters per channel: not channel-wise
  g.output(g.conv("b", x, 12, 3, 1));
  EXPECT_TRUE(em::derive_channel_groups(g).empty());
}

TEST(DerivedGroups, InconsistentGraphsNameTheNode) {
  auto message = [](const em::Graph& g) {
    try {
      em::derive_channel_groups(g);
    } catch (const expctl::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  em::Graph widths;
  widths.conv("c2", widths.conv("c1", widths.input("input", 3), 3, 8, 1), 6, 4, 1);
  EXPECT_EQ(message(widths), "model graph: node 'c2': has in_channels 6 but 8 channels reach it");
  em::Graph add;
  int x = add.input("input", 3);
  add.add("blk.add", {add.conv("a", x, 3, 8, 1), add.conv("b", x, 3, 6, 1)});
  EXPECT_NE(message(add).find("node 'blk.add': its inputs' channels do not line up (8 and 6 channels)"),
            std::string::npos);
  em::Graph forward;
  forward.conv("c", 3, 3, 8, 1);
  EXPECT_NE(message(forward).find("node 'c': reads node 3, which does not come before it"), std::string::npos);
}

// A gate over a concatenation (squeeze-excitation after a cat): the gate's 8 channels come from one conv, the
// gated ones from two. No group can be split between sources, so all of them are kept whole; the rest is pruned.
TEST(DerivedGroups, AMultiplyOfDifferentlyConcatenatedChannelsKeepsThemWhole) {
  em::Graph g;
  const int x = g.input("input", 3);
  const int stem = g.activation("relu", g.conv("stem", x, 3, 6, 3, 1, 1));
  const int cat = g.concat("cat", {g.conv("a", stem, 6, 4, 1), g.conv("b", stem, 6, 4, 1)});
  const int gate = g.activation("gate", g.conv("se", g.adaptive_avg_pool("pool", cat, 1, 1), 8, 8, 1), "sigmoid");
  const int y = g.mul("mul", cat, gate);
  g.output(g.linear("fc", g.flatten("flatten", g.adaptive_avg_pool("gap", y, 1, 1), 1), 8, 10));
  const auto groups = em::derive_channel_groups(g);
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].producers, std::vector<std::string>{"stem"});
}

// ---- surgery on derived groups: concatenation offsets, a depthwise conv, a flatten before a linear layer ----------

TEST(DerivedGroups, SurgeryOnConcatDepthwiseAndFlattenRemovesExactlyTheZeroedChannels) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  const auto groups = em::derive_channel_groups(expctl::testing::TinyNet::graph());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(members(group(groups, "b")),
            (Members{{"b.weight", 0, 0, 1}, {"dw.weight", 0, 4, 1}, {"dw.bias", 0, 4, 1}, {"fc.weight", 1, 16, 4}} +
             bn("norm", 4) + bn("bn2", 4)));
  const auto x = torch::randn({2, 3, 6, 6}, torch::kDouble);
  // Remove channels 1 and 3 of a, 0 and 4 of b: zero them where they start and at every BN / bias they pass,
  // so they carry exact zeros; then the pruned net must give the zeroed net's output.
  const std::map<std::string, std::vector<int64_t>> keep{{"a", {0, 2}}, {"b", {1, 2, 3}}};
  auto net = std::make_shared<expctl::testing::TinyNet>();
  for (auto& p : net->parameters()) p.uniform_(-1, 1);
  for (auto& bnm : {net->norm, net->bn2}) {
    bnm->running_mean.uniform_(-0.5, 0.5);
    bnm->running_var.uniform_(0.5, 1.5);
  }
  net->to(torch::kDouble);
  net->eval();
  const auto reference = net->forward(x);
  std::vector<std::pair<const em::ChannelGroup*, torch::Tensor>> plan;
  auto sd = em::state_dict(*net);
  for (const auto& g : groups) {
    const auto& k = keep.at(g.name);
    torch::Tensor removed = torch::ones({g.size}, torch::kBool);
    removed.index_fill_(0, torch::tensor(k), false);
    for (const auto& m : g.members)
      if (m.dim == 0 && m.tensor.find("running") == std::string::npos)
        em::member_rows(sd[m.tensor], m, g.size).index_put_({removed}, 0.0);
    plan.emplace_back(&g, torch::tensor(k));
  }
  const auto zeroed = net->forward(x);
  EXPECT_GT((zeroed - reference).abs().max().item<double>(), 1e-6);  // the zeroing matters
  em::prune_channels(*net, plan);
  EXPECT_EQ(net->b->weight.sizes(), (std::vector<int64_t>{3, 2, 3, 3}));
  EXPECT_EQ(net->norm->weight.size(0), 5);
  EXPECT_EQ(net->dw->weight.sizes(), (std::vector<int64_t>{5, 1, 3, 3}));
  EXPECT_EQ(net->dw->options.groups(), 5);
  EXPECT_EQ(net->fc->weight.sizes(), (std::vector<int64_t>{3, 20}));
  EXPECT_EQ(net->fc->options.in_features(), 20);
  const auto pruned = net->forward(x);
  EXPECT_LT((pruned - zeroed).abs().max().item<double>(), 1e-12);
  // The graph of the pruned net derives groups of the new sizes.
  em::Graph g;
  const int a = g.conv("a", g.input("input", 3), 3, 2, 1);
  const int b = g.conv("b", g.activation("a.relu", a), 2, 3, 1);
  int y = g.activation("relu2", g.batch_norm("bn2", g.conv("dw", g.batch_norm("norm", g.concat("cat", {a, b})), 5, 5, 1, 1, 0, 5, true)));
  g.output(g.linear("fc", g.flatten("flatten", g.adaptive_avg_pool("pool", y, 2, 2), 4), 20, 3));
  EXPECT_EQ(em::derive_channel_groups(g).size(), 2u);
}

TEST(DerivedGroups, SurgeryChecksEverythingBeforeItCuts) {
  auto net = std::make_shared<expctl::testing::TinyNet>();
  const auto groups = em::derive_channel_groups(expctl::testing::TinyNet::graph());
  const auto before = net->fc->weight.clone();
  // The second group's indices are bad: the first group must not have been cut either.
  EXPECT_THROW(em::prune_channels(*net, {{&groups[0], torch::tensor({0, 1})}, {&groups[1], torch::tensor({7})}}),
               expctl::Error);
  EXPECT_TRUE(torch::equal(net->fc->weight, before));
  EXPECT_EQ(net->a->weight.size(0), 4);
  // Groups of another model: too wide for a tensor, or narrower than a producer's filters.
  em::Graph wide;
  wide.output(wide.linear("fc", wide.flatten("f", wide.conv("a", wide.input("input", 3), 3, 6, 1), 6), 36, 3));
  EXPECT_THROW(em::prune_channels(*net, {{&em::derive_channel_groups(wide)[0], torch::tensor({0})}}), expctl::Error);
  em::Graph narrow;
  narrow.output(narrow.linear("fc", narrow.flatten("f", narrow.conv("a", narrow.input("input", 3), 3, 2, 1), 4), 8, 3));
  const auto other = em::derive_channel_groups(narrow);
  try {
    em::prune_channels(*net, {{&other[0], torch::tensor({0})}});
    FAIL();
  } catch (const expctl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("prune group 'a': 'a.weight' has 4 filters, the group 2 channels"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
