#include "runner/io/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cctype>
#include <deque>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/core/error.h"
#include "runner/core/files.h"
#include "runner/core/json_file.h"
#include "runner/io/checksum.h"

namespace expctl::io {
namespace {

namespace fs = std::filesystem;

/// Splits on '/' and also '\\' (a zip made on Windows may use it, and "..\\x" must not slip through),
/// dropping empty and "." components.
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : path) {
    if (c == '/' || c == '\\') {
      if (!current.empty() && current != ".") parts.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty() && current != ".") parts.push_back(current);
  return parts;
}

bool is_absolute_name(const std::string& path) {
  if (path.empty()) return false;
  if (path[0] == '/' || path[0] == '\\') return true;
  return path.size() >= 2 && std::isalpha(static_cast<unsigned char>(path[0])) && path[1] == ':';  // C:\...
}

/// "" when `path` is a safe relative archive path (its components go to `parts`), else the reason.
std::string check_relative(const std::string& path, std::vector<std::string>* parts) {
  if (is_absolute_name(path)) return "absolute path";
  *parts = split_path(path);
  for (const auto& p : *parts) {
    if (p == "..") return "path has a '..' component";
  }
  return "";
}

/// Lexical check of a symlink target, relative to the folder of the link itself.
std::string check_symlink_target(const std::vector<std::string>& link_parts, const std::string& target) {
  if (target.empty()) return "symlink with an empty target";
  if (is_absolute_name(target)) return "symlink to the absolute path '" + target + "'";
  std::vector<std::string> stack(link_parts.begin(), link_parts.end() - 1);
  for (const auto& p : split_path(target)) {
    if (p != "..") {
      stack.push_back(p);
    } else if (stack.empty()) {
      return "symlink to '" + target + "', outside the extraction folder";
    } else {
      stack.pop_back();
    }
  }
  return "";
}

/// Whether the path `parts` (relative to `root`) stays inside `root` when the symlinks already on disk are
/// followed the way the kernel would. The lexical checks cannot see chains such as `a -> .` then `b -> a/..`.
bool resolves_inside(const fs::path& root, const std::vector<std::string>& parts) {
  std::deque<std::string> todo(parts.begin(), parts.end());
  std::vector<std::string> current;
  int links_followed = 0;
  while (!todo.empty()) {
    const std::string part = todo.front();
    todo.pop_front();
    if (part == "..") {
      if (current.empty()) return false;
      current.pop_back();
      continue;
    }
    current.push_back(part);
    fs::path p = root;
    for (const auto& c : current) p /= c;
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(p, ec))) continue;
    if (++links_followed > 40) return false;  // a loop; the kernel gives up at 40 too
    const std::string target = fs::read_symlink(p, ec).string();
    if (ec || is_absolute_name(target)) return false;
    current.pop_back();
    const auto target_parts = split_path(target);
    todo.insert(todo.begin(), target_parts.begin(), target_parts.end());
  }
  return true;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : "/") + p;
  return s;
}

struct ReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};

/// Removes the temporary folder unless the extraction was committed, whatever way the function is left.
struct TempDir {
  fs::path path;
  bool keep = false;
  ~TempDir() {
    if (keep || path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The marker as JSON, or null when there is none or it is not ours (earlier versions wrote "key: value" lines).
nlohmann::json read_marker(const fs::path& dir) {
  std::optional<nlohmann::json> j = read_sidecar(dir / kExtractMarker);
  if (j && j->is_object() && j->contains("files") && (*j)["files"].is_object()) return *j;
  return nullptr;
}

bool has_marker(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kExtractMarker, ec);
}

// Unpacks every entry of `archive` under `root` (an existing, canonical folder). Returns the entry count.
std::size_t unpack(const fs::path& archive, const fs::path& root) {
  const std::string where = archive.string();
  std::unique_ptr<struct archive, ReadFree> in(archive_read_new());
  archive_read_support_filter_all(in.get());
  archive_read_support_format_all(in.get());
  if (archive_read_open_filename(in.get(), archive.c_str(), 1 << 16) != ARCHIVE_OK) {
    throw Error(where + ": cannot open as an archive: " + archive_error_string(in.get()));
  }
  std::unique_ptr<struct archive, WriteFree> out(archive_write_disk_new());
  // Defence in depth behind our own checks. Not NOABSOLUTEPATHS: we hand libarchive absolute paths under root.
  // No ARCHIVE_EXTRACT_PERM / OWNER: setuid bits and foreign owners have no business in a data set.
  archive_write_disk_set_options(
      out.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT);

  std::size_t count = 0;
  struct archive_entry* entry = nullptr;
  for (;;) {
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) throw Error(where + ": cannot read the archive: " + archive_error_string(in.get()));
    if (r == ARCHIVE_WARN) spdlog::warn("{}: {}", where, archive_error_string(in.get()));

    const char* raw_name = archive_entry_pathname(entry);
    const std::string name = raw_name ? raw_name : "";
    // A DataError: the archive itself is at fault (not the disk or the machine), so the caller deletes it.
    const auto refuse = [&](const std::string& why) {
      return DataError(where + ": refusing entry '" + name + "': " + why + "; nothing was extracted");
    };
    if (name.empty()) throw refuse("empty or unreadable name");
    std::vector<std::string> parts;
    if (auto why = check_relative(name, &parts); !why.empty()) throw refuse(why);
    if (parts.empty()) continue;  // "./" itself

    const char* hardlink = archive_entry_hardlink(entry);
    const auto type = archive_entry_filetype(entry);
    if (hardlink != nullptr) {
      std::vector<std::string> target;
      if (auto why = check_relative(hardlink, &target); !why.empty() || target.empty()) {
        throw refuse("hardlink to '" + std::string(hardlink) + "': " + (why.empty() ? "empty target" : why));
      }
      if (!resolves_inside(root, target)) {
        throw refuse("hardlink to '" + std::string(hardlink) + "' leads outside the extraction folder");
      }
      archive_entry_set_hardlink(entry, (root / join(target)).c_str());
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      if (auto why = check_symlink_target(parts, target ? target : ""); !why.empty()) throw refuse(why);
    } else if (type != AE_IFREG && type != AE_IFDIR) {
      throw refuse("not a file, folder or link (device, fifo or socket)");
    }
    if (!resolves_inside(root, std::vector<std::string>(parts.begin(), parts.end() - 1))) {
      throw refuse("its folder leads outside the extraction folder through a symlink");
    }
    archive_entry_set_pathname(entry, (root / join(parts)).c_str());

    r = archive_write_header(out.get(), entry);
    if (r < ARCHIVE_WARN) throw Error(where + ": cannot extract '" + name + "': " + archive_error_string(out.get()));
    if (archive_entry_size(entry) > 0) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while ((r = archive_read_data_block(in.get(), &block, &size, &offset)) == ARCHIVE_OK) {
        if (archive_write_data_block(out.get(), block, size, offset) < ARCHIVE_WARN) {
          throw Error(where + ": cannot write '" + name + "': " + archive_error_string(out.get()));
        }
      }
      if (r != ARCHIVE_EOF) {
        throw Error(where + ": cannot read '" + name + "' (truncated or corrupt?): " + archive_error_string(in.get()));
      }
    }
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN) {
      throw Error(where + ": cannot finish '" + name + "': " + archive_error_string(out.get()));
    }
    ++count;
  }
  if (archive_write_close(out.get()) < ARCHIVE_WARN) {
    throw Error(where + ": cannot finish extraction: " + archive_error_string(out.get()));
  }
  return count;
}

// After unpacking: every symlink must resolve inside root even through other symlinks.
void check_symlinks_stay_inside(const fs::path& archive, const fs::path& root) {
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_symlink()) continue;
    const std::string rel = e.path().lexically_relative(root).generic_string();
    if (!resolves_inside(root, split_path(rel))) {
      throw DataError(archive.string() + ": refusing entry '" + rel + "': symlink to '" +
                      fs::read_symlink(e.path()).string() +
                      "' resolves outside the extraction folder; nothing was extracted");
    }
  }
}

// Runs the caller's content check on the unpacked tree; its paths are shown relative to the archive, since the
// temporary folder is gone by the time anyone reads the message.
void check_content(const fs::path& archive, const fs::path& root, const ExtractOptions& o) {
  if (!o.check_content) return;
  try {
    o.check_content(root);
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& prefix : {root.string() + "/", root.string()}) {
      for (auto at = msg.find(prefix); at != std::string::npos; at = msg.find(prefix, at)) msg.erase(at, prefix.size());
    }
    throw DataError(archive.string() + ": unpacked content is not valid: " + msg + "; nothing was extracted");
  }
}

// The marker binds the folder to its source and records every file, so that readers can tell later when one
// of them changed (check_extracted).
void write_marker(const fs::path& archive, const fs::path& root, std::size_t entries, const ExtractOptions& o) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    int64_t size = 0, mtime = 0;
    if (!file_stamp(e.path(), &size, &mtime)) throw Error(e.path().string() + ": cannot stat");
    files[e.path().lexically_relative(root).generic_string()] = {
        {"size", size}, {"mtime_ns", mtime}, {"sha256", sha256_file(e.path())}};
  }
  const nlohmann::json marker = {
      {"archive", fs::absolute(archive).string()}, {"source", o.source}, {"entries", entries}, {"files", files}};
  std::ofstream out(root / kExtractMarker);
  out << marker.dump(1) << "\n";
  if (!out.flush()) throw Error(archive.string() + ": cannot write " + (root / kExtractMarker).string());
}

// Moves the finished temporary folder to `dest`, replacing an earlier extraction when `replace`.
bool commit(const fs::path& archive, TempDir& temp, const fs::path& dest, bool replace) {
  std::error_code ec;
  TempDir old;
  if (replace) {
    old.path = temp_sibling(dest, "replaced-", true);
    fs::rename(dest, old.path, ec);
    if (ec)
      throw Error(archive.string() + ": cannot move the earlier extraction " + dest.string() +
                  " aside: " + ec.message());
  } else if (fs::exists(dest, ec)) {
    fs::remove(dest, ec);  // the empty folder checked by the caller
  }
  fs::rename(temp.path, dest, ec);
  if (ec && replace) {
    std::error_code back;
    fs::rename(old.path, dest, back);  // keep the earlier extraction rather than nothing
    old.keep = !back;
  }
  if (ec) {
    if (!replace && has_marker(dest)) {  // another process finished the same extraction first
      spdlog::info("{}: extracted concurrently by another process", dest.string());
      return false;
    }
    throw Error(archive.string() + ": cannot move the extracted files to " + dest.string() + ": " + ec.message());
  }
  temp.keep = true;
  return true;
}

}  // namespace

bool extract_archive(const fs::path& archive, const fs::path& dest_dir, const ExtractOptions& o) {
  if (dest_dir.empty()) throw Error(archive.string() + ": empty destination folder");
  // "out/" has an empty filename; work with "out" so the temporary sibling lands next to it, not inside it.
  const fs::path dest = dest_dir.has_filename() ? dest_dir : dest_dir.parent_path();
  std::error_code ec;
  const bool replace = has_marker(dest);
  if (replace) {
    const nlohmann::json marker = read_marker(dest);
    const bool same_source = o.source.empty() || (!marker.is_null() && marker.value("source", "") == o.source);
    std::string changed;
    if (same_source && o.redo_if_changed) {
      try {
        check_extracted(dest);
      } catch (const DataError& e) {
        changed = e.what();
      }
    }
    if (same_source && changed.empty()) {
      spdlog::info("{}: already extracted to {}", archive.string(), dest.string());
      return false;
    }
    if (!changed.empty())
      spdlog::info("{}: extracted files changed ({}); extracting {} again", dest.string(),
                   changed.substr(0, changed.find(';')), archive.string());
    else
      spdlog::info("{}: holds an extraction of another source; extracting {} again", dest.string(), archive.string());
  } else if (fs::exists(dest, ec) && !(fs::is_directory(dest, ec) && fs::is_empty(dest, ec))) {
    throw Error(dest.string() + ": exists but holds no completed extraction of " + archive.string() + " (no " +
                kExtractMarker + "); remove it and run again");
  }
  if (!fs::is_regular_file(archive, ec)) throw Error(archive.string() + ": archive not found");

  const fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) throw Error(archive.string() + ": cannot create folder " + parent.string() + ": " + ec.message());
  TempDir temp{temp_sibling(parent / dest.filename(), "extracting-", true)};
  if (!fs::create_directory(temp.path, ec) || ec) {
    throw Error(archive.string() + ": cannot create temporary folder " + temp.path.string() + ": " + ec.message());
  }
  // Canonical, so that SECURE_SYMLINKS does not trip on a symlink higher up in the user's own path.
  const fs::path root = fs::canonical(temp.path);

  spdlog::info("extracting {} -> {}", archive.string(), dest.string());
  const std::size_t count = unpack(archive, root);
  check_symlinks_stay_inside(archive, root);
  check_content(archive, root, o);
  write_marker(archive, root, count, o);
  if (!commit(archive, temp, dest, replace)) return false;
  spdlog::info("extracted {} entries from {} to {}", count, archive.string(), dest.string());
  return true;
}

void check_extracted(const fs::path& dest_dir) {
  const nlohmann::json marker = read_marker(dest_dir);
  if (marker.is_null()) return;
  const std::string archive = marker.value("archive", std::string("its archive"));
  const std::string redo =
      "; remove " + dest_dir.string() + " and run `expctl run SCENARIO.yaml --only download` to unpack it again";
  for (const auto& [rel, rec] : marker["files"].items()) {
    const fs::path file = dest_dir / rel;
    int64_t size = 0, mtime = 0;
    if (!file_stamp(file, &size, &mtime))
      throw DataError(file.string() + ": missing (it was extracted from " + archive + ")" + redo);
    if (rec.value("size", int64_t{-1}) == size && rec.value("mtime_ns", int64_t{-1}) == mtime) continue;
    const std::string expected = rec.value("sha256", std::string());
    const std::string actual = sha256_file(file);
    if (actual != expected)
      throw DataError(file.string() + ": changed on disk since it was extracted from " + archive + ": SHA-256 is " +
                      actual + ", expected " + expected + redo);
  }
}

}  // namespace expctl::io
