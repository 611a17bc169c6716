// Checking a zip archive (torch files, TorchScript files) before a reader trusts it: declared sizes bounded by
// what the file can hold, and every record's CRC-32. LibTorch 1.13's zip reader (miniz, built with its CRC checks
// disabled) checks neither: it allocates whatever size a record declares and returns flipped bits as data.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace expctl::io {

/// The most a deflate stream can expand: 258 bytes from one 2-bit length/distance pair, so just under 1032
/// output bytes per input byte (zlib's technical notes). A deflated record declaring more is refused.
inline constexpr uint64_t kDeflateMaxRatio = 1032;

/// One record of a zip archive, as its central directory describes it.
struct ZipRecord {
  std::string name;              ///< the record's name inside the archive ("archive/data/0")
  uint16_t method = 0;           ///< 0 stored, 8 deflated
  uint32_t crc32 = 0;            ///< the CRC-32 the archive declares
  uint64_t compressed_size = 0;  ///< bytes of record data in the file
  uint64_t size = 0;             ///< bytes once uncompressed (what a reader allocates)
  uint64_t data_offset = 0;      ///< where the record data starts in the file
};

/// Checks the zip archive `bytes` (the whole file `file`, named in errors) and returns its records:
/// - the central directory (zip64 too) lies inside the file, and so does every record's local header and data;
/// - a stored record's size equals its compressed size; a deflated one declares at most compressed size ×
///   kDeflateMaxRatio (+ 1032), and all records together at most the file's size × kDeflateMaxRatio;
///   so no reader allocates from a declared size beyond the file's own limits;
/// - only stored and deflated records, none encrypted;
/// - every record's CRC-32 matches its data (a deflated record is inflated in 64 KiB pieces, never whole, and must
///   inflate to exactly its declared size).
/// Throws expctl::DataError "<file>: not a zip archive, or a truncated or damaged one: ..." or
/// "<file>: record '<name>': <what is wrong>".
///
///     expctl::io::check_zip(bytes, "ck.pt");
///     // ck.pt: record 'archive/data/3': CRC-32 is 1f2e3d4c, the archive says 0a1b2c3d: the file is damaged
std::vector<ZipRecord> check_zip(std::string_view bytes, const std::string& file);

}  // namespace expctl::io
