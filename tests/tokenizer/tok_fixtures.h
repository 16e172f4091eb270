// Fixtures shared by the tokenizer tests: loaded tokenizers, the WikiText test split, the HF
// oracle ids, and a readable report of the first difference between two id sequences.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens::test {

inline std::string tokenizer_path(const std::string& name) {
  if (name.rfind("demo-", 0) == 0) return repo_path("data/models/" + name + "/tokenizer.json");
  return repo_path("data/tokenizers/" + name + ".tokenizer.json");
}

// Loaded once per test binary.
inline const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, Tokenizer::load(tokenizer_path(name))).first;
  return it->second;
}

inline const std::string& wiki_text() {
  static const std::string text = read_file(repo_path("data/wikitext-2-raw/wiki.test.raw"));
  return text;
}

// encode(wiki_text()) once per tokenizer.
inline const std::vector<int32_t>& wiki_ids(const std::string& name) {
  static std::map<std::string, std::vector<int32_t>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, tokenizer(name).encode(wiki_text())).first;
  return it->second;
}

// The int32 tensor `name` of a safetensors file (parsed here: the test links only the
// tokenizer library).
inline std::vector<int32_t> read_safetensors_i32(const std::string& path, const std::string& name) {
  std::string bytes = read_file(path);
  if (bytes.size() < 8) throw std::runtime_error(path + ": too short for safetensors");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (8 + header_len > bytes.size()) throw std::runtime_error(path + ": bad header length");
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  const auto& t = header.at(name);
  if (t.at("dtype") != "I32") throw std::runtime_error(path + ": " + name + " is not I32");
  uint64_t begin = t.at("data_offsets").at(0), end = t.at("data_offsets").at(1);
  size_t base = 8 + header_len;
  if (base + end > bytes.size() || end < begin || (end - begin) % 4 != 0)
    throw std::runtime_error(path + ": bad data_offsets");
  std::vector<int32_t> out((end - begin) / 4);
  std::memcpy(out.data(), bytes.data() + base + begin, end - begin);  // little-endian host
  return out;
}

inline std::string describe_ids(const Tokenizer& tk, const std::vector<int32_t>& ids, size_t from,
                                size_t to) {
  std::string s;
  for (size_t i = from; i < to && i < ids.size(); ++i) {
    auto tok = tk.id_to_token(ids[i]);
    s += "[" + std::to_string(i) + "] " + std::to_string(ids[i]) + " '" + (tok ? *tok : "?") +
         "'  ";
  }
  return s;
}

// Passes when equal; otherwise fails with the first differing index and some context.
inline ::testing::AssertionResult same_ids(const Tokenizer& tk, const std::vector<int32_t>& got,
                                           const std::vector<int32_t>& want) {
  size_t n = std::min(got.size(), want.size());
  size_t i = 0;
  while (i < n && got[i] == want[i]) ++i;
  if (i == n && got.size() == want.size()) return ::testing::AssertionSuccess();
  size_t from = i >= 6 ? i - 6 : 0;
  return ::testing::AssertionFailure()
         << "ids differ first at index " << i << " (got " << got.size() << " ids, want "
         << want.size() << ")\n  got:  " << describe_ids(tk, got, from, i + 6)
         << "\n  want: " << describe_ids(tk, want, from, i + 6) << "\n  text near there: \""
         << tk.decode(std::vector<int32_t>(want.begin() + static_cast<std::ptrdiff_t>(from),
                                           want.begin() + static_cast<std::ptrdiff_t>(
                                                              std::min(want.size(), i + 6))))
         << "\"";
}

inline ::testing::AssertionResult same_text(const std::string& got, const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t n = std::min(got.size(), want.size());
  size_t i = 0;
  while (i < n && got[i] == want[i]) ++i;
  size_t from = i >= 40 ? i - 40 : 0;
  return ::testing::AssertionFailure()
         << "texts differ first at byte " << i << " (got " << got.size() << " bytes, want "
         << want.size() << ")\n  got:  \"" << got.substr(from, 80) << "\"\n  want: \""
         << want.substr(from, 80) << "\"";
}

}  // namespace kllens::test
