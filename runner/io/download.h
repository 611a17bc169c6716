// Verified, resumable downloads (libcurl): model weights and data set archives.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace expctl::io {

/// What to fetch, where to, and how to check it. Plain struct, defaults at the declaration.
struct DownloadOptions {
  /// http://, https:// or file:// URL.
  std::string url;
  /// Final file name. The transfer goes to `<destination>.part` and is renamed only once verified.
  std::filesystem::path destination;
  /// Expected leading hex digits of the file's SHA-256 (e.g. from sha256_prefix_from_name); checked when non-empty.
  std::string sha256_prefix;
  /// Expected MD5 (32 hex digits); checked when non-empty.
  std::string md5;
  /// Transfers tried in all, the first included (>= 1). HTTP 4xx other than 408/429 is never retried.
  int max_attempts = 5;
  /// Wait before the 2nd attempt; doubled after each failure, capped at `backoff_max_s`.
  double backoff_initial_s = 1.0;
  double backoff_max_s = 30.0;
  /// Give up connecting after this long.
  long connect_timeout_s = 30;
  /// Abort a transfer (then retry, resuming) that stays under `stall_min_bytes_per_s` for this many seconds.
  /// libcurl averages the rate over the last ~5 s, so a stall after a fast burst is noticed a few seconds later.
  long stall_timeout_s = 60;
  long stall_min_bytes_per_s = 1024;
  /// Progress bar on a terminal (stderr is a tty), otherwise spdlog info lines every 10% or 10 s.
  bool progress = true;
};

/// The outcome of download().
struct DownloadResult {
  /// The verified file (== options.destination).
  std::filesystem::path path;
  /// False when a verified file was already present and nothing was transferred.
  bool fetched = false;
  /// Size of the file in bytes.
  std::uintmax_t bytes = 0;
  /// Its full SHA-256, recorded beside it (record_verified) so that later readers can tell when it changed.
  std::string sha256;
};

/// Fetches `options.url` to `options.destination` unless a file that passes the checks is already there
/// (a present file that fails them is fetched again, with a warning; with no checksum given, presence is enough).
///
/// - Resumes: bytes already in `<destination>.part` are kept and the rest asked for with an HTTP Range request;
///   a `.part` left by an earlier run that turns out not to match is discarded and the file fetched once more
///   from the start.
/// - Retries connection failures, stalls, cut transfers, HTTP 5xx/408/429 with exponential back-off; other
///   HTTP 4xx fail at once. When retries run out the `.part` is kept so that the next call resumes.
/// - Throws expctl::Error naming the URL and file: HTTP status (e.g. 404; nothing left behind), checksum mismatch
///   (expected and actual digest; the `.part` is deleted), or the last transfer error.
/// - The verified file's size, modification time and SHA-256 are recorded beside it (record_verified), so that a
///   reader can check it cheaply later (check_verified); with no checksum given, a present file is checked
///   against that record instead (fetched again when it changed).
/// - Parent folders of the destination are created. Downloads into the same folder take turns (an flock on the
///   folder), so concurrent processes asking for the same file fetch it once.
///
///     expctl::io::DownloadOptions o;
///     o.url = "https://download.pytorch.org/models/resnet18-f37072fd.pth";
///     o.destination = "downloaded_models/resnet18-f37072fd.pth";
///     o.sha256_prefix = expctl::io::sha256_prefix_from_name(o.url);  // "f37072fd"
///     auto r = expctl::io::download(o);  // r.fetched == false on the second run
DownloadResult download(const DownloadOptions& options);

/// A file a model or data set needs: where it comes from, where it goes, how it is checked, and (for an
/// archive) the folder it unpacks into. Models and data sets list these; the download stage fetches them.
struct RemoteFile {
  std::string url;
  std::filesystem::path destination;
  std::string sha256_prefix;         ///< checked when non-empty
  std::string md5;                   ///< checked when non-empty
  std::filesystem::path extract_to;  ///< unpack the archive here when non-empty
  std::string what;                  ///< "pretrained weights", "CIFAR-10 binary tarball", ...
  std::string config_key;            ///< the YAML key the URL comes from ("model.weights_url"), for hints
  /// For an archive: checks what it unpacked (the folder given) before the extraction is marked done, and throws
  /// expctl::DataError naming the file inside and what is wrong (e.g. the data set reader's own checks).
  std::function<void(const std::filesystem::path&)> check_content = {};
};

/// The last path component of a URL ("https://h/a/resnet18-f37072fd.pth?x" -> "resnet18-f37072fd.pth").
std::string url_basename(const std::string& url);

}  // namespace expctl::io
