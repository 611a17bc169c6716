#include "runner/models/resnet.h"

#include <algorithm>
#include <sstream>

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

torch::nn::Conv2d make_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
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

// ---- BasicBlock --------------------------------------------------------------------------------

BasicBlockImpl::BasicBlockImpl(std::string name, int64_t in_width, int64_t inner_width, int64_t out_width,
                               int64_t stride, bool with_downsample)
    : name_(std::move(name)),
      conv1_name_(name_ + ".conv1"),
      relu1_name_(name_ + ".relu1"),
      conv2_name_(name_ + ".conv2"),
      downsample_name_(name_ + ".downsample.0") {
  // Registration order = torchvision's attribute order, so state_dict() lists keys in the same order.
  conv1 = register_module("conv1", make_conv(in_width, inner_width, 3, stride, 1));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(inner_width));
  conv2 = register_module("conv2", make_conv(inner_width, out_width, 3, 1, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(out_width));
  if (with_downsample) {
    downsample_conv = make_conv(in_width, out_width, 1, stride, 0);
    downsample_bn = torch::nn::BatchNorm2d(out_width);
    downsample = register_module("downsample", torch::nn::Sequential(downsample_conv, downsample_bn));
  }
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x, ForwardObserver* observer) {
  // Observer calls happen after the last in-place op on each tensor, so observers may keep references.
  if (observer) observer->on_layer_input(conv1_name_, x);
  auto out = bn1(conv1(x)).relu_();
  if (observer) {
    observer->on_activation(relu1_name_, out);
    observer->on_layer_input(conv2_name_, out);
  }
  out = bn2(conv2(out));
  torch::Tensor identity = x;
  if (downsample_conv) {
    // torchvision evaluates downsample(x) after bn2; the observer sees the same order.
    if (observer) observer->on_layer_input(downsample_name_, x);
    identity = downsample_bn(downsample_conv(x));
  }
  out = (out + identity).relu_();
  if (observer) observer->on_activation(name_, out);
  return out;
}

// ---- ResNet ------------------------------------------------------------------------------------

ResNetImpl::ResNetImpl(const ResNetSpec& spec) : spec_(spec.resolved()) {
  const auto blocks = spec_.blocks_per_stage();
  const int64_t stem_width = spec_.stage_widths[0];
  conv1 = spec_.stem == Stem::Cifar ? make_conv(spec_.in_channels, stem_width, 3, 1, 1)
                                    : make_conv(spec_.in_channels, stem_width, 7, 2, 3);
  register_module("conv1", conv1);
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(stem_width));
  int64_t in_width = stem_width;
  size_t block_index = 0;
  for (int s = 0; s < kStages; ++s) {
    const std::string stage_name = "layer" + std::to_string(s + 1);
    torch::nn::ModuleList stage;
    for (int b = 0; b < blocks[s]; ++b) {
      // Structure (where the projections are) follows the depth, never the widths: a pruned stage whose
      // width happens to equal its input's still has its stride-2 downsample.
      const bool first = b == 0;
      const int64_t stride = (first && s > 0) ? 2 : 1;
      auto block = BasicBlock(stage_name + "." + std::to_string(b), in_width, spec_.block_widths[block_index++],
                              spec_.stage_widths[s], stride, first && s > 0);
      stage->push_back(block);
      blocks_.push_back(block);
      in_width = spec_.stage_widths[s];
    }
    layers.push_back(register_module(stage_name, stage));
  }
  fc = register_module("fc", torch::nn::Linear(spec_.stage_widths[3], spec_.num_classes));

  // torchvision's init: kaiming-normal (fan_out, relu) convs, BN weight 1 / bias 0; Linear keeps its default.
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& input, ForwardObserver* observer) {
  torch::Tensor x = input;
  for (int64_t i = 0; i < num_segments(); ++i) x = forward_segment(i, x, observer);
  return x;
}

torch::Tensor ResNetImpl::forward_segment(int64_t i, const torch::Tensor& input, ForwardObserver* observer) {
  static const std::string kConv1 = "conv1", kRelu = "relu", kFc = "fc";
  const int64_t blocks = int64_t(blocks_.size());
  if (i < 0 || i > blocks + 1)
    throw Error("ResNet::forward_segment: segment " + std::to_string(i) + " of " + std::to_string(num_segments()));
  if (i == 0) {
    if (observer) observer->on_layer_input(kConv1, input);
    auto x = bn1(conv1(input)).relu_();
    if (observer) observer->on_activation(kRelu, x);
    if (spec_.stem == Stem::ImageNet) x = torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
    return x;
  }
  if (i <= blocks) return blocks_[size_t(i - 1)]->forward(input, observer);
  auto x = torch::flatten(torch::adaptive_avg_pool2d(input, {1, 1}), 1);
  if (observer) observer->on_layer_input(kFc, x);
  return fc(x);
}

std::vector<std::string> ResNetImpl::segment_layers(int64_t i) const {
  const int64_t blocks = int64_t(blocks_.size());
  if (i == 0) return {"conv1"};
  if (i == blocks + 1) return {"fc"};
  if (i < 0 || i > blocks + 1)
    throw Error("ResNet::segment_layers: segment " + std::to_string(i) + " of " + std::to_string(num_segments()));
  const BasicBlock& block = blocks_[size_t(i - 1)];
  std::vector<std::string> names{block->name() + ".conv1", block->name() + ".conv2"};
  if (block->downsample_conv) names.push_back(block->name() + ".downsample.0");
  return names;
}

void ResNetImpl::sync_spec() {
  spec_.stage_widths[0] = conv1->weight.size(0);
  size_t i = 0;
  for (auto& block : blocks_) spec_.block_widths[i++] = block->conv1->weight.size(0);
  for (int s = 0; s < kStages; ++s)
    spec_.stage_widths[s] = layers[s]->ptr(0)->as<BasicBlockImpl>()->conv2->weight.size(0);
  spec_.num_classes = fc->weight.size(0);
  spec_.in_channels = conv1->weight.size(1);
}

Graph ResNetImpl::graph() const {
  Graph g;
  int x = g.input("input", spec_.in_channels);
  int64_t width = spec_.stage_widths[0];
  const bool cifar = spec_.stem == Stem::Cifar;
  x = g.conv("conv1", x, spec_.in_channels, width, cifar ? 3 : 7, cifar ? 1 : 2, cifar ? 1 : 3);
  x = g.activation("relu", g.batch_norm("bn1", x));
  if (!cifar) x = g.max_pool("maxpool", x, 3, 2, 1);
  for (const auto& block : blocks_) {
    const std::string& b = block->name();
    const int64_t inner = block->conv1->weight.size(0), out = block->conv2->weight.size(0);
    const int64_t stride = (*block->conv1->options.stride())[0];
    int y = g.conv(b + ".conv1", x, width, inner, 3, stride, 1);
    y = g.activation(b + ".relu1", g.batch_norm(b + ".bn1", y));
    y = g.batch_norm(b + ".bn2", g.conv(b + ".conv2", y, inner, out, 3, 1, 1));
    int identity = x;
    if (block->downsample_conv)
      identity = g.batch_norm(b + ".downsample.1", g.conv(b + ".downsample.0", x, width, out, 1, stride));
    x = g.activation(b, g.add(b + ".add", {y, identity}));
    width = out;
  }
  x = g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1);
  g.output(g.linear("fc", x, width, spec_.num_classes));
  return g;
}

std::vector<std::string> ResNetImpl::layer_names() const {
  std::vector<std::string> names{"conv1"};
  for (auto& block : blocks_) {
    names.push_back(block->name() + ".conv1");
    names.push_back(block->name() + ".conv2");
    if (block->downsample_conv) names.push_back(block->name() + ".downsample.0");
  }
  names.push_back("fc");
  return names;
}

std::vector<std::string> ResNetImpl::activation_points() const {
  std::vector<std::string> names{"relu"};
  for (auto& block : blocks_) {
    names.push_back(block->name() + ".relu1");
    names.push_back(block->name());
  }
  return names;
}

ResNet make_resnet(const ResNetSpec& spec) { return ResNet(spec); }

std::shared_ptr<NetworkImpl> ResNetImpl::same_architecture() const { return std::make_shared<ResNetImpl>(spec_); }

ResNet::ResNet(const Network& network) : ModuleHolder(std::dynamic_pointer_cast<ResNetImpl>(network.ptr())) {
  if (network && !ptr()) throw Error("the model is a " + network->arch_name() + ", not a ResNet");
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
  return spec.resolved();
}

ResNet make_pretrained_resnet(const ResNetSpec& spec, const StateDict& pretrained, const std::string& source) {
  ResNet model(spec);
  load_state_dict(*model, adapt_pretrained(pretrained, model), source);
  return model;
}

}  // namespace expctl::models
