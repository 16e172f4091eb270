#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kllens {

// Lowercase hex SHA-256 (OpenSSL's EVP interface).
std::string sha256_hex(std::string_view bytes);
std::string sha256_file_hex(const std::string& path);  // throws Error naming the path

// Incremental: for data that is not one contiguous buffer (a model's weights, tensor by tensor).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t bytes);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  std::string hex();  // finishes; no update afterwards

 private:
  void* ctx_;  // EVP_MD_CTX, kept out of the header
};

}  // namespace kllens
