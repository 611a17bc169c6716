#include "runner/models/graph.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "runner/core/error.h"
#include "runner/core/params.h"

namespace expctl::models {
namespace {

const char* const kBnTensors[] = {"weight", "bias", "running_mean", "running_var"};

/// Channels as they flow along an edge: the sources (channel sets started by one layer) in channel order, each
/// whole, and the features each channel occupies (span > 1 after a flatten).
struct Layout {
  std::vector<int> sources;
  int64_t span = 1;
};

struct Source {
  int64_t size = 0;
  bool fixed = false;  ///< the image's or the logits' channels, or a grouped conv's: never pruned
};

/// What a node contributed to the group of one source, in node order.
struct Record {
  enum Kind { Member, Producer, Consumer, Activation, Depthwise, Join } kind = Member;
  int source = 0;
  GroupMember member;  ///< Member
  std::string name;    ///< the others
  int64_t offset = 0;  ///< Activation: the channel where the source starts
};

class Derivation {
 public:
  explicit Derivation(const Graph& g) : graph_(g) {}

  std::vector<ChannelGroup> run() {
    layouts_.resize(graph_.nodes().size());
    for (size_t i = 0; i < graph_.nodes().size(); ++i) visit(int(i));
    return collect();
  }

 private:
  [[noreturn]] void fail(const Node& n, const std::string& why) const {
    throw Error("model graph: node '" + n.name + "': " + why);
  }

  int64_t channels(const Layout& l) const {
    int64_t c = 0;
    for (int s : l.sources) c += sources_[size_t(s)].size;
    return c;
  }

  const Layout& only_input(const Node& n, int self) const {
    if (n.inputs.size() != 1) fail(n, "needs exactly one input, has " + std::to_string(n.inputs.size()));
    return input(n, n.inputs[0], self);
  }

  const Layout& input(const Node& n, int id, int self) const {
    if (id < 0 || id >= self) fail(n, "reads node " + std::to_string(id) + ", which does not come before it");
    if (graph_.nodes()[size_t(id)].op == Op::Output) fail(n, "reads an output marker");
    return layouts_[size_t(id)];
  }

  int new_source(int64_t size, bool fixed) {
    sources_.push_back({size, fixed});
    parent_.push_back(int(parent_.size()));
    return int(sources_.size()) - 1;
  }

  int find(int s) {
    while (parent_[size_t(s)] != s) s = parent_[size_t(s)] = parent_[size_t(parent_[size_t(s)])];
    return s;
  }

  void member(int source, const std::string& tensor, int64_t dim, int64_t offset = 0, int64_t span = 1) {
    Record& r = records_.emplace_back();
    r.source = source;
    r.member = GroupMember{tensor, dim, offset, span};
  }
  void note(Record::Kind kind, int source, const std::string& name, int64_t offset = 0) {
    Record& r = records_.emplace_back();
    r.kind = kind;
    r.source = source;
    r.name = name;
    r.offset = offset;
  }

  /// Members of every source of `l` in `tensor`'s dimension `dim`, at their channel offsets.
  void members_along(const Layout& l, const std::string& tensor, int64_t dim) {
    int64_t pos = 0;
    for (int s : l.sources) {
      member(s, tensor, dim, pos * l.span, l.span);
      pos += sources_[size_t(s)].size;
    }
  }

  /// A conv or linear layer that starts new channels, reading `in`.
  int layer(const Node& n, const Layout& in) {
    for (int s : in.sources) note(Record::Consumer, s, n.name);
    members_along(in, n.name + ".weight", 1);
    const int out = new_source(n.out_channels, false);
    note(Record::Producer, out, n.name);
    member(out, n.name + ".weight", 0);
    if (n.bias) member(out, n.name + ".bias", 0);
    return out;
  }

  void visit(int id) {
    const Node& n = graph_.nodes()[size_t(id)];
    Layout& out = layouts_[size_t(id)];
    switch (n.op) {
      case Op::Input:
        if (n.out_channels < 1) fail(n, "an input needs at least one channel");
        out.sources = {new_source(n.out_channels, true)};
        break;
      case Op::Conv: {
        const Layout in = only_input(n, id);
        if (in.span != 1) fail(n, "a conv cannot read flattened features");
        if (channels(in) != n.in_channels)
          fail(n, "has in_channels " + std::to_string(n.in_channels) + " but " + std::to_string(channels(in)) +
                      " channels reach it");
        if (n.groups < 1 || n.in_channels % n.groups != 0 || n.out_channels % n.groups != 0)
          fail(n, "groups " + std::to_string(n.groups) + " must divide in and out channels");
        if (n.groups == 1) {
          out.sources = {layer(n, in)};
        } else if (n.groups == n.in_channels && n.out_channels == n.in_channels) {
          // Depthwise: filter c reads channel c only, so the output channels are the input's.
          out = in;
          members_along(in, n.name + ".weight", 0);
          if (n.bias) members_along(in, n.name + ".bias", 0);
          for (int s : in.sources) note(Record::Depthwise, s, n.name);
        } else {
          // Grouped: removing channels would break the equal split into groups; keep both sides whole.
          for (int s : in.sources) sources_[size_t(s)].fixed = true;
          out.sources = {new_source(n.out_channels, true)};
        }
        break;
      }
      case Op::Linear: {
        const Layout in = only_input(n, id);
        if (channels(in) * in.span != n.in_channels)
          fail(n, "has in_features " + std::to_string(n.in_channels) + " but " +
                      std::to_string(channels(in) * in.span) + " features reach it");
        out.sources = {layer(n, in)};
        break;
      }
      case Op::BatchNorm:
        out = only_input(n, id);
        if (out.span != 1) fail(n, "a batch norm cannot read flattened features");
        for (const char* t : kBnTensors) members_along(out, n.name + "." + t, 0);
        break;
      case Op::Activation: {
        out = only_input(n, id);
        // A point scores the groups whose channels it carries (NC, Taylor), each at its offset: after a
        // concatenation one point carries several groups.
        if (out.span != 1) break;
        int64_t pos = 0;
        for (int s : out.sources) {
          note(Record::Activation, s, n.name, pos);
          pos += sources_[size_t(s)].size;
        }
        break;
      }
      case Op::Pool:
      case Op::Dropout:
        out = only_input(n, id);
        break;
      case Op::Add:
      case Op::Mul: {
        if (n.inputs.size() < 2) fail(n, "needs at least two inputs");
        out = input(n, n.inputs[0], id);
        for (size_t k = 1; k < n.inputs.size(); ++k) {
          const Layout& other = input(n, n.inputs[k], id);
          std::vector<int64_t> a, b;
          for (int s : out.sources) a.push_back(sources_[size_t(s)].size);
          for (int s : other.sources) b.push_back(sources_[size_t(s)].size);
          if (channels(out) != channels(other) || out.span != other.span)
            fail(n, "its inputs' channels do not line up (" + std::to_string(channels(out)) + " and " +
                        std::to_string(channels(other)) + " channels)");
          if (a != b) {
            // As many channels, concatenated differently (a squeeze-excitation gate over a concatenation): a
            // group cannot be split between sources, so every channel on both sides is kept whole.
            for (const Layout* l : std::initializer_list<const Layout*>{&out, &other})
              for (int s : l->sources) sources_[size_t(s)].fixed = true;
            continue;
          }
          for (size_t j = 0; j < a.size(); ++j) {
            const int ra = find(out.sources[j]), rb = find(other.sources[j]);
            if (ra != rb) parent_[size_t(rb)] = ra;
          }
        }
        for (int s : out.sources) note(Record::Join, s, n.name);
        break;
      }
      case Op::Concat:
        if (n.inputs.empty()) fail(n, "needs at least one input");
        for (int i : n.inputs) {
          const Layout& in = input(n, i, id);
          if (in.span != 1) fail(n, "cannot concatenate flattened features");
          out.sources.insert(out.sources.end(), in.sources.begin(), in.sources.end());
        }
        break;
      case Op::Flatten:
        out = only_input(n, id);
        if (out.span != 1) fail(n, "flattens features that are already flat");
        if (n.span < 1) fail(n, "span must be at least 1");
        out.span = n.span;
        break;
      case Op::Output:
        for (int s : only_input(n, id).sources) sources_[size_t(s)].fixed = true;
        break;
    }
  }

  std::vector<ChannelGroup> collect() {
    std::map<int, bool> fixed;  // class root → any source fixed
    for (size_t s = 0; s < sources_.size(); ++s) {
      bool& f = fixed[find(int(s))];
      f = f || sources_[s].fixed;
    }
    std::map<int, size_t> index;  // class root → position in `groups`
    std::vector<ChannelGroup> groups;
    std::vector<std::vector<std::string>> joins;
    auto push_unique = [](std::vector<std::string>& v, const std::string& s) {
      if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
    };
    for (const Record& r : records_) {
      const int root = find(r.source);
      if (fixed[root]) continue;
      auto [it, fresh] = index.emplace(root, groups.size());
      if (fresh) {
        groups.emplace_back();
        groups.back().size = sources_[size_t(r.source)].size;
        joins.emplace_back();
      }
      ChannelGroup& g = groups[it->second];
      switch (r.kind) {
        case Record::Member:
          if (std::find(g.members.begin(), g.members.end(), r.member) == g.members.end()) g.members.push_back(r.member);
          break;
        case Record::Producer: push_unique(g.producers, r.name); break;
        case Record::Consumer: push_unique(g.consumers, r.name); break;
        case Record::Activation:
          if (std::find(g.activation_points.begin(), g.activation_points.end(), r.name) == g.activation_points.end()) {
            g.activation_points.push_back(r.name);
            g.activation_offsets.push_back(r.offset);
          }
          break;
        case Record::Depthwise: push_unique(g.depthwise, r.name); break;
        case Record::Join: push_unique(joins[it->second], r.name); break;
      }
    }
    std::set<std::string> taken;
    for (size_t i = 0; i < groups.size(); ++i) {
      groups[i].name = group_name(groups[i], joins[i], taken);
      taken.insert(groups[i].name);
    }
    std::stable_sort(groups.begin(), groups.end(),
                     [](const ChannelGroup& a, const ChannelGroup& b) { return path_less(a.name, b.name); });
    return groups;
  }

  static bool numeric(const std::string& s) {
    return !s.empty() && s.size() < 18 && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(c); });
  }

  /// Module-path order: component by component, numbers as numbers, a prefix before its extensions.
  static bool path_less(const std::string& a, const std::string& b) {
    const auto pa = split_dotted(a), pb = split_dotted(b);
    for (size_t i = 0; i < pa.size() && i < pb.size(); ++i) {
      if (pa[i] == pb[i]) continue;
      if (numeric(pa[i]) && numeric(pb[i])) return std::stoll(pa[i]) < std::stoll(pb[i]);
      return pa[i] < pb[i];
    }
    return pa.size() < pb.size();
  }

  static std::string group_name(const ChannelGroup& g, const std::vector<std::string>& joins,
                                const std::set<std::string>& taken) {
    // The blocks a residual stream's adds belong to share a prefix: layer2.0.add, layer2.1.add → "layer2".
    std::vector<std::string> common;
    for (size_t k = 0; k < joins.size(); ++k) {
      auto parts = split_dotted(joins[k]);
      if (!parts.empty()) parts.pop_back();  // the join's own name within its block
      if (k == 0) {
        common = parts;
        continue;
      }
      size_t n = 0;
      while (n < common.size() && n < parts.size() && common[n] == parts[n]) ++n;
      common.resize(n);
    }
    std::string name;
    for (const auto& p : common) name += (name.empty() ? "" : ".") + p;
    if (name.empty() || taken.count(name)) name = g.producers.empty() ? "group" : g.producers.front();
    const std::string base = name;
    for (int k = 2; taken.count(name); ++k) name = base + "#" + std::to_string(k);
    return name;
  }

  const Graph& graph_;
  std::vector<Layout> layouts_;
  std::vector<Source> sources_;
  std::vector<int> parent_;
  std::vector<Record> records_;
};

}  // namespace

int Graph::push(Node node) {
  nodes_.push_back(std::move(node));
  return int(nodes_.size()) - 1;
}

namespace {
Node simple(Op op, const std::string& name, std::vector<int> inputs) {
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = std::move(inputs);
  return n;
}
}  // namespace

int Graph::input(const std::string& name, int64_t channels) {
  Node n = simple(Op::Input, name, {});
  n.out_channels = channels;
  return push(std::move(n));
}

int Graph::conv(const std::string& name, int from, int64_t in_channels, int64_t out_channels, int64_t kernel,
                int64_t stride, int64_t padding, int64_t groups, bool bias, int64_t dilation) {
  Node n = simple(Op::Conv, name, {from});
  n.kernel = kernel;
  n.in_channels = in_channels;
  n.out_channels = out_channels;
  n.groups = groups;
  n.bias = bias;
  n.stride = stride;
  n.padding = padding;
  n.dilation = dilation;
  return push(std::move(n));
}

int Graph::linear(const std::string& name, int from, int64_t in_features, int64_t out_features, bool bias) {
  Node n = simple(Op::Linear, name, {from});
  n.in_channels = in_features;
  n.out_channels = out_features;
  n.bias = bias;
  return push(std::move(n));
}

int Graph::batch_norm(const std::string& name, int from, double eps) {
  Node n = simple(Op::BatchNorm, name, {from});
  n.eps = eps;
  return push(std::move(n));
}
const std::vector<std::string>& activation_kinds() {
  static const std::vector<std::string> kinds = {"relu", "relu6", "sigmoid", "hardswish", "silu", "hardsigmoid"};
  return kinds;
}

int Graph::activation(const std::string& name, int from, const std::string& kind) {
  Node n = simple(Op::Activation, name, {from});
  n.kind = kind;
  return push(std::move(n));
}
namespace {
Node window_pool(const char* kind, const std::string& name, int from, int64_t kernel, int64_t stride,
                 int64_t padding) {
  Node n = simple(Op::Pool, name, {from});
  n.kind = kind;
  n.kernel = kernel;
  n.stride = stride;
  n.padding = padding;
  return n;
}
Node adaptive_pool(const char* kind, const std::string& name, int from, int64_t out_h, int64_t out_w) {
  Node n = simple(Op::Pool, name, {from});
  n.kind = kind;
  n.out_h = out_h;
  n.out_w = out_w;
  return n;
}
}  // namespace

int Graph::max_pool(const std::string& name, int from, int64_t kernel, int64_t stride, int64_t padding) {
  return push(window_pool("max", name, from, kernel, stride, padding));
}
int Graph::avg_pool(const std::string& name, int from, int64_t kernel, int64_t stride, int64_t padding) {
  return push(window_pool("avg", name, from, kernel, stride, padding));
}

int Graph::adaptive_avg_pool(const std::string& name, int from, int64_t out_h, int64_t out_w) {
  return push(adaptive_pool("adaptive_avg", name, from, out_h, out_w));
}
int Graph::adaptive_max_pool(const std::string& name, int from, int64_t out_h, int64_t out_w) {
  return push(adaptive_pool("adaptive_max", name, from, out_h, out_w));
}
int Graph::dropout(const std::string& name, int from, double rate) {
  Node n = simple(Op::Dropout, name, {from});
  n.rate = rate;
  return push(std::move(n));
}
int Graph::add(const std::string& name, const std::vector<int>& from) { return push(simple(Op::Add, name, from)); }
int Graph::mul(const std::string& name, int a, int b) { return push(simple(Op::Mul, name, {a, b})); }
int Graph::concat(const std::string& name, const std::vector<int>& from) {
  return push(simple(Op::Concat, name, from));
}
int Graph::flatten(const std::string& name, int from, int64_t span) {
  Node n = simple(Op::Flatten, name, {from});
  n.span = span;
  return push(std::move(n));
}
void Graph::output(int from) { push(simple(Op::Output, "output", {from})); }

std::vector<ChannelGroup> derive_channel_groups(const Graph& graph) { return Derivation(graph).run(); }

// ---- JSON ------------------------------------------------------------------------------------------

namespace {

const char* const kOpNames[] = {"input",   "conv", "batch_norm", "activation", "pool",   "dropout",
                                "add",     "mul",  "concat",     "flatten",    "linear", "output"};

}  // namespace

nlohmann::json Graph::to_json() const {
  const Node d;
  nlohmann::json out = nlohmann::json::array();
  for (const Node& n : nodes_) {
    nlohmann::json j;
    j["op"] = kOpNames[int(n.op)];
    j["name"] = n.name;
    if (!n.inputs.empty()) j["inputs"] = n.inputs;
    auto put = [&](const char* key, int64_t v, int64_t def) {
      if (v != def) j[key] = v;
    };
    put("in_channels", n.in_channels, d.in_channels);
    put("out_channels", n.out_channels, d.out_channels);
    put("groups", n.groups, d.groups);
    if (n.bias) j["bias"] = true;
    put("span", n.span, d.span);
    put("kernel", n.kernel, d.kernel);
    put("stride", n.stride, d.stride);
    put("padding", n.padding, d.padding);
    put("dilation", n.dilation, d.dilation);
    put("out_h", n.out_h, d.out_h);
    put("out_w", n.out_w, d.out_w);
    if (!n.kind.empty()) j["kind"] = n.kind;
    if (n.eps != d.eps) j["eps"] = n.eps;
    if (n.rate != d.rate) j["rate"] = n.rate;
    out.push_back(std::move(j));
  }
  return out;
}

Graph Graph::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_array()) throw DataError(source + ": the graph must be a list of nodes");
  Graph g;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& e = j[i];
    const std::string where = source + ": node " + std::to_string(i);
    if (!e.is_object()) throw DataError(where + " is not a mapping");
    auto text = [&](const char* key, bool required) -> std::string {
      auto it = e.find(key);
      if (it == e.end()) {
        if (required) throw DataError(where + ": '" + key + "' is missing");
        return "";
      }
      if (!it->is_string()) throw DataError(where + ": '" + key + "' must be a string");
      return it->get<std::string>();
    };
    Node n;
    const std::string op = text("op", true);
    const auto* found = std::find(std::begin(kOpNames), std::end(kOpNames), op);
    if (found == std::end(kOpNames)) throw DataError(where + ": unknown op '" + op + "'");
    n.op = Op(found - std::begin(kOpNames));
    n.name = text("name", true);
    n.kind = text("kind", false);
    auto integer = [&](const char* key, int64_t& field) {
      auto it = e.find(key);
      if (it == e.end()) return;
      if (!it->is_number_integer()) throw DataError(where + " (" + n.name + "): '" + key + "' must be an integer");
      field = it->get<int64_t>();
    };
    integer("in_channels", n.in_channels);
    integer("out_channels", n.out_channels);
    integer("groups", n.groups);
    integer("span", n.span);
    integer("kernel", n.kernel);
    integer("stride", n.stride);
    integer("padding", n.padding);
    integer("dilation", n.dilation);
    integer("out_h", n.out_h);
    integer("out_w", n.out_w);
    if (auto it = e.find("bias"); it != e.end()) {
      if (!it->is_boolean()) throw DataError(where + " (" + n.name + "): 'bias' must be true or false");
      n.bias = it->get<bool>();
    }
    for (auto [key, field] : {std::pair<const char*, double*>{"eps", &n.eps}, {"rate", &n.rate}}) {
      auto it = e.find(key);
      if (it == e.end()) continue;
      if (!it->is_number()) throw DataError(where + " (" + n.name + "): '" + key + "' must be a number");
      *field = it->get<double>();
    }
    if (auto it = e.find("inputs"); it != e.end()) {
      if (!it->is_array()) throw DataError(where + " (" + n.name + "): 'inputs' must be a list of node ids");
      for (const auto& x : *it) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= int64_t(i))
          throw DataError(where + " (" + n.name + "): 'inputs' must list ids of earlier nodes");
        n.inputs.push_back(x.get<int>());
      }
    }
    g.push(std::move(n));
  }
  return g;
}

}  // namespace expctl::models
