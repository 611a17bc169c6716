// A small network with a concatenation, a depthwise conv (with bias) and a flatten of 2x2 maps before a linear
// layer, as a torch module and as a graph: the derivation, surgery and export tests share it.
#pragma once
#include <torch/torch.h>

#include "runner/models/graph.h"

namespace expctl::testing {

/// concat(a, relu(a) -> b) -> BN -> ReLU -> depthwise 3x3 (+bias) -> BN -> ReLU -> avg-pool 2x2 -> flatten -> fc.
struct TinyNet : torch::nn::Module {
  torch::nn::Conv2d a{torch::nn::Conv2dOptions(3, 4, 3).padding(1).bias(false)};
  torch::nn::Conv2d b{torch::nn::Conv2dOptions(4, 5, 3).padding(1).bias(false)};
  torch::nn::BatchNorm2d norm{9};
  torch::nn::Conv2d dw{torch::nn::Conv2dOptions(9, 9, 3).padding(1).groups(9)};
  torch::nn::BatchNorm2d bn2{9};
  torch::nn::Linear fc{36, 3};
  TinyNet() {
    register_module("a", a);
    register_module("b", b);
    register_module("norm", norm);
    register_module("dw", dw);
    register_module("bn2", bn2);
    register_module("fc", fc);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto ya = a(x);
    auto y = norm(torch::cat({ya, b(ya.relu())}, 1)).relu();
    y = bn2(dw(y)).relu();
    return fc(torch::adaptive_avg_pool2d(y, {2, 2}).flatten(1));
  }
  static models::Graph graph() {
    models::Graph g;
    const int a = g.conv("a", g.input("input", 3), 3, 4, 3, 1, 1);
    const int b = g.conv("b", g.activation("a.relu", a), 4, 5, 3, 1, 1);
    int y = g.activation("relu", g.batch_norm("norm", g.concat("cat", {a, b})));
    y = g.activation("relu2", g.batch_norm("bn2", g.conv("dw", y, 9, 9, 3, 1, 1, 9, true)));
    g.output(g.linear("fc", g.flatten("flatten", g.adaptive_avg_pool("pool", y, 2, 2), 4), 36, 3));
    return g;
  }
};

}  // namespace expctl::testing
