#include "runner/core/yaml_tree.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace expctl {
namespace fs = std::filesystem;

std::string Mark::str() const {
  std::string f = file ? *file : std::string("<unknown>");
  if (line <= 0) return f;
  return f + ":" + std::to_string(line) + ":" + std::to_string(col);
}

std::shared_ptr<YNode> YNode::get(const std::string& key) const {
  int i = index_of(key);
  return i < 0 ? nullptr : entries[i].second;
}

int YNode::index_of(const std::string& key) const {
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].first == key) return static_cast<int>(i);
  return -1;
}

void YNode::set(const std::string& key, std::shared_ptr<YNode> value, const Mark& key_mark) {
  int i = index_of(key);
  if (i >= 0) {
    entries[i].second = std::move(value);
    key_marks[i] = key_mark;
  } else {
    entries.emplace_back(key, std::move(value));
    key_marks.push_back(key_mark);
  }
}

void YNode::erase(const std::string& key) {
  int i = index_of(key);
  if (i < 0) return;
  entries.erase(entries.begin() + i);
  key_marks.erase(key_marks.begin() + i);
}

std::string YNode::describe() const {
  switch (kind) {
    case Kind::Null:
      return "null";
    case Kind::Map:
      return "a mapping";
    case Kind::Seq:
      return "a list";
    case Kind::Scalar:
      return "'" + scalar + "'";
  }
  return "?";
}

std::shared_ptr<YNode> YNode::clone() const {
  auto n = std::make_shared<YNode>(*this);
  for (auto& it : n->items) it = it->clone();
  for (auto& e : n->entries) e.second = e.second->clone();
  return n;
}

namespace {

// Builds a YNode tree from yaml-cpp's parser events. yaml-cpp reports marks 0-based; ours are 1-based.
class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(std::shared_ptr<const std::string> file, std::vector<std::string>& errors)
      : file_(std::move(file)), errors_(errors) {}

  YNodePtr root;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override {
    auto n = make(YNode::Kind::Null, m);
    remember(anchor, n);
    add(n);
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    YNodePtr n = it != anchors_.end() ? it->second->clone() : make(YNode::Kind::Null, m);
    add(n);
  }
  void OnScalar(const YAML::Mark& m, const std::string& tag, YAML::anchor_t anchor, const std::string& value) override {
    auto n = make(YNode::Kind::Scalar, m);
    n->scalar = value;
    n->quoted = (tag == "!");  // yaml-cpp gives quoted scalars the non-specific tag "!"
    remember(anchor, n);
    add(n);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    auto n = make(YNode::Kind::Seq, m);
    remember(anchor, n);
    std::string path = current_key_;  // add() clears it
    add(n);
    stack_.push_back({n, false, {}, {}, path});
  }
  void OnSequenceEnd() override { stack_.pop_back(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    auto n = make(YNode::Kind::Map, m);
    remember(anchor, n);
    std::string path = current_key_;  // add() clears it
    add(n);
    stack_.push_back({n, true, {}, {}, path});
  }
  void OnMapEnd() override { stack_.pop_back(); }

 private:
  struct Frame {
    YNodePtr node;
    bool expecting_key;  // maps alternate key, value
    YNodePtr pending_key;
    Mark pending_key_mark;
    std::string path;  // dotted key of this container, for messages
  };

  YNodePtr make(YNode::Kind kind, const YAML::Mark& m) {
    auto n = std::make_shared<YNode>();
    n->kind = kind;
    n->mark = Mark{file_, m.line + 1, m.column + 1};
    return n;
  }
  void remember(YAML::anchor_t anchor, const YNodePtr& n) {
    if (anchor) anchors_[anchor] = n;
  }
  void add(const YNodePtr& n) {
    current_key_.clear();
    if (stack_.empty()) {
      if (!root) root = n;
      return;
    }
    Frame& f = stack_.back();
    if (f.node->kind == YNode::Kind::Seq) {
      f.node->items.push_back(n);
      return;
    }
    if (!f.pending_key) {
      f.pending_key = n;
      f.pending_key_mark = n->mark;
      // A container that follows as the value gets this dotted path.
      current_key_ = f.path.empty() ? n->scalar : f.path + "." + n->scalar;
      return;
    }
    YNodePtr key = std::move(f.pending_key);
    f.pending_key = nullptr;
    if (key->kind != YNode::Kind::Scalar) {
      errors_.push_back(key->mark.str() + ": keys must be plain names, not " + key->describe());
      return;
    }
    int prev = f.node->index_of(key->scalar);
    if (prev >= 0) {
      std::string dotted = f.path.empty() ? key->scalar : f.path + "." + key->scalar;
      errors_.push_back(key->mark.str() + ": " + dotted + ": duplicate key (first defined at line " +
                        std::to_string(f.node->key_marks[prev].line) + ")");
      return;
    }
    f.node->entries.emplace_back(key->scalar, n);
    f.node->key_marks.push_back(key->mark);
  }

  std::shared_ptr<const std::string> file_;
  std::vector<std::string>& errors_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, YNodePtr> anchors_;
  std::string current_key_;
};

}  // namespace

YNodePtr parse_yaml(const std::string& text, const std::string& file_label, std::vector<std::string>& errors) {
  auto file = std::make_shared<const std::string>(file_label);
  std::istringstream in(text);
  size_t errors_before = errors.size();
  try {
    YAML::Parser parser(in);
    TreeBuilder builder(file, errors);
    if (!parser.HandleNextDocument(builder) || !builder.root) {
      auto empty = std::make_shared<YNode>();
      empty->kind = YNode::Kind::Map;
      empty->mark = Mark{file, 1, 1};
      return empty;
    }
    YNodePtr root = builder.root;
    TreeBuilder second(file, errors);
    if (parser.HandleNextDocument(second) && second.root) {
      errors.push_back(second.root->mark.str() + ": a scenario file holds one YAML document, found a second one");
    }
    if (errors.size() != errors_before) return nullptr;
    return root;
  } catch (const YAML::Exception& e) {
    Mark m{file, e.mark.line + 1, e.mark.column + 1};
    errors.push_back(m.str() + ": malformed YAML: " + e.msg);
    return nullptr;
  }
}

YNodePtr merge_yaml(const YNodePtr& base, const YNodePtr& over) {
  if (!base) return over ? over->clone() : nullptr;
  if (!over) return base->clone();
  if (!base->is_map() || !over->is_map()) return over->clone();
  auto out = base->clone();
  for (size_t i = 0; i < over->entries.size(); ++i) {
    const auto& [key, value] = over->entries[i];
    auto existing = out->get(key);
    out->set(key, existing ? merge_yaml(existing, value) : value->clone(), over->key_marks[i]);
  }
  out->mark = over->mark;
  return out;
}

namespace {

// Why `file` cannot be read as a YAML file, or "" when it can be tried.
std::string unreadable_reason(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return "file not found";
  if (fs::is_directory(file, ec)) return "is a directory, not a YAML file";
  return "";
}

YNodePtr load_recursive(const fs::path& file, const std::string& label, std::vector<std::string>& errors,
                        std::vector<fs::path>& chain) {
  std::error_code ec;
  fs::path canon = fs::weakly_canonical(file, ec);
  if (std::string why = unreadable_reason(file); !why.empty()) {
    errors.push_back(label + ": " + why);
    return nullptr;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    errors.push_back(label + ": cannot read the file");
    return nullptr;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    errors.push_back(label + ": cannot read the file");
    return nullptr;
  }
  YNodePtr root = parse_yaml(ss.str(), label, errors);
  if (!root) return nullptr;
  if (!root->is_map()) {
    errors.push_back(root->mark.str() + ": a scenario file must be a mapping of keys, found " + root->describe());
    return nullptr;
  }
  auto inc = root->get("include");
  if (!inc) return root;

  std::vector<YNodePtr> paths;
  if (inc->is_scalar()) {
    paths.push_back(inc);
  } else if (inc->is_seq()) {
    paths = inc->items;
  } else {
    errors.push_back(inc->mark.str() + ": include: expected a file name or a list of file names, got " +
                     inc->describe());
    return nullptr;
  }
  chain.push_back(canon);
  YNodePtr merged;
  bool ok = true;
  for (const auto& p : paths) {
    if (!p->is_scalar() || p->scalar.empty()) {
      errors.push_back(p->mark.str() + ": include: expected a file name, got " + p->describe());
      ok = false;
      continue;
    }
    fs::path target = file.parent_path() / p->scalar;
    std::string sub_label = target.lexically_normal().string();
    if (std::string why = unreadable_reason(target); !why.empty()) {
      errors.push_back(p->mark.str() + ": include: " + sub_label + ": " + why);
      ok = false;
      continue;
    }
    fs::path sub_canon = fs::weakly_canonical(target, ec);
    if (std::find(chain.begin(), chain.end(), sub_canon) != chain.end() || sub_canon == canon) {
      errors.push_back(p->mark.str() + ": include: " + sub_label +
                       ": include cycle (the file includes itself, "
                       "directly or through other files)");
      ok = false;
      continue;
    }
    YNodePtr sub = load_recursive(target, sub_label, errors, chain);
    if (!sub) {
      ok = false;
      continue;
    }
    merged = merge_yaml(merged, sub);
  }
  chain.pop_back();
  if (!ok) return nullptr;
  root->erase("include");
  return merge_yaml(merged, root);
}

void emit(YAML::Emitter& out, const YNodePtr& n) {
  switch (n->kind) {
    case YNode::Kind::Null:
      out << YAML::Null;
      break;
    case YNode::Kind::Scalar:
      if (n->quoted)
        out << YAML::DoubleQuoted << n->scalar;
      else
        out << n->scalar;
      break;
    case YNode::Kind::Seq: {
      bool flat = true;
      for (auto& i : n->items) flat = flat && !i->is_map() && !i->is_seq();
      if (flat) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (auto& i : n->items) emit(out, i);
      out << YAML::EndSeq;
      break;
    }
    case YNode::Kind::Map:
      out << YAML::BeginMap;
      for (auto& [k, v] : n->entries) {
        out << YAML::Key << k << YAML::Value;
        emit(out, v);
      }
      out << YAML::EndMap;
      break;
  }
}

}  // namespace

YNodePtr load_yaml_with_includes(const fs::path& file, std::vector<std::string>& errors) {
  std::vector<fs::path> chain;
  return load_recursive(file, file.string(), errors, chain);
}

std::string to_yaml(const YNodePtr& node) {
  YAML::Emitter out;
  emit(out, node);
  return std::string(out.c_str()) + "\n";
}

}  // namespace expctl
