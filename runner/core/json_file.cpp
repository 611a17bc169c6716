#include "runner/core/json_file.h"

#include <fstream>

#include "runner/core/error.h"

namespace expctl {
namespace fs = std::filesystem;
using Json = JsonValue::Json;

JsonValue::JsonValue(std::shared_ptr<const Json> root, std::shared_ptr<const fs::path> file, std::string path,
                     const Json* value)
    : root_(std::move(root)), file_(std::move(file)), path_(std::move(path)), value_(value) {}

void JsonValue::fail(const std::string& what) const {
  throw DataError(file_->string() + ": " + (path_.empty() ? std::string("the document") : path_) + ": " + what);
}

JsonValue JsonValue::operator[](const std::string& key) const {
  const Json* v = value_;
  std::string path = path_;
  size_t start = 0;
  for (;;) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    path += (path.empty() ? "" : ".") + part;
    if (v && v->is_object()) {
      auto it = v->find(part);
      v = it == v->end() ? nullptr : &*it;
    } else {
      v = nullptr;
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return JsonValue(root_, file_, path, v);
}

std::vector<JsonValue> JsonValue::items() const {
  const Json& a = expect(&Json::is_array, "an array");
  std::vector<JsonValue> out;
  for (size_t i = 0; i < a.size(); ++i) out.emplace_back(root_, file_, path_ + "[" + std::to_string(i) + "]", &a[i]);
  return out;
}

std::vector<std::pair<std::string, JsonValue>> JsonValue::members() const {
  const Json& o = expect(&Json::is_object, "an object");
  std::vector<std::pair<std::string, JsonValue>> out;
  for (auto it = o.begin(); it != o.end(); ++it)
    out.emplace_back(it.key(), JsonValue(root_, file_, path_ + (path_.empty() ? "" : ".") + it.key(), &it.value()));
  return out;
}

const Json& JsonValue::expect(bool (Json::*is)() const noexcept, const char* type) const {
  if (!value_) fail("missing");
  if (value_->is_null())
    fail(std::string("null where ") + type + " is expected (NaN and infinite values are written as null)");
  if (!(value_->*is)()) fail(std::string(value_->type_name()) + " where " + type + " is expected");
  return *value_;
}

double JsonValue::number() const { return expect(&Json::is_number, "a number").get<double>(); }
int64_t JsonValue::integer() const { return expect(&Json::is_number_integer, "an integer").get<int64_t>(); }
std::string JsonValue::string() const { return expect(&Json::is_string, "a string").get<std::string>(); }
bool JsonValue::boolean() const { return expect(&Json::is_boolean, "true or false").get<bool>(); }

const Json& JsonValue::json() const {
  if (!value_) fail("missing");
  return *value_;
}

JsonFile::JsonFile(fs::path file, Json root)
    : root_(std::make_shared<const Json>(std::move(root))), file_(std::make_shared<const fs::path>(std::move(file))) {}

std::optional<JsonFile> JsonFile::open(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  try {
    return JsonFile(file, Json::parse(in));
  } catch (const std::exception& e) {
    throw DataError(file.string() + ": not valid JSON: " + e.what());
  }
}

JsonValue JsonFile::root() const { return JsonValue(root_, file_, "", root_.get()); }

std::optional<nlohmann::json> read_sidecar(const fs::path& file, std::string* why) {
  std::ifstream in(file);
  if (!in) {
    if (why) *why = "cannot be opened";
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    if (why) *why = e.what();
    return std::nullopt;
  }
}

}  // namespace expctl
