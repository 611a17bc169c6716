#include "runner/io/download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "runner/core/error.h"
#include "runner/core/progress.h"
#include "runner/io/checksum.h"

namespace expctl::io {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void ensure_curl_initialised() {
  // curl_global_init is not guaranteed thread-safe on every build; do it exactly once.
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string human_bytes(double bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string human_duration(double seconds) {
  if (!(seconds >= 0.0) || seconds > 360000.0) return "?";
  const long t = std::lround(seconds);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}

/// Reports one transfer attempt: the progress bar on a terminal, sparse log lines otherwise (CI logs and
/// redirected output must not fill up with carriage returns).
class Progress {
 public:
  Progress(std::string label, bool enabled, std::uintmax_t offset)
      : label_(std::move(label)),
        enabled_(enabled),
        bar_(enabled),
        offset_(offset),
        start_(Clock::now()),
        last_log_(start_) {}

  void update(curl_off_t total, curl_off_t now, bool final_draw = false) {
    if (!enabled_) return;
    const auto t = Clock::now();
    const double elapsed = std::chrono::duration<double>(t - start_).count();
    const double done = static_cast<double>(offset_) + static_cast<double>(now);
    const double full = total > 0 ? static_cast<double>(offset_) + static_cast<double>(total) : 0.0;
    const double rate = elapsed > 0.0 ? static_cast<double>(now) / elapsed : 0.0;
    const double eta = (full > 0.0 && rate > 0.0) ? (full - done) / rate : -1.0;
    if (bar_.on_terminal()) {
      std::string text = full > 0.0 ? human_bytes(done) + " / " + human_bytes(full) : human_bytes(done);
      text += "  " + human_bytes(rate) + "/s";
      if (eta >= 0.0) text += "  ETA " + human_duration(eta);
      bar_.draw(label_, full > 0.0 ? done / full : -1.0, text, final_draw);
      return;
    }
    const int decile = full > 0.0 ? static_cast<int>(done * 10.0 / full) : -1;
    // Transfers that finish within a couple of seconds need no progress lines at all.
    const bool new_decile = decile > last_decile_ && decile > 0 && decile < 10 && elapsed >= 2.0;
    if (!final_draw && !new_decile && t - last_log_ < std::chrono::seconds(10)) return;
    if (final_draw) return;  // the caller logs the completion line itself
    if (decile > last_decile_) last_decile_ = decile;
    last_log_ = t;
    if (full > 0.0) {
      spdlog::info("{}: {}% ({} of {}), {}/s, ETA {}", label_, static_cast<int>(done * 100.0 / full), human_bytes(done),
                   human_bytes(full), human_bytes(rate), human_duration(eta));
    } else {
      spdlog::info("{}: {}, {}/s", label_, human_bytes(done), human_bytes(rate));
    }
  }

  void finish(curl_off_t total, curl_off_t now) {
    if (!bar_.on_terminal()) return;
    update(total, now, true);
    bar_.finish(/*keep=*/true);
  }

  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  std::string label_;
  bool enabled_;
  ProgressBar bar_;
  std::uintmax_t offset_;
  Clock::time_point start_;
  Clock::time_point last_log_;
  int last_decile_ = 0;
};

/// Where the body goes: appended to the .part file.
struct Sink {
  std::FILE* file = nullptr;
  int error = 0;  // errno of a failed write
};

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const std::size_t n = std::fwrite(data, size, count, sink->file);
  if (n != count) sink->error = errno ? errno : EIO;
  return n * size;  // a short count makes curl stop with CURLE_WRITE_ERROR
}

struct ProgressState {
  Progress* progress;
  curl_off_t total = 0;
  curl_off_t now = 0;
};

int on_progress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* state = static_cast<ProgressState*>(user);
  state->total = dltotal;
  state->now = dlnow;
  state->progress->update(dltotal, dlnow);
  return 0;
}

enum class Outcome {
  kComplete,             // the whole body is in the .part
  kRangeNotSatisfiable,  // HTTP 416 to a resume: the .part may already be whole (or stale)
  kRangeIgnored,         // the server cannot resume: start again from byte 0
  kRetryable,            // network trouble, stall, cut transfer, 5xx/408/429
  kFatal,                // anything retrying cannot fix (404, bad URL, unreadable file://, disk full)
};

struct Attempt {
  Outcome outcome = Outcome::kFatal;
  std::string error;
};

std::string http_status_text(long status) {
  const char* reason = nullptr;
  switch (status) {
    case 400:
      reason = "Bad Request";
      break;
    case 401:
      reason = "Unauthorized";
      break;
    case 403:
      reason = "Forbidden";
      break;
    case 404:
      reason = "Not Found";
      break;
    case 408:
      reason = "Request Timeout";
      break;
    case 410:
      reason = "Gone";
      break;
    case 416:
      reason = "Range Not Satisfiable";
      break;
    case 429:
      reason = "Too Many Requests";
      break;
    case 500:
      reason = "Internal Server Error";
      break;
    case 502:
      reason = "Bad Gateway";
      break;
    case 503:
      reason = "Service Unavailable";
      break;
    case 504:
      reason = "Gateway Timeout";
      break;
    default:
      break;
  }
  std::string text = "HTTP status " + std::to_string(status);
  if (reason != nullptr) text += std::string(" (") + reason + ")";
  return text;
}

bool is_retryable(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
      return true;
    default:
      return false;
  }
}

bool is_http(const std::string& url) {
  std::string scheme = url.substr(0, url.find(':'));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  return scheme == "http" || scheme == "https";
}

// The options of one transfer of o.url: the protocols allowed (a redirect never reaches a local file), failing on
// HTTP errors, the timeouts, the body into `sink`, progress into `progress_state`, resuming at `offset`.
void configure_transfer(CURL* h, const DownloadOptions& o, char* errbuf, Sink& sink, ProgressState& progress_state,
                        std::uintmax_t offset) {
  curl_easy_setopt(h, CURLOPT_URL, o.url.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // signals are process-wide; the runner may be multi-threaded
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");  // a redirect must never reach local files
#else
  curl_easy_setopt(h, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS | CURLPROTO_FILE);
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
  // Without this an error page (404 HTML) would be appended to the .part as if it were data.
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, o.connect_timeout_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, o.stall_min_bytes_per_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, o.stall_timeout_s);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "expctl/0.1 (libcurl)");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &write_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &progress_state);
  if (offset > 0) curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(offset));
}

// What a finished transfer means: complete, worth retrying, a range the server cannot or will not serve, or fatal.
Attempt outcome_of(CURLcode rc, long status, const DownloadOptions& o, const fs::path& part, std::uintmax_t offset,
                   const char* errbuf, const Progress& progress) {
  const std::string where = o.url + " to " + part.string();
  std::string detail = errbuf[0] != '\0' ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
  while (!detail.empty() && (detail.back() == '.' || detail.back() == '\n')) detail.pop_back();
  const std::string http_status = http_status_text(status);
  if (status == 416 && offset > 0 && (rc == CURLE_OK || rc == CURLE_HTTP_RETURNED_ERROR)) {
    return {Outcome::kRangeNotSatisfiable, "cannot download " + where + ": " + http_status + " to a resume request"};
  }
  if (rc == CURLE_OK) {
    if (is_http(o.url) && (status < 200 || status >= 300)) {
      return {Outcome::kFatal, "cannot download " + o.url + ": unexpected " + http_status};
    }
    spdlog::info("downloaded {} ({} in {:.1f} s)", o.url, human_bytes(static_cast<double>(fs::file_size(part))),
                 progress.elapsed_s());
    return {Outcome::kComplete, ""};
  }
  if (rc == CURLE_HTTP_RETURNED_ERROR) {
    const bool retryable = status >= 500 || status == 408 || status == 429;
    return {retryable ? Outcome::kRetryable : Outcome::kFatal, "cannot download " + o.url + ": " + http_status};
  }
  if (rc == CURLE_RANGE_ERROR || rc == CURLE_BAD_DOWNLOAD_RESUME) {
    return {Outcome::kRangeIgnored, "cannot resume " + where + ": " + detail};
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return {Outcome::kRetryable, "cannot download " + o.url + ": " + detail + " (connect timeout " +
                                     std::to_string(o.connect_timeout_s) + " s, stall timeout " +
                                     std::to_string(o.stall_timeout_s) + " s)"};
  }
  return {is_retryable(rc) ? Outcome::kRetryable : Outcome::kFatal, "cannot download " + o.url + ": " + detail};
}

Attempt transfer_once(const DownloadOptions& o, const fs::path& part, std::uintmax_t offset) {
  Sink sink;
  sink.file = std::fopen(part.c_str(), offset > 0 ? "ab" : "wb");
  if (!sink.file) {
    return {Outcome::kFatal,
            "cannot download " + o.url + ": cannot open " + part.string() + " for writing: " + std::strerror(errno)};
  }
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) {
    std::fclose(sink.file);
    return {Outcome::kFatal, "cannot download " + o.url + ": curl_easy_init failed"};
  }
  CURL* h = curl.get();
  char errbuf[CURL_ERROR_SIZE] = {0};
  Progress progress(o.destination.filename().string(), o.progress, offset);
  ProgressState progress_state{&progress};
  configure_transfer(h, o, errbuf, sink, progress_state, offset);

  const CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  progress.finish(progress_state.total, progress_state.now);

  // Flush to the disk before deciding: a full disk shows up here, not in fwrite.
  const bool flushed = std::fflush(sink.file) == 0 && ::fsync(::fileno(sink.file)) == 0;
  const int flush_errno = errno;
  const bool closed = std::fclose(sink.file) == 0;
  if (sink.error != 0 || !flushed || !closed) {
    const int e = sink.error != 0 ? sink.error : flush_errno;
    return {Outcome::kFatal, "cannot download " + o.url + ": cannot write " + part.string() + ": " + std::strerror(e)};
  }
  return outcome_of(rc, status, o, part, offset, errbuf, progress);
}

bool all_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
}

void validate(const DownloadOptions& o) {
  if (o.url.empty()) throw Error("download: empty URL (destination " + o.destination.string() + ")");
  if (o.destination.empty() || !o.destination.has_filename()) {
    throw Error("download " + o.url + ": destination '" + o.destination.string() + "' is not a file name");
  }
  if (o.max_attempts < 1) throw Error("download " + o.url + ": max_attempts must be >= 1");
  if (o.sha256_prefix.size() > 64 || !all_hex(o.sha256_prefix)) {
    throw Error("download " + o.url + ": sha256_prefix '" + o.sha256_prefix + "' is not up to 64 hex digits");
  }
  if (!o.md5.empty() && (o.md5.size() != 32 || !all_hex(o.md5))) {
    throw Error("download " + o.url + ": md5 '" + o.md5 + "' is not 32 hex digits");
  }
}

/// Holds an exclusive flock on a folder while alive. Serialises downloads into one folder across processes
/// (two scenarios, or every rank of a distributed run, fetching the same weights) without leaving a lock file
/// behind; the kernel drops the lock if the process dies.
class FolderLock {
 public:
  explicit FolderLock(const fs::path& folder) {
    fd_ = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0) return;  // no lock is better than no download (e.g. a folder we may write but not open)
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
    spdlog::info("{}: another download into this folder is running; waiting for it", folder.string());
    while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~FolderLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

}  // namespace

namespace {

// A destination already present: its result when it matches the checksum given (or, without one, what was recorded
// when it was fetched); otherwise it is removed (with a warning saying why) and nothing is returned.
std::optional<DownloadResult> already_present(const DownloadOptions& o, bool verify) {
  const fs::path& dest = o.destination;
  std::error_code ec;
  if (!fs::exists(dest, ec)) return std::nullopt;
  if (!fs::is_regular_file(dest)) throw Error(dest.string() + ": exists and is not a regular file");
  std::string why;
  if (!verify) {
    try {
      check_verified(dest);  // no checksum to compare with, but what was recorded when it was fetched
    } catch (const DataError& e) {
      why = e.what();
    }
    if (why.empty()) {
      spdlog::info("{}: already present (no checksum given, not verified)", dest.string());
      return DownloadResult{dest, false, fs::file_size(dest), record_verified(dest, o.url)};
    }
  } else {
    why = checksum_mismatch(dest, o.sha256_prefix, o.md5);
    if (why.empty()) {
      spdlog::info("{}: already present and verified", dest.string());
      return DownloadResult{dest, false, fs::file_size(dest), record_verified(dest, o.url)};
    }
  }
  spdlog::warn("{}: present but does not match ({}); fetching {} again", dest.string(), why, o.url);
  fs::remove(dest);
  forget_verified(dest);
  return std::nullopt;
}

// Transfers into `part` until the server says it is complete: resumes where the file ends, retries what may pass
// (backing off), starts over when the server ignores or cannot serve the range. Throws after o.max_attempts, keeping
// a partial file for the next run. A restart from byte 0 clears `part_from_earlier_run`.
void fetch_with_retries(const DownloadOptions& o, const fs::path& part, bool verify, bool& part_from_earlier_run) {
  std::error_code ec;
  int attempt = 0;
  double delay = o.backoff_initial_s;
  std::string last_error;
  for (;;) {
    if (++attempt > o.max_attempts) {
      std::string msg = last_error + " (gave up after " + std::to_string(o.max_attempts) + " attempts)";
      if (fs::exists(part, ec) && fs::file_size(part, ec) > 0) {
        msg += "; the partial file " + part.string() + " is kept and the next run resumes it";
      } else {
        remove_quietly(part);
      }
      throw Error(msg);
    }
    const std::uintmax_t offset = fs::exists(part, ec) ? fs::file_size(part, ec) : 0;
    if (offset > 0) {
      spdlog::info("resuming {} at byte {} ({})", o.url, offset, part.string());
    } else {
      spdlog::info("downloading {} -> {}", o.url, o.destination.string());
    }
    const Attempt a = transfer_once(o, part, offset);
    switch (a.outcome) {
      case Outcome::kComplete:
        return;
      case Outcome::kRangeNotSatisfiable:
        if (verify) {
          spdlog::info("{}: the server has nothing past byte {}; checking whether it is already whole", part.string(),
                       offset);
          return;  // most likely the .part is already whole; verification decides
        }
        spdlog::warn("{}; cannot tell whether {} is whole, fetching from the start", a.error, part.string());
        remove_quietly(part);
        part_from_earlier_run = false;
        last_error = a.error;
        break;
      case Outcome::kRangeIgnored:
        spdlog::warn("{}; fetching from the start", a.error);
        remove_quietly(part);
        part_from_earlier_run = false;
        last_error = a.error;
        break;
      case Outcome::kFatal:
        remove_quietly(part);
        throw Error(a.error + " (destination " + o.destination.string() + ")");
      case Outcome::kRetryable:
        last_error = a.error;
        if (attempt < o.max_attempts) {
          spdlog::warn("{} (attempt {}/{}); retrying in {:.3g} s", a.error, attempt, o.max_attempts, delay);
          std::this_thread::sleep_for(std::chrono::duration<double>(delay));
          delay = std::min(delay * 2.0, o.backoff_max_s);
        }
        break;
    }
  }
}

}  // namespace

DownloadResult download(const DownloadOptions& o) {
  validate(o);
  ensure_curl_initialised();
  const fs::path& dest = o.destination;
  const bool verify = !o.sha256_prefix.empty() || !o.md5.empty();

  std::error_code ec;
  const fs::path folder = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  fs::create_directories(folder, ec);
  if (ec) throw Error("download " + o.url + ": cannot create folder " + folder.string() + ": " + ec.message());
  const FolderLock lock(folder);
  if (auto present = already_present(o, verify)) return *present;

  fs::path part = dest;
  part += ".part";
  // A .part from an earlier run may belong to another version of the file; if it fails verification we start
  // over once instead of failing (our own resumes within this call come from the same server response).
  bool part_from_earlier_run = fs::exists(part, ec) && fs::file_size(part, ec) > 0;
  for (bool restarted = false;;) {
    fetch_with_retries(o, part, verify, part_from_earlier_run);
    const std::string why = verify ? checksum_mismatch(part, o.sha256_prefix, o.md5) : "";
    if (why.empty()) break;
    remove_quietly(part);
    if (part_from_earlier_run && !restarted) {
      spdlog::warn(
          "{}: the partial download left by an earlier run does not match ({}); fetching {} again from the start",
          part.string(), why, o.url);
      restarted = true;
      part_from_earlier_run = false;
      continue;
    }
    throw Error("download " + o.url + " -> " + dest.string() + ": checksum mismatch: " + why +
                "; the downloaded file was deleted");
  }

  fs::rename(part, dest, ec);
  if (ec) {
    remove_quietly(part);
    throw Error("download " + o.url + ": cannot rename " + part.string() + " to " + dest.string() + ": " +
                ec.message());
  }
  return {dest, true, fs::file_size(dest), record_verified(dest, o.url)};
}

std::string url_basename(const std::string& url) {
  std::string u = url.substr(0, url.find_first_of("?#"));
  while (!u.empty() && u.back() == '/') u.pop_back();
  return u.substr(u.find_last_of('/') + 1);
}

}  // namespace expctl::io
