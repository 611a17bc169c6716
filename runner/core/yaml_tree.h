// A YAML tree that remembers where every value came from (file, line, column), rejects duplicate keys,
// and merges `include:` files. yaml-cpp's own Node accepts duplicate keys silently and loses the file name,
// so scenarios are parsed from yaml-cpp's event stream into this tree instead.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace expctl {

/// Largest scenario or included file read (bytes).
inline constexpr std::uintmax_t kMaxScenarioFileBytes = 1u << 20;
/// Largest total of the files one scenario reads through `include:` (itself included), in bytes.
inline constexpr std::uintmax_t kMaxScenarioTotalBytes = 4u << 20;
/// Most file reads for one scenario, includes counted each time they are read (a file that includes another 1000
/// times, which includes another 1000 times, is small but slow).
inline constexpr std::size_t kMaxScenarioFiles = 1000;
/// Most nodes (scalars, lists, mappings; alias expansions included) one YAML document may build.
inline constexpr std::size_t kMaxYamlNodes = 100000;
/// Deepest nesting of lists and mappings (alias expansions included).
inline constexpr std::size_t kMaxYamlDepth = 64;
/// Most nodes all the files of one scenario (itself and its includes) may build together: each file may build
/// kMaxYamlNodes, but a chain of small files each expanding an alias to that many would add up to gigabytes.
inline constexpr std::size_t kMaxScenarioTotalNodes = 2 * kMaxYamlNodes;

/// Offset of the first byte of `s` that is not part of well-formed UTF-8 (overlong forms, surrogates and code
/// points above U+10FFFF are not), or std::string::npos when all of `s` is.
std::size_t invalid_utf8_at(const std::string& s);
/// `s` for a message: bytes that are not well-formed UTF-8, and control characters, written as \xNN.
std::string printable(const std::string& s);
/// "" when `s` is well-formed UTF-8, else "not valid UTF-8 (byte 0xFF at offset 3)".
std::string utf8_problem(const std::string& s);

/// Where a value was written: 1-based line and column in `file` (a path, or "--set KEY=VALUE").
struct Mark {
  std::shared_ptr<const std::string> file;
  int line = 0;
  int col = 0;
  /// "file:line:col" (or just "file" when the line is unknown).
  std::string str() const;
};

/// One node of a parsed YAML document. Maps keep their keys in file order.
struct YNode {
  enum class Kind { Null, Scalar, Seq, Map };
  Kind kind = Kind::Null;
  Mark mark;                                  ///< where the value starts
  std::string scalar;                         ///< Scalar only: the text as written (without quotes)
  bool quoted = false;                        ///< Scalar only: written in quotes (so `"1"` stays a string)
  std::vector<std::shared_ptr<YNode>> items;  ///< Seq
  std::vector<std::pair<std::string, std::shared_ptr<YNode>>> entries;  ///< Map: key -> value
  std::vector<Mark> key_marks;                                          ///< Map: where each key is

  bool is_map() const { return kind == Kind::Map; }
  bool is_seq() const { return kind == Kind::Seq; }
  bool is_scalar() const { return kind == Kind::Scalar; }
  bool is_null() const { return kind == Kind::Null; }
  /// Map lookup; nullptr when absent.
  std::shared_ptr<YNode> get(const std::string& key) const;
  /// Index of `key` in `entries`, or -1.
  int index_of(const std::string& key) const;
  /// Sets (replacing) or appends a map entry.
  void set(const std::string& key, std::shared_ptr<YNode> value, const Mark& key_mark);
  void erase(const std::string& key);
  /// A short description for messages: "a mapping", "a list", "'abc'" (long text shortened), "null".
  std::string describe() const;
  /// What kind of value this is, never its text: "a mapping", "a list", "a scalar", "null". For messages
  /// about a file that may not be a scenario at all, whose content must not be echoed.
  std::string kind_name() const;
  std::shared_ptr<YNode> clone() const;
};
using YNodePtr = std::shared_ptr<YNode>;

/// Parses YAML text. Errors (malformed YAML, duplicate keys, several documents, text that is not UTF-8, more than
/// kMaxYamlNodes nodes or kMaxYamlDepth levels) are collected in `errors` as "file:line:col: reason" and nullptr
/// is returned.
YNodePtr parse_yaml(const std::string& text, const std::string& file_label, std::vector<std::string>& errors);

/// What load_yaml_with_includes() accepts of a file that another file names.
struct IncludeRules {
  /// The top-level keys a scenario may have ("include" among them); empty: any (no check).
  std::vector<std::string> top_keys;
  /// The file itself was named by another one (scenario.starts_from), not on the command line.
  bool reached = false;
};

/// Reads and parses a file, then resolves its `include:` (a path or a list of paths, relative to the file):
/// included files are merged first, in order, and the including file's values override them (maps merge
/// key by key, anything else is replaced). Include cycles, missing or unreadable files, anything but a regular
/// file (a FIFO, a device), a file over kMaxScenarioFileBytes, more than kMaxScenarioTotalBytes or
/// kMaxScenarioTotalNodes in all, more than kMaxScenarioFiles reads, a file name that is not UTF-8, and a file that
/// is not a mapping are errors.
///
/// A file named by another one (every included file, and the file itself when `rules.reached`) may be any file
/// (`include: /etc/shadow`), so nothing it says is quoted until it is known to be a mapping of expctl keys: a file
/// that is not YAML or not a mapping is one error saying what kind of thing was found; a mapping with a top-level
/// key outside `rules.top_keys` is one error at that key's line, naming no key of the file; a limit reached in it
/// names the place, not the key. Only then are its duplicate keys and bytes that are not UTF-8 reported by key.
YNodePtr load_yaml_with_includes(const std::filesystem::path& file, std::vector<std::string>& errors,
                                 const IncludeRules& rules = {});

/// Deep merge: values of `over` replace those of `base` (maps merged recursively). Returns a new tree.
YNodePtr merge_yaml(const YNodePtr& base, const YNodePtr& over);

/// Serialises a tree back to YAML (block style, keys in order).
std::string to_yaml(const YNodePtr& node);

}  // namespace expctl
