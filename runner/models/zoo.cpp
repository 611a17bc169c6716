#include "runner/models/zoo.h"

#include <string>
#include <vector>

#include "runner/core/error.h"

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
