#include "runner/io/checksum.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/hash.h"
#include "runner/core/json_file.h"

namespace expctl::io {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string sha256_prefix_from_name(const std::string& file_name) {
  std::string name = file_name;
  // A URL's query or fragment is not part of the name.
  if (const auto q = name.find_first_of("?#"); q != std::string::npos) name.erase(q);
  if (const auto slash = name.find_last_of('/'); slash != std::string::npos) name.erase(0, slash + 1);
  const auto dash = name.find_last_of('-');
  if (dash == std::string::npos) return "";
  std::string candidate = name.substr(dash + 1);
  if (const auto dot = candidate.find('.'); dot != std::string::npos) candidate.erase(dot);
  // torchvision uses 8 digits (hub allows more); fewer would match ordinary words like "beef" or "10".
  if (candidate.size() < 8 || candidate.size() > 64) return "";
  for (char c : candidate) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return "";
  }
  return lower(candidate);
}

std::string checksum_mismatch(const std::filesystem::path& file, const std::string& sha256_prefix,
                              const std::string& md5) {
  std::string why;
  if (!sha256_prefix.empty()) {
    const std::string expected = lower(sha256_prefix);
    const std::string actual = sha256_file(file);
    if (actual.compare(0, expected.size(), expected) != 0) {
      why = "SHA-256 starts with " + actual.substr(0, std::min<std::size_t>(expected.size(), actual.size())) +
            ", expected " + expected + " (full SHA-256 " + actual + ")";
    }
  }
  if (!md5.empty()) {
    const std::string expected = lower(md5);
    const std::string actual = md5_file(file);
    if (actual != expected) {
      if (!why.empty()) why += "; ";
      why += "MD5 is " + actual + ", expected " + expected;
    }
  }
  return why;
}

namespace fs = std::filesystem;

bool file_stamp(const fs::path& file, int64_t* size, int64_t* mtime_ns) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return false;
  *size = static_cast<int64_t>(st.st_size);
  *mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

namespace {

fs::path record_path(const fs::path& file) {
  return file.parent_path() / ("." + file.filename().string() + ".verified");
}

nlohmann::json read_record(const fs::path& file) {
  std::optional<nlohmann::json> j = read_sidecar(record_path(file));
  if (j && j->is_object() && j->contains("size") && j->contains("mtime_ns") && j->contains("sha256")) return *j;
  return nullptr;
}

void write_record(const fs::path& file, const std::string& sha256, const std::string& source) {
  int64_t size = 0, mtime = 0;
  if (!file_stamp(file, &size, &mtime)) throw Error(file.string() + ": cannot stat: " + std::strerror(errno));
  const nlohmann::json j = {{"size", size}, {"mtime_ns", mtime}, {"sha256", sha256}, {"source", source}};
  try {
    write_file_atomic(record_path(file), j.dump() + "\n", "verification record");
  } catch (const Error& e) {
    // A read-only shared copy of the files is fine to use; it only cannot be re-checked later.
    spdlog::warn("{} (it will not be re-checked when read)", e.what());
  }
}

}  // namespace

std::string record_verified(const fs::path& file, const std::string& source) {
  const std::string sha256 = sha256_file(file);
  write_record(file, sha256, source);
  return sha256;
}

std::string recorded_sha256(const fs::path& file) {
  const auto j = read_record(file);
  return j.is_null() ? "" : j["sha256"].get<std::string>();
}

void forget_verified(const fs::path& file) {
  std::error_code ec;
  fs::remove(record_path(file), ec);
}

void check_verified(const fs::path& file) {
  const auto j = read_record(file);
  int64_t size = 0, mtime = 0;
  if (j.is_null() || !file_stamp(file, &size, &mtime)) return;
  if (j["size"] == size && j["mtime_ns"] == mtime) return;
  const std::string expected = j["sha256"].get<std::string>();
  const std::string actual = sha256_file(file);
  const std::string source = j.value("source", std::string());
  if (actual == expected) {
    write_record(file, expected, source);  // touched, not changed: the next check is cheap again
    return;
  }
  throw DataError(file.string() +
                  ": changed on disk since it was verified (size or modification time differ): SHA-256 is " + actual +
                  ", expected " + expected + (source.empty() ? "" : " (downloaded from " + source + ")") +
                  "; delete it and run `expctl run SCENARIO.yaml --only download` to fetch it again");
}

}  // namespace expctl::io
