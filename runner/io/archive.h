// Safe, all-or-nothing archive extraction (libarchive): tar, tar.gz/bz2/xz, zip, detected from the content.
#pragma once
#include <filesystem>

namespace expctl::io {

/// Name of the file that extract_archive() writes into a folder it completed; its presence means "done".
inline constexpr const char* kExtractMarker = ".expctl-extracted";

/// Unpacks `archive` so that its entries appear under `dest_dir` (an entry `a/b.bin` becomes `dest_dir/a/b.bin`).
///
/// - Safe: rejects, before anything reaches `dest_dir`, entries with an absolute path or a `..` component,
///   symlinks/hardlinks whose target lies outside the folder, and device/fifo/socket entries; the error
///   (expctl::Error) names the archive and the offending entry.
/// - All or nothing: unpacks into a hidden temporary sibling of `dest_dir`, writes kExtractMarker there and renames
///   it into place at the end; on any failure the temporary is removed and `dest_dir` is untouched.
/// - Idempotent: returns false without reading the archive when `dest_dir` already holds kExtractMarker.
///   An existing empty `dest_dir` is replaced; an existing non-empty one without the marker is an error (it is not
///   ours to overwrite).
/// Returns true when it extracted.
///
///     expctl::io::extract_archive("downloaded_datasets/cifar-10-binary.tar.gz", "downloaded_datasets/cifar10");
///     // -> downloaded_datasets/cifar10/cifar-10-batches-bin/data_batch_1.bin, ...
bool extract_archive(const std::filesystem::path& archive, const std::filesystem::path& dest_dir);

}  // namespace expctl::io
