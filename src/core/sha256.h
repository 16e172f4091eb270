#pragma once

#include <string>
#include <string_view>

namespace kllens {

// Lowercase hex SHA-256 (OpenSSL's EVP interface).
std::string sha256_hex(std::string_view bytes);
std::string sha256_file_hex(const std::string& path);  // throws Error naming the path

}  // namespace kllens
