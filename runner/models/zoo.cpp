#include "runner/models/zoo.h"

#include <sstream>
#include <string>
#include <vector>

#include "runner/core/error.h"

namespace expctl::models {
namespace {

constexpr int kStages = 4;
const int64_t kDefaultStageWidths[kStages] = {64, 128, 256, 512};

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

std::string to_string(Stem stem) { return stem == Stem::Cifar ? "cifar" : "imagenet"; }

Stem parse_stem(const std::string& name) {
  if (name == "imagenet") return Stem::ImageNet;
  if (name == "cifar") return Stem::Cifar;
  throw Error("unknown ResNet stem '" + name + "' (valid: imagenet, cifar)");
}

std::vector<int> ResNetSpec::blocks_per_stage() const {
  if (depth == 18) return {2, 2, 2, 2};
  if (depth == 34) return {3, 4, 6, 3};
  throw Error("ResNet depth " + std::to_string(depth) + " is not supported (valid: 18, 34)");
}

ResNetSpec ResNetSpec::resolved() const {
  ResNetSpec r = *this;
  const auto blocks = blocks_per_stage();
  if (num_classes < 1) throw Error("ResNet num_classes must be >= 1, got " + std::to_string(num_classes));
  if (in_channels < 1) throw Error("ResNet in_channels must be >= 1, got " + std::to_string(in_channels));
  if (r.stage_widths.empty()) r.stage_widths.assign(kDefaultStageWidths, kDefaultStageWidths + kStages);
  if (r.stage_widths.size() != kStages)
    throw Error("ResNet stage_widths needs 4 entries, got " + std::to_string(r.stage_widths.size()));
  size_t total = 0;
  for (int b : blocks) total += b;
  if (r.block_widths.empty()) {
    for (int s = 0; s < kStages; ++s) r.block_widths.insert(r.block_widths.end(), blocks[s], r.stage_widths[s]);
  }
  if (r.block_widths.size() != total)
    throw Error("ResNet-" + std::to_string(depth) + " block_widths needs " + std::to_string(total) + " entries, got " +
                std::to_string(r.block_widths.size()));
  for (size_t i = 0; i < r.stage_widths.size(); ++i)
    if (r.stage_widths[i] < 1) throw Error("ResNet stage_widths[" + std::to_string(i) + "] must be >= 1");
  for (size_t i = 0; i < r.block_widths.size(); ++i)
    if (r.block_widths[i] < 1) throw Error("ResNet block_widths[" + std::to_string(i) + "] must be >= 1");
  return r;
}

std::string ResNetSpec::name() const { return "resnet" + std::to_string(depth); }

bool ResNetSpec::operator==(const ResNetSpec& other) const {
  const ResNetSpec a = resolved(), b = other.resolved();
  return a.depth == b.depth && a.num_classes == b.num_classes && a.stem == b.stem && a.in_channels == b.in_channels &&
         a.stage_widths == b.stage_widths && a.block_widths == b.block_widths;
}

GraphNet make_resnet(const ResNetSpec& spec) {
  const ResNetSpec s = spec.resolved();
  return GraphNet(zoo::resnet_basic(s), s.name(), GraphNetImpl::Init::ResNet);
}

GraphNet make_pretrained_resnet(const ResNetSpec& spec, const StateDict& pretrained, const std::string& source) {
  GraphNet model = make_resnet(spec);
  load_state_dict(*model, adapt_pretrained(pretrained, model), source);
  return model;
}

ResNetSpec infer_spec(const StateDict& sd, const std::string& source) {
  auto need = [&](const std::string& key, int64_t dims) -> const torch::Tensor& {
    const auto* t = sd.find(key);
    if (!t) throw DataError(source + ": not a torchvision BasicBlock ResNet state dict (no '" + key + "')");
    if (t->dim() != dims)
      throw DataError(source + ": '" + key + "' has shape " + shape_str(*t) + ", expected " + std::to_string(dims) +
                      " dimensions");
    return *t;
  };
  ResNetSpec spec;
  std::vector<int> blocks;
  for (int s = 1; s <= kStages; ++s) {
    int n = 0;
    while (sd.contains("layer" + std::to_string(s) + "." + std::to_string(n) + ".conv1.weight")) ++n;
    blocks.push_back(n);
  }
  if (sd.contains("layer1.0.conv3.weight"))
    throw DataError(source + ": a Bottleneck ResNet (ResNet-50), not a BasicBlock ResNet-18/34");
  if (blocks == std::vector<int>{2, 2, 2, 2}) {
    spec.depth = 18;
  } else if (blocks == std::vector<int>{3, 4, 6, 3}) {
    spec.depth = 34;
  } else {
    throw DataError(source + ": blocks per stage " + std::to_string(blocks[0]) + "," + std::to_string(blocks[1]) + "," +
                    std::to_string(blocks[2]) + "," + std::to_string(blocks[3]) +
                    " match neither ResNet-18 (2,2,2,2) nor ResNet-34 (3,4,6,3)");
  }
  const auto& conv1 = need("conv1.weight", 4);
  spec.in_channels = conv1.size(1);
  if (conv1.size(2) == 7) {
    spec.stem = Stem::ImageNet;
  } else if (conv1.size(2) == 3) {
    spec.stem = Stem::Cifar;
  } else {
    throw DataError(source + ": conv1.weight has shape " + shape_str(conv1) + ", expected a 7x7 or 3x3 kernel");
  }
  spec.num_classes = need("fc.weight", 2).size(0);
  for (int s = 1; s <= kStages; ++s) {
    const std::string stage = "layer" + std::to_string(s);
    for (int b = 0; b < blocks[s - 1]; ++b)
      spec.block_widths.push_back(need(stage + "." + std::to_string(b) + ".conv1.weight", 4).size(0));
    spec.stage_widths.push_back(need(stage + ".0.conv2.weight", 4).size(0));
  }
  try {
    return spec.resolved();
  } catch (const Error& e) {
    throw DataError(source + ": " + e.what());
  }
}

ResNetSpec resnet_spec(const NetworkImpl& net) {
  const std::string name = net.arch_name();
  if (name != "resnet18" && name != "resnet34")
    throw DataError("the model is a " + name + ", not a ResNet-18/34");
  return infer_spec(state_dict(net), name);
}

}  // namespace expctl::models

namespace expctl::models::zoo {
namespace {

std::string at(const std::string& prefix, int i) { return prefix + "." + std::to_string(i); }

/// conv (no bias) + BN + activation as torchvision's Conv2dNormActivation: "<p>.0", "<p>.1", "<p>.2".
int conv_bn_act(Graph& g, const std::string& p, int x, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                int64_t groups, const std::string& act) {
  x = g.conv(p + ".0", x, in, out, kernel, stride, (kernel - 1) / 2, groups);
  return g.activation(p + ".2", g.batch_norm(p + ".1", x), act);
}

}  // namespace

Graph vgg_bn(int depth, int64_t num_classes, int64_t in_channels, bool small_input) {
  std::vector<int> cfg;  // widths, 0 = max-pool
  if (depth == 11) cfg = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  else if (depth == 16) cfg = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
  else throw Error("vgg_bn: depth " + std::to_string(depth) + " is not built in (11, 16)");
  if (small_input) cfg.pop_back();  // 32×32 → 2×2, 28×28 → 1×1 before the global pool
  Graph g;
  int x = g.input("input", in_channels);
  int64_t c = in_channels;
  int i = 0;
  for (int v : cfg) {
    if (v == 0) {
      x = g.max_pool(at("features", i++), x, 2, 2, 0);
      continue;
    }
    x = g.conv(at("features", i), x, c, v, 3, 1, 1, 1, /*bias=*/true);
    x = g.batch_norm(at("features", i + 1), x);
    x = g.activation(at("features", i + 2), x);
    i += 3;
    c = v;
  }
  if (small_input) {
    x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
    g.output(g.linear("classifier", x, c, num_classes));
    return g;
  }
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 7, 7), 49);
  x = g.dropout("classifier.2", g.activation("classifier.1", g.linear("classifier.0", x, c * 49, 4096)));
  x = g.dropout("classifier.5", g.activation("classifier.4", g.linear("classifier.3", x, 4096, 4096)));
  g.output(g.linear("classifier.6", x, 4096, num_classes));
  return g;
}

Graph mobilenet_v2(int64_t num_classes, int64_t in_channels, bool small_input) {
  struct Stage {
    int t, c, n, s;
  };
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                          {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  Graph g;
  int x = g.input("input", in_channels);
  x = conv_bn_act(g, "features.0", x, in_channels, 32, 3, small_input ? 1 : 2, 1, "relu6");
  int64_t c = 32;
  int index = 1;
  for (const Stage& st : stages) {
    for (int b = 0; b < st.n; ++b, ++index) {
      int64_t stride = b == 0 ? st.s : 1;
      if (small_input && index == 2) stride = 1;
      const std::string p = at("features", index) + ".conv";
      const int64_t hidden = c * st.t;
      int y = x, k = 0;
      if (st.t != 1) y = conv_bn_act(g, at(p, k++), y, c, hidden, 1, 1, 1, "relu6");
      y = conv_bn_act(g, at(p, k++), y, hidden, hidden, 3, stride, hidden, "relu6");
      y = g.conv(at(p, k), y, hidden, st.c, 1);
      y = g.batch_norm(at(p, k + 1), y);
      if (stride == 1 && c == st.c) y = g.add(at("features", index) + ".add", {x, y});
      x = y;
      c = st.c;
    }
  }
  x = conv_bn_act(g, "features.18", x, c, 1280, 1, 1, 1, "relu6");
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
  g.output(g.linear("classifier.1", g.dropout("classifier.0", x, 0.2), 1280, num_classes));
  return g;
}

Graph densenet121(int64_t num_classes, int64_t in_channels, bool small_input) {
  const int64_t growth = 32, bottleneck = 4 * 32;
  const int blocks[] = {6, 12, 24, 16};
  Graph g;
  int x = g.input("input", in_channels);
  if (small_input) {
    x = g.conv("features.conv0", x, in_channels, 64, 3, 1, 1);
    x = g.activation("features.relu0", g.batch_norm("features.norm0", x));
  } else {
    x = g.conv("features.conv0", x, in_channels, 64, 7, 2, 3);
    x = g.activation("features.relu0", g.batch_norm("features.norm0", x));
    x = g.max_pool("features.pool0", x, 3, 2, 1);
  }
  int64_t c = 64;
  for (int b = 0; b < 4; ++b) {
    const std::string block = "features.denseblock" + std::to_string(b + 1);
    std::vector<int> features{x};
    int64_t width = c;
    for (int l = 0; l < blocks[b]; ++l) {
      const std::string p = block + ".denselayer" + std::to_string(l + 1);
      const int in = features.size() == 1 ? features[0] : g.concat(p + ".cat", features);
      int y = g.activation(p + ".relu1", g.batch_norm(p + ".norm1", in));
      y = g.activation(p + ".relu2", g.batch_norm(p + ".norm2", g.conv(p + ".conv1", y, width, bottleneck, 1)));
      features.push_back(g.conv(p + ".conv2", y, bottleneck, growth, 3, 1, 1));
      width += growth;
    }
    x = g.concat(block + ".cat", features);
    c = width;
    if (b < 3) {
      const std::string t = "features.transition" + std::to_string(b + 1);
      x = g.activation(t + ".relu", g.batch_norm(t + ".norm", x));
      x = g.avg_pool(t + ".pool", g.conv(t + ".conv", x, c, c / 2, 1), 2, 2);
      c /= 2;
    }
  }
  x = g.activation("relu", g.batch_norm("features.norm5", x));
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
  g.output(g.linear("classifier", x, c, num_classes));
  return g;
}

Graph resnet_basic(const ResNetSpec& spec) {
  const ResNetSpec s = spec.resolved();
  const auto blocks = s.blocks_per_stage();
  const bool small = s.stem == Stem::Cifar;
  Graph g;
  int x = g.input("input", s.in_channels);
  int64_t width = s.stage_widths[0];
  x = small ? g.conv("conv1", x, s.in_channels, width, 3, 1, 1) : g.conv("conv1", x, s.in_channels, width, 7, 2, 3);
  x = g.activation("relu", g.batch_norm("bn1", x));
  if (!small) x = g.max_pool("maxpool", x, 3, 2, 1);
  size_t block = 0;
  for (int stage = 0; stage < kStages; ++stage) {
    const int64_t out = s.stage_widths[size_t(stage)];
    for (int b = 0; b < blocks[size_t(stage)]; ++b, ++block) {
      // Where the projections are follows the depth, never the widths: a pruned stage whose width happens to
      // equal its input's still has its stride-2 downsample.
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(b);
      const bool first = b == 0 && stage > 0;
      const int64_t stride = first ? 2 : 1, inner = s.block_widths[block];
      int y = g.activation(p + ".relu1", g.batch_norm(p + ".bn1", g.conv(p + ".conv1", x, width, inner, 3, stride, 1)));
      y = g.batch_norm(p + ".bn2", g.conv(p + ".conv2", y, inner, out, 3, 1, 1));
      int identity = x;
      if (first) identity = g.batch_norm(p + ".downsample.1", g.conv(p + ".downsample.0", x, width, out, 1, stride));
      x = g.activation(p, g.add(p + ".add", {y, identity}));
      width = out;
    }
  }
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
  g.output(g.linear("fc", x, width, s.num_classes));
  return g;
}

Graph resnet50(int64_t num_classes, int64_t in_channels, bool small_input) {
  const int blocks[] = {3, 4, 6, 3};
  Graph g;
  int x = g.input("input", in_channels);
  x = small_input ? g.conv("conv1", x, in_channels, 64, 3, 1, 1) : g.conv("conv1", x, in_channels, 64, 7, 2, 3);
  x = g.activation("relu", g.batch_norm("bn1", x));
  if (!small_input) x = g.max_pool("maxpool", x, 3, 2, 1);
  int64_t c = 64;
  for (int s = 0; s < 4; ++s) {
    const int64_t width = int64_t(64) << s, out = width * 4;
    for (int b = 0; b < blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b);
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      int y = g.activation(p + ".relu1", g.batch_norm(p + ".bn1", g.conv(p + ".conv1", x, c, width, 1)));
      y = g.activation(p + ".relu2", g.batch_norm(p + ".bn2", g.conv(p + ".conv2", y, width, width, 3, stride, 1)));
      y = g.batch_norm(p + ".bn3", g.conv(p + ".conv3", y, width, out, 1));
      int identity = x;
      if (b == 0) identity = g.batch_norm(p + ".downsample.1", g.conv(p + ".downsample.0", x, c, out, 1, stride));
      x = g.activation(p, g.add(p + ".add", {y, identity}));
      c = out;
    }
  }
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
  g.output(g.linear("fc", x, c, num_classes));
  return g;
}

}  // namespace expctl::models::zoo
