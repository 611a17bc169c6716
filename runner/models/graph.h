// A model as a graph of named layers, and the channel groups derived from it.
//
// A graph lists what a network computes, node by node in a topological order, with torchvision's module paths as
// names: convolutions (plain, grouped, depthwise), batch norms, activations, pooling, residual adds, elementwise
// multiplies (squeeze-excitation), concatenations, flatten, linear layers and dropout. From it,
// derive_channel_groups() finds which tensors must lose the same channel indices (Torch-Pruning's dependency graph,
// Fang et al., CVPR'23, done on our own graph instead of autograd):
//
// - a conv or linear layer starts new channels (its weight's dim 0, its bias);
// - batch norms, activations, pooling and dropout carry their input's channels (a BN's four tensors follow them);
// - a residual add or a multiply ties the channels of its inputs position by position (one group);
// - a concatenation places each input's channels at an offset of its output (activations after it carry
//   several groups, each at its offset);
// - a depthwise conv (groups = in = out channels) carries its input's channels: its weight's dim 0, its bias and
//   its `groups` follow them;
// - a flatten maps channel c to `span` consecutive features (c·span … c·span + span − 1) of the next linear layer;
// - a conv or linear layer reading channels is a consumer: its weight's dim 1 loses them (at their offset).
//
// Channels that cannot change are never in a group: the image's, the logits', and those of a grouped conv that is
// not depthwise (its groups would no longer divide them).
//
//     Graph g;
//     int x = g.input("input", 3);
//     x = g.conv("conv1", x, 3, 64, 3, 1, 1);          // 3x3, stride 1, padding 1
//     x = g.activation("relu", g.batch_norm("bn1", x));
//     x = g.linear("fc", g.flatten("flatten", g.adaptive_avg_pool("avgpool", x, 1, 1), 1), 64, 10);
//     g.output(x);
//     auto groups = derive_channel_groups(g);   // one group: conv1, bn1, fc's inputs
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace expctl::models {

/// One tensor of a group and where the group's channels lie in it: channel c of the group is the slice
/// [offset + c·span, offset + (c+1)·span) of dimension `dim`.
struct GroupMember {
  std::string tensor;  ///< state-dict name, e.g. "layer1.0.bn1.running_mean"
  int64_t dim = 0;     ///< 0 = output channels / BN features, 1 = input channels / linear in-features
  int64_t offset = 0;  ///< where channel 0 starts (a concatenation's offset × span)
  int64_t span = 1;    ///< indices per channel (H×W for a linear layer after a flatten, else 1)

  bool operator==(const GroupMember& o) const {
    return tensor == o.tensor && dim == o.dim && offset == o.offset && span == o.span;
  }
  bool operator<(const GroupMember& o) const {
    if (tensor != o.tensor) return tensor < o.tensor;
    if (dim != o.dim) return dim < o.dim;
    if (offset != o.offset) return offset < o.offset;
    return span < o.span;
  }
};

/// Channels that must be kept or removed together.
struct ChannelGroup {
  std::string name;  ///< see derive_channel_groups(); ResNet: "layer1".."layer4" (streams), "layer1.0.conv1" (inner)
  int64_t size = 0;  ///< number of channels when the groups were derived
  std::vector<GroupMember> members;            ///< every tensor that loses the channels
  /// Activations that carry these channels (NC, Taylor): channel c of the group is channel
  /// activation_offsets[k] + c of activation_points[k] (offsets are non-zero after a concatenation).
  std::vector<std::string> activation_points;
  std::vector<std::string> producers;          ///< conv/linear layers whose output channels these are
  std::vector<std::string> consumers;          ///< conv/linear layers whose input channels include these
  std::vector<std::string> depthwise;          ///< depthwise convs carrying these channels (their groups follow)
  std::vector<int64_t> activation_offsets;     ///< one per activation point (missing ones count as 0)
};

/// What a node computes.
enum class Op { Input, Conv, BatchNorm, Activation, Pool, Dropout, Add, Mul, Concat, Flatten, Linear, Output };

/// One node. Names of Conv / BatchNorm / Linear nodes are module paths (their tensors are "<name>.weight", ...);
/// names of activations are the points a ForwardObserver sees. The attributes are what a forward pass needs
/// (export_torchscript() runs the graph); square kernels, strides and paddings, as torchvision's CNNs use.
struct Node {
  Op op = Op::Input;
  std::string name;
  std::vector<int> inputs;   ///< ids of the nodes it reads, in order (a concat's order is its channel order)
  int64_t in_channels = 0;   ///< Conv, Linear (in-features)
  int64_t out_channels = 0;  ///< Input (image channels), Conv, Linear (out-features)
  int64_t groups = 1;        ///< Conv
  bool bias = false;         ///< Conv, Linear: has "<name>.bias"
  int64_t span = 1;          ///< Flatten: features per channel (H×W of its input)
  int64_t kernel = 1;        ///< Conv, Pool (max, avg): square kernel size
  int64_t stride = 1;        ///< Conv, Pool (max, avg)
  int64_t padding = 0;       ///< Conv, Pool (max, avg)
  int64_t dilation = 1;      ///< Conv
  int64_t out_h = 1, out_w = 1;  ///< Pool (adaptive_avg): output size
  std::string kind;          ///< Activation: one of activation_kinds(); Pool: max | avg | adaptive_avg | adaptive_max
  double eps = 1e-5;         ///< BatchNorm
  double rate = 0.5;         ///< Dropout: probability of zeroing an element in training
};

/// The activations a graph runs: relu, relu6, sigmoid, hardswish, silu, hardsigmoid.
const std::vector<std::string>& activation_kinds();

/// A network as nodes in a topological order; each builder call returns the new node's id.
class Graph {
 public:
  int input(const std::string& name, int64_t channels);
  /// Arguments in torch.nn.Conv2d's order.
  int conv(const std::string& name, int from, int64_t in_channels, int64_t out_channels, int64_t kernel,
           int64_t stride = 1, int64_t padding = 0, int64_t groups = 1, bool bias = false, int64_t dilation = 1);
  int batch_norm(const std::string& name, int from, double eps = 1e-5);
  /// `kind`: one of activation_kinds().
  int activation(const std::string& name, int from, const std::string& kind = "relu");
  int max_pool(const std::string& name, int from, int64_t kernel, int64_t stride, int64_t padding);
  /// Average pooling (count_include_pad, no ceil mode: torch.nn.AvgPool2d's defaults).
  int avg_pool(const std::string& name, int from, int64_t kernel, int64_t stride, int64_t padding = 0);
  int adaptive_avg_pool(const std::string& name, int from, int64_t out_h, int64_t out_w);
  int adaptive_max_pool(const std::string& name, int from, int64_t out_h, int64_t out_w);
  int dropout(const std::string& name, int from, double rate = 0.5);
  int add(const std::string& name, const std::vector<int>& from);
  int mul(const std::string& name, int a, int b);
  int concat(const std::string& name, const std::vector<int>& from);
  /// `span` = H×W of the input: the features each channel becomes.
  int flatten(const std::string& name, int from, int64_t span);
  int linear(const std::string& name, int from, int64_t in_features, int64_t out_features, bool bias = true);
  /// Marks `from` as the network's output (its channels are the logits and never pruned).
  void output(int from);

  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }

  /// The graph as JSON (a list of nodes, each with the fields that differ from a default Node), and back:
  /// what a checkpoint stores to rebuild the network. from_json() throws expctl::DataError "<source>: ..." naming
  /// the node and field when something is missing or has the wrong type.
  nlohmann::json to_json() const;
  static Graph from_json(const nlohmann::json& j, const std::string& source);

 private:
  int push(Node node);
  std::vector<Node> nodes_;
};

/// The graph's channel groups. A group is named after what joins it: the longest common module path of the
/// blocks its residual adds / multiplies belong to ("layer2" for ResNet's stage-2 stream; an add node "x.y.add"
/// belongs to block "x.y"), else its first producer ("layer2.0.conv1"). Groups are listed in module-path order of
/// their names (numbers compared as numbers); members, producers, consumers and activation points in node order.
/// Throws expctl::Error naming the node when the graph is inconsistent (a layer's in_channels differ from what
/// reaches it, an add of different widths, an unknown input id).
std::vector<ChannelGroup> derive_channel_groups(const Graph& graph);

}  // namespace expctl::models
