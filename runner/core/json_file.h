// Reading values out of a JSON file that expctl wrote earlier (a stage's metrics, a report.json): every lookup
// that fails names the file and the dotted key, instead of nlohmann's "type must be number, but is null".
//
//     auto f = JsonFile::open(dir / "finetune_metrics.json");    // nullopt when absent
//     double acc = f->root()["after.accuracy"].number();
//     for (const JsonValue& e : f->root()["history"].items()) e["test_loss"].number();
//     // DataError ".../finetune_metrics.json: history[1].test_loss: null where a number is expected
//     //            (NaN and infinite values are written as null)"
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace expctl {

/// A value inside a JsonFile: where it came from (file, dotted path) and the value itself, or nothing.
class JsonValue {
 public:
  using Json = nlohmann::ordered_json;
  JsonValue(std::shared_ptr<const Json> root, std::shared_ptr<const std::filesystem::path> file, std::string path,
            const Json* value);

  /// True when the value is there and not null.
  bool present() const { return value_ && !value_->is_null(); }
  /// True when the member at dotted `key` ("after.held_out") is present.
  bool has(const std::string& key) const { return (*this)[key].present(); }
  /// The member at dotted `key`; absent values are only an error when read.
  JsonValue operator[](const std::string& key) const;
  /// The elements of an array (DataError when this is not one).
  std::vector<JsonValue> items() const;
  /// The members of an object, in file order (DataError when this is not one).
  std::vector<std::pair<std::string, JsonValue>> members() const;

  double number() const;
  int64_t integer() const;
  std::string string() const;
  bool boolean() const;
  /// The value itself (DataError when absent): for values copied into another document as they are.
  const Json& json() const;

  /// "after.accuracy", "history[2].test_loss" ("" for the root).
  const std::string& path() const { return path_; }
  const std::filesystem::path& file() const { return *file_; }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  const Json& expect(bool (Json::*is)() const noexcept, const char* type) const;

  std::shared_ptr<const Json> root_;
  std::shared_ptr<const std::filesystem::path> file_;
  std::string path_;
  const Json* value_;
};

/// A parsed JSON file.
class JsonFile {
 public:
  /// The file, or nullopt when it does not exist; DataError "<file>: not valid JSON: ..." when it cannot be parsed.
  static std::optional<JsonFile> open(const std::filesystem::path& file);
  JsonValue root() const;

 private:
  JsonFile(std::filesystem::path file, JsonValue::Json root);
  std::shared_ptr<const JsonValue::Json> root_;
  std::shared_ptr<const std::filesystem::path> file_;
};

/// A sidecar: a small JSON file expctl keeps beside others for itself (a stage manifest, a download's verified
/// record, an extraction marker, a folder scan cache), where a damaged file means "start again", not an error.
/// Its content, or nullopt when it is missing, unreadable or not JSON; then `why` (when given) says which.
std::optional<nlohmann::json> read_sidecar(const std::filesystem::path& file, std::string* why = nullptr);

}  // namespace expctl
