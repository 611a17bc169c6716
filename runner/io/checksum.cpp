#include "runner/io/checksum.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "runner/core/error.h"

namespace expctl::io {
namespace {

std::string to_hex(const unsigned char* data, unsigned int size) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 0xf]);
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Reads with stdio in 1 MiB chunks: data sets are hundreds of MB, so never load a whole file.
std::string digest_file(const std::filesystem::path& file, const EVP_MD* md, const char* algorithm) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(std::fopen(file.c_str(), "rb"), &std::fclose);
  if (!in) {
    throw Error(file.string() + ": cannot open for " + algorithm + ": " + std::strerror(errno));
  }
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    throw Error(file.string() + ": cannot initialise " + algorithm + " (OpenSSL)");
  }
  std::vector<unsigned char> buffer(1 << 20);
  for (;;) {
    const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), in.get());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1) {
      throw Error(file.string() + ": " + algorithm + " update failed (OpenSSL)");
    }
    if (n < buffer.size()) {
      if (std::ferror(in.get())) {
        throw Error(file.string() + ": read error while computing " + algorithm + ": " + std::strerror(errno));
      }
      break;
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &size) != 1) {
    throw Error(file.string() + ": " + algorithm + " finalisation failed (OpenSSL)");
  }
  return to_hex(digest, size);
}

}  // namespace

std::string sha256_file(const std::filesystem::path& file) { return digest_file(file, EVP_sha256(), "SHA-256"); }

std::string md5_file(const std::filesystem::path& file) { return digest_file(file, EVP_md5(), "MD5"); }

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

}  // namespace expctl::io
