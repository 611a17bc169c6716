#include "runner/io/zip_check.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>

#include "runner/core/error.h"

namespace expctl::io {
namespace {

uint64_t le(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kCentralSize = 46, kLocalSize = 30;

// Reads fixed-width little-endian fields of the archive, failing (never reading past the end) when a field
// would lie outside it.
class Cursor {
 public:
  Cursor(std::string_view bytes, const std::string& file) : bytes_(bytes), file_(file) {}
  uint64_t at(uint64_t pos, int n, const char* what) const {
    if (pos > bytes_.size() || uint64_t(n) > bytes_.size() - pos) fail(std::string(what) + " lies past the end");
    return le(reinterpret_cast<const unsigned char*>(bytes_.data()) + pos, n);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw DataError(file_ + ": not a zip archive, or a truncated or damaged one: " + what);
  }
  std::string_view bytes_;
  const std::string& file_;
};

struct Directory {
  uint64_t entries = 0, offset = 0, size = 0;
};

Directory find_directory(const Cursor& c) {
  const uint64_t n = c.bytes_.size();
  if (n < kEndSize) c.fail("shorter than a zip's end record");
  // The end record is the last 22 bytes plus a comment of up to 65535; search backwards for its signature.
  const uint64_t lowest = n - kEndSize > 65535 ? n - kEndSize - 65535 : 0;
  uint64_t end = n;
  for (uint64_t pos = n - kEndSize + 1; pos-- > lowest;) {
    if (c.at(pos, 4, "end record") == kEndSig) {
      end = pos;
      break;
    }
  }
  if (end == n) c.fail("no end-of-central-directory record");
  Directory d{c.at(end + 10, 2, "end record"), c.at(end + 16, 4, "end record"), c.at(end + 12, 4, "end record")};
  if (end >= 20 && c.at(end - 20, 4, "zip64 locator") == kZip64LocatorSig) {
    const uint64_t z = c.at(end - 20 + 8, 8, "zip64 locator");
    if (c.at(z, 4, "zip64 end record") != kZip64EndSig) c.fail("the zip64 locator points at no zip64 end record");
    d.entries = c.at(z + 32, 8, "zip64 end record");
    d.size = c.at(z + 40, 8, "zip64 end record");
    d.offset = c.at(z + 48, 8, "zip64 end record");
  }
  if (d.offset > n || d.size > n - d.offset) c.fail("the central directory lies past the end of the file");
  if (d.entries > d.size / kCentralSize) c.fail("more entries declared than the central directory holds");
  return d;
}

// The zip64 extra field (id 1) carries, in this order, each of size, compressed size and offset whose 32-bit
// field is 0xFFFFFFFF.
void read_zip64_extra(const Cursor& c, uint64_t pos, uint64_t len, ZipRecord& r, uint64_t& local) {
  const uint64_t end = pos + len;
  while (pos + 4 <= end) {
    const uint64_t id = c.at(pos, 2, "extra field"), size = c.at(pos + 2, 2, "extra field");
    uint64_t p = pos + 4;
    if (id == 1) {
      auto take = [&](uint64_t& v) {
        if (v != 0xFFFFFFFFu) return;
        if (p + 8 > pos + 4 + size) c.fail("record '" + r.name + "': zip64 field too short");
        v = c.at(p, 8, "zip64 field");
        p += 8;
      };
      take(r.size);
      take(r.compressed_size);
      take(local);
    }
    pos += 4 + size;
  }
}

// Inflates a raw deflate stream in pieces, never holding more than one piece; returns the CRC-32 of the output,
// or throws when the output exceeds `size` or ends short of it.
uint32_t inflate_crc(std::string_view data, const ZipRecord& r, const std::string& file) {
  const std::string where = file + ": record '" + r.name + "': ";
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw Error(where + "cannot start inflating (out of memory?)");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  unsigned char out[1 << 16];
  uLong crc = crc32_z(0, Z_NULL, 0);
  uint64_t total = 0;
  const unsigned char* in = reinterpret_cast<const unsigned char*>(data.data());
  uint64_t left = data.size();
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (z.avail_in == 0) {
      if (left == 0) throw DataError(where + "deflate data ends early (truncated or damaged file)");
      const uInt n = left > (1u << 30) ? (1u << 30) : uInt(left);
      z.next_in = const_cast<unsigned char*>(in);
      z.avail_in = n;
      in += n;
      left -= n;
    }
    z.next_out = out;
    z.avail_out = sizeof out;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      throw DataError(where + "damaged deflate data: " + (z.msg ? z.msg : "inflate failed"));
    const size_t got = sizeof out - z.avail_out;
    if (rc == Z_BUF_ERROR && got == 0 && z.avail_in != 0)
      throw DataError(where + "damaged deflate data: inflate makes no progress");
    total += got;
    if (total > r.size)
      throw DataError(where + "inflates to more than the " + std::to_string(r.size) + " bytes it declares");
    crc = crc32_z(crc, out, got);
  }
  if (total != r.size)
    throw DataError(where + "inflates to " + std::to_string(total) + " bytes, but declares " + std::to_string(r.size));
  return uint32_t(crc);
}

}  // namespace

std::vector<ZipRecord> check_zip(std::string_view bytes, const std::string& file) {
  const Cursor c(bytes, file);
  const Directory d = find_directory(c);
  const uint64_t n = bytes.size();
  std::vector<ZipRecord> records;
  uint64_t pos = d.offset, total = 0;
  for (uint64_t i = 0; i < d.entries; ++i) {
    if (c.at(pos, 4, "central directory entry") != kCentralSig) c.fail("damaged central directory");
    ZipRecord r;
    const uint64_t flags = c.at(pos + 8, 2, "central directory entry");
    r.method = uint16_t(c.at(pos + 10, 2, "central directory entry"));
    r.crc32 = uint32_t(c.at(pos + 16, 4, "central directory entry"));
    r.compressed_size = c.at(pos + 20, 4, "central directory entry");
    r.size = c.at(pos + 24, 4, "central directory entry");
    const uint64_t name_len = c.at(pos + 28, 2, "central directory entry");
    const uint64_t extra_len = c.at(pos + 30, 2, "central directory entry");
    const uint64_t comment_len = c.at(pos + 32, 2, "central directory entry");
    uint64_t local = c.at(pos + 42, 4, "central directory entry");
    if (pos + kCentralSize + name_len > n) c.fail("a record name lies past the end");
    r.name.assign(bytes.substr(pos + kCentralSize, name_len));
    read_zip64_extra(c, pos + kCentralSize + name_len, extra_len, r, local);
    pos += kCentralSize + name_len + extra_len + comment_len;

    const std::string where = file + ": record '" + r.name + "': ";
    if (flags & 1) throw DataError(where + "is encrypted");
    if (r.method != 0 && r.method != 8)
      throw DataError(where + "compression method " + std::to_string(r.method) + " (only stored and deflated)");
    // Limits from the file itself, checked before anything is allocated from a declared size.
    if (r.compressed_size > n)
      throw DataError(where + "declares " + std::to_string(r.compressed_size) + " compressed bytes in a file of " +
                      std::to_string(n));
    if (r.method == 0 && r.size != r.compressed_size)
      throw DataError(where + "is stored (not compressed) but declares " + std::to_string(r.size) + " bytes for " +
                      std::to_string(r.compressed_size) + " bytes of data");
    if (r.method == 8 && r.size > (r.compressed_size + 1) * kDeflateMaxRatio)
      throw DataError(where + "declares " + std::to_string(r.size) + " bytes from " +
                      std::to_string(r.compressed_size) + " deflated bytes, more than deflate's largest ratio (" +
                      std::to_string(kDeflateMaxRatio) + ":1) allows: a damaged or hostile file");
    total += r.size;
    if (total > n * kDeflateMaxRatio)
      throw DataError(where + "the records declare more than " + std::to_string(kDeflateMaxRatio) +
                      " times the file's size in all: a damaged or hostile file");
    if (c.at(local, 4, "local header") != kLocalSig) throw DataError(where + "no local header where it should be");
    r.data_offset = local + kLocalSize + c.at(local + 26, 2, "local header") + c.at(local + 28, 2, "local header");
    if (r.data_offset > n || r.compressed_size > n - r.data_offset)
      throw DataError(where + "its data lies past the end of the file (truncated?)");

    const std::string_view data = bytes.substr(r.data_offset, r.compressed_size);
    uint32_t crc = 0;
    if (r.method == 0) {
      uLong z = crc32_z(0, Z_NULL, 0);
      crc = uint32_t(crc32_z(z, reinterpret_cast<const unsigned char*>(data.data()), data.size()));
    } else {
      crc = inflate_crc(data, r, file);
    }
    if (crc != r.crc32)
      throw DataError(where + "CRC-32 is " + hex32(crc) + ", the archive says " + hex32(r.crc32) +
                      ": the file is damaged (a changed byte); refusing to use it");
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace expctl::io
