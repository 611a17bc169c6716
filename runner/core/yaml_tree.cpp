#include "runner/core/yaml_tree.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <sstream>
#include <unordered_map>

#include "runner/core/files.h"
#include "runner/core/params.h"  // did_you_mean, join

namespace expctl {
namespace fs = std::filesystem;

std::string Mark::str() const {
  std::string f = file ? *file : std::string("<unknown>");
  if (line <= 0) return f;
  return f + ":" + std::to_string(line) + ":" + std::to_string(col);
}

// ---- UTF-8 ---------------------------------------------------------------------------------------

namespace {

// Length of the well-formed UTF-8 sequence starting at s[i] (Unicode's table 3-7), or 0 when there is none.
size_t utf8_sequence_length(const std::string& s, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b = at(i);
  if (b < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;  // overlong
    if (b == 0xED) hi = 0x9F;  // surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;  // overlong
    if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size() || at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k)
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  return len;
}

std::string hex_byte(unsigned char b) {
  const char* digits = "0123456789ABCDEF";
  return std::string{digits[b >> 4], digits[b & 15]};
}

}  // namespace

size_t invalid_utf8_at(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_sequence_length(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string::npos;
}

std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0 || b < 0x20 || b == 0x7F) {
      out += "\\x" + hex_byte(b);
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

std::string utf8_problem(const std::string& s) {
  const size_t at = invalid_utf8_at(s);
  if (at == std::string::npos) return "";
  return "not valid UTF-8 (byte 0x" + hex_byte(static_cast<unsigned char>(s[at])) + " at offset " + std::to_string(at) +
         ")";
}

// ---- YNode ---------------------------------------------------------------------------------------

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
  if (kind != Kind::Scalar) return kind_name();
  // A message quotes a value, not a page of it; cut on a character boundary.
  constexpr size_t kMaxQuoted = 80;
  if (scalar.size() <= kMaxQuoted) return "'" + scalar + "'";
  size_t cut = kMaxQuoted;
  while (cut > 0 && (static_cast<unsigned char>(scalar[cut]) & 0xC0) == 0x80) --cut;
  return "'" + scalar.substr(0, cut) + "...' (" + std::to_string(scalar.size()) + " bytes)";
}

std::string YNode::kind_name() const {
  switch (kind) {
    case Kind::Null:
      return "null";
    case Kind::Map:
      return "a mapping";
    case Kind::Seq:
      return "a list";
    case Kind::Scalar:
      return "a scalar";
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

// Thrown out of yaml-cpp's parser by TreeBuilder when a limit is reached: building stops at once. `unkeyed` is the
// message without the dotted key, for a file whose keys must not be quoted (see load_yaml_with_includes()).
struct LimitReached {
  std::string message;
  std::string unkeyed;
  bool load_wide = false;  // the load-wide node limit: no further file is read
};

// How many nodes one document may build, and how to say so: the document's own limit, or what is left of the
// load-wide one when that is smaller.
struct NodeBudget {
  size_t max = kMaxYamlNodes;
  bool load_wide = false;
  std::string too_many() const {
    return load_wide ? "the scenario and the files it includes have more than " +
                           std::to_string(kMaxScenarioTotalNodes) + " nodes in all, the most one scenario may hold"
                     : "the document has more than " + std::to_string(kMaxYamlNodes) +
                           " nodes, the most a scenario may hold";
  }
  std::string alias_too_big() const {
    return load_wide ? "the alias expands the scenario and the files it includes beyond " +
                           std::to_string(kMaxScenarioTotalNodes) + " nodes in all, the most one scenario may hold"
                     : "the alias expands the document beyond " + std::to_string(kMaxYamlNodes) +
                           " nodes, the most a scenario may hold";
  }
};

// Nodes and levels of a subtree (a lone scalar: 1 node, 0 levels), without recursion.
std::pair<size_t, size_t> extent(const YNode& root) {
  size_t nodes = 0, height = 0;
  std::vector<std::pair<const YNode*, size_t>> todo{{&root, 0}};
  while (!todo.empty()) {
    auto [n, depth] = todo.back();
    todo.pop_back();
    ++nodes;
    height = std::max(height, depth);
    for (const auto& i : n->items) todo.push_back({i.get(), depth + 1});
    for (const auto& e : n->entries) todo.push_back({e.second.get(), depth + 1});
  }
  return {nodes, height};
}

// Builds a YNode tree from yaml-cpp's parser events. yaml-cpp reports marks 0-based; ours are 1-based.
// Aliases are copied into the tree (so a value can be overridden in one place only), which is what makes
// the node and depth limits necessary: nested aliases double the tree at every level.
class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(std::shared_ptr<const std::string> file, std::vector<std::string>& errors, NodeBudget budget = {})
      : file_(std::move(file)), errors_(errors), budget_(std::move(budget)) {}

  YNodePtr root;
  /// Nodes built so far, alias copies included.
  size_t nodes() const { return nodes_; }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t anchor) override {
    auto n = make(YNode::Kind::Null, m);
    remember(anchor, n);
    add(n);
  }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      add(make(YNode::Kind::Null, m));
      return;
    }
    auto [nodes, height] = extent(*it->second);
    const Mark where = mark_of(m);
    if (nodes_ + nodes > budget_.max) limit(where, budget_.alias_too_big(), budget_.load_wide);
    if (stack_.size() + height > kMaxYamlDepth)
      limit(where, "the alias nests the document more than " + std::to_string(kMaxYamlDepth) +
                       " levels deep, the most a scenario may hold");
    nodes_ += nodes;
    add(it->second->clone());
  }
  void OnScalar(const YAML::Mark& m, const std::string& tag, YAML::anchor_t anchor, const std::string& value) override {
    auto n = make(YNode::Kind::Scalar, m);
    n->scalar = value;
    n->quoted = (tag == "!");  // yaml-cpp gives quoted scalars the non-specific tag "!"
    check_utf8(*n);
    remember(anchor, n);
    add(n);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(make(YNode::Kind::Seq, m), anchor);
  }
  void OnSequenceEnd() override { stack_.pop_back(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open(make(YNode::Kind::Map, m), anchor);
  }
  void OnMapEnd() override { stack_.pop_back(); }

 private:
  struct Frame {
    YNodePtr node;
    YNodePtr pending_key;                           // maps alternate key, value
    std::string path;                               // dotted key of this container, for messages
    std::unordered_map<std::string, size_t> index;  // key -> entry: duplicate checks in O(1)
  };

  Mark mark_of(const YAML::Mark& m) const { return Mark{file_, m.line + 1, m.column + 1}; }
  // "file:line:col: dotted.key: reason" (the key part only when there is one).
  static std::string message(const Mark& where, const std::string& path, const std::string& reason) {
    return where.str() + ": " + (path.empty() ? "" : printable(path) + ": ") + reason;
  }
  [[noreturn]] void limit(const Mark& where, const std::string& reason, bool load_wide = false) const {
    throw LimitReached{message(where, value_path(), reason), message(where, "", reason), load_wide};
  }

  YNodePtr make(YNode::Kind kind, const YAML::Mark& m) {
    auto n = std::make_shared<YNode>();
    n->kind = kind;
    n->mark = mark_of(m);
    if (++nodes_ > budget_.max) limit(n->mark, budget_.too_many(), budget_.load_wide);
    return n;
  }
  void open(const YNodePtr& n, YAML::anchor_t anchor) {
    if (stack_.size() >= kMaxYamlDepth)
      limit(n->mark,
            "nested more than " + std::to_string(kMaxYamlDepth) + " levels deep, the most a scenario may hold");
    remember(anchor, n);
    std::string path = value_path();
    add(n);
    stack_.push_back({n, nullptr, std::move(path), {}});
  }
  void remember(YAML::anchor_t anchor, const YNodePtr& n) {
    if (anchor) anchors_[anchor] = n;
  }
  // The dotted key of the value about to be added (a map's value: its key appended; a key or a list item: the
  // container's own key).
  std::string value_path() const {
    if (stack_.empty()) return "";
    const Frame& f = stack_.back();
    if (f.node->is_map() && f.pending_key && f.pending_key->is_scalar())
      return f.path.empty() ? f.pending_key->scalar : f.path + "." + f.pending_key->scalar;
    return f.path;
  }
  // A value that JSON reports, file names and logs cannot carry is refused here, where its line is known.
  void check_utf8(const YNode& n) {
    std::string why = utf8_problem(n.scalar);
    if (why.empty()) return;
    const bool is_key = !stack_.empty() && stack_.back().node->is_map() && !stack_.back().pending_key;
    if (is_key) {
      const std::string& parent = stack_.back().path;
      errors_.push_back(message(n.mark, parent.empty() ? n.scalar : parent + "." + n.scalar, "the key is " + why));
    } else {
      errors_.push_back(message(n.mark, value_path(), "the value is " + why));
    }
  }
  void add(const YNodePtr& n) {
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
      return;
    }
    YNodePtr key = std::move(f.pending_key);
    f.pending_key = nullptr;
    if (key->kind != YNode::Kind::Scalar) {
      errors_.push_back(key->mark.str() + ": keys must be plain names, not " + key->kind_name());
      return;
    }
    auto [it, inserted] = f.index.emplace(key->scalar, f.node->entries.size());
    if (!inserted) {
      std::string dotted = f.path.empty() ? key->scalar : f.path + "." + key->scalar;
      errors_.push_back(
          message(key->mark, dotted,
                  "duplicate key (first defined at line " + std::to_string(f.node->key_marks[it->second].line) + ")"));
      return;
    }
    f.node->entries.emplace_back(key->scalar, n);
    f.node->key_marks.push_back(key->mark);
  }

  std::shared_ptr<const std::string> file_;
  std::vector<std::string>& errors_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, YNodePtr> anchors_;
  NodeBudget budget_;
  size_t nodes_ = 0;  // built so far, alias copies included
};

// One parsed document. When the text is not YAML, or a limit was reached, `fatal` is the only message: what
// was built before says nothing reliable, and for a file that is not a scenario it must not be quoted.
struct Parsed {
  YNodePtr root;
  std::string fatal;
  std::string fatal_unkeyed;          // `fatal` without a dotted key (a limit names where it was reached)
  std::vector<std::string> problems;  // about what the document says: duplicate keys, bytes that are not UTF-8
  size_t nodes = 0;                   // built, alias copies included
  bool load_limit = false;            // `fatal` is the load-wide node limit
};

Parsed parse_document(const std::string& text, const std::shared_ptr<const std::string>& file,
                      const NodeBudget& budget = {}) {
  Parsed p;
  std::istringstream in(text);
  try {
    YAML::Parser parser(in);
    TreeBuilder builder(file, p.problems, budget);
    if (!parser.HandleNextDocument(builder) || !builder.root) {
      p.root = std::make_shared<YNode>();
      p.root->kind = YNode::Kind::Map;
      p.root->mark = Mark{file, 1, 1};
      return p;
    }
    p.root = builder.root;
    p.nodes = builder.nodes();
    std::vector<std::string> ignored;
    TreeBuilder second(file, ignored);
    if (parser.HandleNextDocument(second) && second.root)
      p.problems.push_back(second.root->mark.str() + ": a scenario file holds one YAML document, found a second one");
  } catch (const YAML::Exception& e) {
    // yaml-cpp appends what it found to some messages ("unknown escape character: q"); keep the generic part.
    p = Parsed{};
    p.fatal =
        Mark{file, e.mark.line + 1, e.mark.column + 1}.str() + ": malformed YAML: " + e.msg.substr(0, e.msg.find(": "));
    p.fatal_unkeyed = p.fatal;
  } catch (const LimitReached& e) {
    p = Parsed{};
    p.fatal = e.message;
    p.fatal_unkeyed = e.unkeyed;
    p.load_limit = e.load_wide;
  }
  return p;
}

}  // namespace

YNodePtr parse_yaml(const std::string& text, const std::string& file_label, std::vector<std::string>& errors) {
  Parsed p = parse_document(text, std::make_shared<const std::string>(file_label));
  if (!p.fatal.empty()) {
    errors.push_back(p.fatal);
    return nullptr;
  }
  if (!p.problems.empty()) {
    errors.insert(errors.end(), p.problems.begin(), p.problems.end());
    return nullptr;
  }
  return p.root;
}

YNodePtr merge_yaml(const YNodePtr& base, const YNodePtr& over) {
  if (!base) return over ? over->clone() : nullptr;
  if (!over) return base->clone();
  if (!base->is_map() || !over->is_map()) return over->clone();
  auto out = base->clone();
  std::unordered_map<std::string, size_t> index;  // YNode::set would make a large merge quadratic
  for (size_t i = 0; i < out->entries.size(); ++i) index.emplace(out->entries[i].first, i);
  for (size_t i = 0; i < over->entries.size(); ++i) {
    const auto& [key, value] = over->entries[i];
    auto [it, added] = index.emplace(key, out->entries.size());
    if (added) {
      out->entries.emplace_back(key, value->clone());
      out->key_marks.push_back(over->key_marks[i]);
    } else {
      auto& slot = out->entries[it->second].second;
      slot = merge_yaml(slot, value);
      out->key_marks[it->second] = over->key_marks[i];
    }
  }
  out->mark = over->mark;
  return out;
}

namespace {

std::string not_regular(mode_t mode) {
  if (S_ISDIR(mode)) return "is a directory, not a YAML file";
  return "is " + file_kind(mode) + ", not a regular file";
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct LoadState {
  std::vector<std::string>& errors;
  const IncludeRules& rules;
  std::vector<fs::path> chain;  // the files being included, to find cycles
  std::uintmax_t budget = kMaxScenarioTotalBytes;
  size_t nodes_left = kMaxScenarioTotalNodes;
  size_t files_read = 0;
  bool limit_reached = false;  // then no further file is read: one message, not one per remaining include
};

// Reads a scenario or included file into `text`, or says why it cannot ("" when it could). Only a regular file is
// read: a FIFO would block forever and /dev/zero never ends, and opening a device can have effects of its own, so
// the path is checked before opening; the descriptor is checked again (the path may have been swapped meanwhile)
// and opened non-blocking, so even then a FIFO cannot hang. Counts against what the whole load may still read.
std::string read_bounded(const fs::path& file, LoadState& load, std::string& text) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0)
    return errno == ENOENT || errno == ENOTDIR ? "file not found" : "cannot read the file";
  if (!S_ISREG(st.st_mode)) return not_regular(st.st_mode);
  Fd f{::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)};
  if (f.fd < 0 || ::fstat(f.fd, &st) != 0) return "cannot read the file";
  if (!S_ISREG(st.st_mode)) return not_regular(st.st_mode);
  const std::string too_big =
      "holds more than " + std::to_string(kMaxScenarioFileBytes) + " bytes, the most a scenario file may";
  if (static_cast<std::uintmax_t>(st.st_size) > kMaxScenarioFileBytes) return too_big;
  // Read one byte past the limits: a file that grows meanwhile, or lies about its size (/proc), is still caught.
  const std::uintmax_t cap = std::min(kMaxScenarioFileBytes, load.budget) + 1;
  // The buffer starts at the size the file claims and grows only as bytes arrive: sized to the cap up front, each
  // level of an include chain held 1 MiB while the levels below it were read (1.2 GB for 999 files of 30 bytes).
  text.assign(std::min<std::uintmax_t>(cap, static_cast<std::uintmax_t>(st.st_size) + 1), '\0');
  size_t got = 0;
  while (got < cap) {
    if (got == text.size()) text.resize(std::min<std::uintmax_t>(cap, std::max<size_t>(4096, 2 * text.size())));
    ssize_t n = ::read(f.fd, &text[got], text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "cannot read the file";
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  text.shrink_to_fit();
  if (got > kMaxScenarioFileBytes) return too_big;
  if (got > load.budget) {
    load.limit_reached = true;
    return "the scenario and the files it includes hold more than " + std::to_string(kMaxScenarioTotalBytes) +
           " bytes in all, the most one scenario may read";
  }
  load.budget -= got;
  return "";
}

// merge_yaml() for trees this load owns alone (each file's tree is fresh, and aliases were copied into it): `over`
// is moved into `base` instead of both being copied, so a level of an include chain costs what it adds, not a copy
// of everything below it (999 levels over a large included tree were 999 copies of it).
YNodePtr merge_owned(YNodePtr base, YNodePtr over) {
  if (!base) return over;
  if (!over) return base;
  if (!base->is_map() || !over->is_map()) return over;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < base->entries.size(); ++i) index.emplace(base->entries[i].first, i);
  for (size_t i = 0; i < over->entries.size(); ++i) {
    auto& [key, value] = over->entries[i];
    auto [it, added] = index.emplace(key, base->entries.size());
    if (added) {
      base->entries.emplace_back(key, std::move(value));
      base->key_marks.push_back(over->key_marks[i]);
    } else {
      auto& slot = base->entries[it->second].second;
      slot = merge_owned(std::move(slot), std::move(value));
      base->key_marks[it->second] = over->key_marks[i];
    }
  }
  base->mark = over->mark;
  return base;
}

// The first top-level key of `root` that `rules` does not allow, with how many such keys there are.
std::pair<int, size_t> first_unknown_top_key(const YNode& root, const IncludeRules& rules) {
  int first = -1;
  size_t count = 0;
  for (size_t i = 0; i < root.entries.size(); ++i) {
    if (std::find(rules.top_keys.begin(), rules.top_keys.end(), root.entries[i].first) != rules.top_keys.end())
      continue;
    if (first < 0) first = static_cast<int>(i);
    ++count;
  }
  return {first, count};
}

// Reads and parses one file; nullptr (with its errors added) when it cannot be used. `reached`: the file was named
// by another one (include, starts_from), so it may be any file at all (/etc/shadow) and what it says is quoted only
// once it is known to be a mapping of expctl keys. Its own text buffer is gone when this returns: a chain of
// includes holds the trees of the files above, not their bytes.
YNodePtr read_document(const fs::path& file, const std::string& label, const std::string& where, bool reached,
                       LoadState& st) {
  std::vector<std::string>& errors = st.errors;
  if (++st.files_read > kMaxScenarioFiles) {
    errors.push_back(where + label + ": the scenario and its includes read more than " +
                     std::to_string(kMaxScenarioFiles) + " files, the most one scenario may read");
    st.limit_reached = true;
    return nullptr;
  }
  Parsed parsed;
  {
    std::string text;
    if (std::string why = read_bounded(file, st, text); !why.empty()) {
      errors.push_back(where + label + ": " + why);
      return nullptr;
    }
    const NodeBudget budget{std::min(kMaxYamlNodes, st.nodes_left), st.nodes_left < kMaxYamlNodes};
    parsed = parse_document(text, std::make_shared<const std::string>(label), budget);
  }
  if (!parsed.fatal.empty()) {
    errors.push_back(reached ? parsed.fatal_unkeyed : parsed.fatal);
    st.limit_reached = st.limit_reached || parsed.load_limit;
    return nullptr;
  }
  st.nodes_left -= std::min(st.nodes_left, parsed.nodes);
  YNodePtr root = parsed.root;
  if (!root->is_map()) {  // perhaps not a scenario at all: say what kind of thing it is, not what it says
    errors.push_back(root->mark.str() + ": a scenario file must be a mapping of keys, found " + root->kind_name());
    return nullptr;
  }
  if (reached && !st.rules.top_keys.empty()) {
    // A mapping whose keys are not expctl's may be any "name: value" file: one message, no key quoted. A typo in a
    // shared defaults file still gets its did-you-mean (it names an expctl key, nothing of the file).
    auto [first, count] = first_unknown_top_key(*root, st.rules);
    if (first >= 0) {
      errors.push_back(root->key_marks[first].str() + ": " +
                       (count == 1 ? std::string("a top-level key that is not expctl's")
                                   : std::to_string(count) + " top-level keys that are not expctl's, the first here") +
                       suggestion(root->entries[first].first, st.rules.top_keys) +
                       "; valid: " + join(st.rules.top_keys) +
                       "; a file named by include or starts_from may be any file, so none of its text is shown");
      return nullptr;
    }
  }
  if (!parsed.problems.empty()) {
    errors.insert(errors.end(), parsed.problems.begin(), parsed.problems.end());
    return nullptr;
  }
  return root;
}

// `where` prefixes errors about reading the file itself: "" for the scenario, "x.yaml:3:10: include: " for an
// included one.
YNodePtr load_recursive(const fs::path& file, const std::string& label, const std::string& where, bool reached,
                        LoadState& st) {
  std::vector<std::string>& errors = st.errors;
  YNodePtr root = read_document(file, label, where, reached, st);
  if (!root) return nullptr;
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
  std::error_code ec;
  st.chain.push_back(fs::weakly_canonical(file, ec));
  YNodePtr merged;
  bool ok = true;
  for (const auto& p : paths) {
    if (st.limit_reached) {
      ok = false;
      break;
    }
    if (!p->is_scalar() || p->scalar.empty()) {
      errors.push_back(p->mark.str() + ": include: expected a file name, got " + p->describe());
      ok = false;
      continue;
    }
    fs::path target = file.parent_path() / p->scalar;
    std::string sub_label = target.lexically_normal().string();
    fs::path sub_canon = fs::weakly_canonical(target, ec);
    if (std::find(st.chain.begin(), st.chain.end(), sub_canon) != st.chain.end()) {
      errors.push_back(p->mark.str() + ": include: " + sub_label +
                       ": include cycle (the file includes itself, "
                       "directly or through other files)");
      ok = false;
      continue;
    }
    YNodePtr sub = load_recursive(target, sub_label, p->mark.str() + ": include: ", true, st);
    if (!sub) {
      ok = false;
      continue;
    }
    merged = merge_owned(std::move(merged), std::move(sub));
  }
  st.chain.pop_back();
  if (!ok) return nullptr;
  root->erase("include");
  return merge_owned(std::move(merged), std::move(root));
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

YNodePtr load_yaml_with_includes(const fs::path& file, std::vector<std::string>& errors, const IncludeRules& rules) {
  if (std::string why = utf8_problem(file.string()); !why.empty()) {
    errors.push_back(printable(file.string()) + ": the file name is " + why);
    return nullptr;
  }
  LoadState st{errors, rules, {}, kMaxScenarioTotalBytes, kMaxScenarioTotalNodes, 0, false};
  return load_recursive(file, file.string(), "", rules.reached, st);
}

std::string to_yaml(const YNodePtr& node) {
  YAML::Emitter out;
  emit(out, node);
  return std::string(out.c_str()) + "\n";
}

}  // namespace expctl
