// Safe, all-or-nothing archive extraction (libarchive): tar, tar.gz/bz2/xz, zip, detected from the content.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace expctl::io {

/// Name of the file that extract_archive() writes into a folder it completed; its presence means "done".
inline constexpr const char* kExtractMarker = ".expctl-extracted";

/// What extract_archive() checks besides the safety of the entries. Plain struct, defaults at the declaration.
struct ExtractOptions {
  /// What the archive is (its SHA-256, or its URL and checksum), stored in the marker: a folder extracted from
  /// another source is extracted again. Empty: any completed extraction counts as done.
  std::string source;
  /// Checks the unpacked folder before the extraction is marked done; throws (expctl::DataError naming the file
  /// inside and what is wrong) to refuse it. The error text shows paths relative to the archive.
  std::function<void(const std::filesystem::path&)> check_content;
  /// When `dest_dir` already holds an extraction of the same source: check its files against the marker
  /// (check_extracted) and extract again when one changed or went missing (`expctl run --force`), instead of
  /// returning at once.
  bool redo_if_changed = false;
};

/// Unpacks `archive` so that its entries appear under `dest_dir` (an entry `a/b.bin` becomes `dest_dir/a/b.bin`).
///
/// - Safe: rejects, before anything reaches `dest_dir`, entries with an absolute path or a `..` component,
///   symlinks/hardlinks whose target lies outside the folder, and device/fifo/socket entries; the error
///   (expctl::DataError: the archive is at fault, its caller deletes it) names the archive and the offending
///   entry. Failures of the machine (a full disk) stay expctl::Error.
/// - Checked: `options.check_content` runs on the unpacked files before they are marked done; a refusal is an
///   expctl::DataError "<archive>: unpacked content is not valid: <file inside>: <what is wrong>; nothing was
///   extracted".
/// - All or nothing: unpacks into a hidden temporary sibling of `dest_dir` (temp_sibling), writes kExtractMarker
///   there (the source, and the size, modification time and SHA-256 of every file) and renames it into place at
///   the end; on any failure the temporary is removed and `dest_dir` is untouched.
/// - Idempotent: returns false without reading the archive when `dest_dir` holds a marker of the same source
///   (and, with `options.redo_if_changed`, its files are unchanged).
///   A marker of another source (or of an unknown one) is replaced by a new extraction. An existing empty
///   `dest_dir` is replaced; an existing non-empty one without the marker is an error (it is not ours).
/// Returns true when it extracted.
///
///     expctl::io::extract_archive("downloaded_datasets/cifar-10-binary.tar.gz", "downloaded_datasets/cifar10");
///     // -> downloaded_datasets/cifar10/cifar-10-batches-bin/data_batch_1.bin, ...
bool extract_archive(const std::filesystem::path& archive, const std::filesystem::path& dest_dir,
                     const ExtractOptions& options = {});

/// Checks the files of a completed extraction against its marker before they are read again: one stat each
/// while size and modification time are those recorded, a full SHA-256 of a file whose are not. Does nothing
/// for a folder without a marker. Throws expctl::DataError naming the file, what changed (missing, or SHA-256
/// actual vs expected) and what to do (remove `dest_dir` and run `expctl run SCENARIO.yaml --only download`).
void check_extracted(const std::filesystem::path& dest_dir);

}  // namespace expctl::io
