// The BPE model of HF tokenizers: vocabulary, merges by rank, unk / fuse_unk, byte_fallback,
// ignore_merges, and a per-word result cache. Internal to src/tokenizer.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kllens::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Reads the "model" object of a tokenizer.json; `path` names the file in errors.
  BpeModel(const nlohmann::json& model, const std::string& path);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized word (already in the model's alphabet, e.g. the
  // byte-level characters). Thread-safe.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr if no token has this id.
  const std::string* id_to_token(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  // The merges by pair key: open addressing with linear probing in a power-of-two table at most
  // half full. A word of a million symbols (a text without spaces, a tokenizer without a
  // pre-tokenizer) looks pairs up millions of times; std::unordered_map's node per entry costs
  // one more cache miss per lookup.
  class PairTable {
   public:
    void reserve(size_t n);
    void insert_or_assign(uint64_t key, Merge merge);
    const Merge* find(uint64_t key) const;
    bool empty() const { return size_ == 0; }

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};  // no pair of ids >= 0 has this key
    size_t slot(uint64_t key) const {  // Fibonacci hashing: the top bits of key * 2^64 / phi
      return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
    }
    std::vector<uint64_t> keys_;
    std::vector<Merge> merges_;
    int shift_ = 64;
    size_t size_ = 0;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  TokenMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> has_id_;
  PairTable merges_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // id of "<0xNN>" (byte fallback), -1 if missing
  int32_t ascii_ids_[128];  // id of the one-character token of an ASCII character, -1 if missing

  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace kllens::tok
