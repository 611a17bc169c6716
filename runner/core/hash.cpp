#include "runner/core/hash.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "runner/core/error.h"

namespace expctl {
namespace {

std::string to_hex(const unsigned char* data, unsigned int size) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned i = 0; i < size; ++i) {
    out += hex[data[i] >> 4];
    out += hex[data[i] & 15];
  }
  return out;
}

}  // namespace

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return to_hex(digest, len);
}

namespace {

// Reads with stdio in 1 MiB chunks: data sets are hundreds of MB, so never load a whole file.
std::string digest_file(const std::filesystem::path& file, const EVP_MD* md, const char* algorithm) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(std::fopen(file.c_str(), "rb"), &std::fclose);
  if (!in) throw Error(file.string() + ": cannot open for " + algorithm + ": " + std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1)
    throw Error(file.string() + ": cannot initialise " + algorithm + " (OpenSSL)");
  std::vector<unsigned char> buffer(1 << 20);
  for (;;) {
    const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), in.get());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1)
      throw Error(file.string() + ": " + algorithm + " update failed (OpenSSL)");
    if (n < buffer.size()) {
      if (std::ferror(in.get()))
        throw Error(file.string() + ": read error while computing " + algorithm + ": " + std::strerror(errno));
      break;
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &size) != 1)
    throw Error(file.string() + ": " + algorithm + " finalisation failed (OpenSSL)");
  return to_hex(digest, size);
}

}  // namespace

std::string sha256_file(const std::filesystem::path& file) { return digest_file(file, EVP_sha256(), "SHA-256"); }

std::string md5_file(const std::filesystem::path& file) { return digest_file(file, EVP_md5(), "MD5"); }

std::string content_id(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return "";
  // A rewrite (atomic rename: a new inode) or an edit in place (size or mtime) makes it hash again.
  using Key = std::tuple<std::string, int64_t, int64_t, int64_t, uint64_t>;
  const Key key{std::filesystem::absolute(file).lexically_normal().string(), int64_t(st.st_size),
                int64_t(st.st_mtim.tv_sec), int64_t(st.st_mtim.tv_nsec), uint64_t(st.st_ino)};
  static std::mutex mutex;
  static std::map<Key, std::string> known;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = known.find(key); it != known.end()) return it->second;
  }
  std::string id = sha256_file(file);
  std::lock_guard<std::mutex> lock(mutex);
  return known.emplace(key, std::move(id)).first->second;
}

}  // namespace expctl
