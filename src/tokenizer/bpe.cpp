#include "tokenizer/bpe.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/text.h"

namespace kllens::tok {

using nlohmann::json;

namespace {

// A 4-ary min-heap of integer keys: half the depth of a binary heap, and the children of a
// node share a cache line -- the heap of a long word (a whole document for tokenizers without
// a pre-tokenizer) is far larger than the caches.
struct MinHeap {
  std::vector<uint64_t> items;

  void sift_down(size_t i, uint64_t v) {
    const size_t n = items.size();
    for (;;) {
      size_t c = 4 * i + 1;
      if (c >= n) break;
      size_t e = std::min(c + 4, n), best = c;
      for (size_t k = c + 1; k < e; ++k)
        if (items[k] < items[best]) best = k;
      if (items[best] >= v) break;
      items[i] = items[best];
      i = best;
    }
    items[i] = v;
  }
  void push(uint64_t v) {
    items.push_back(v);
    size_t i = items.size() - 1;
    while (i > 0) {
      size_t p = (i - 1) / 4;
      if (items[p] <= v) break;
      items[i] = items[p];
      i = p;
    }
    items[i] = v;
  }
  uint64_t pop() {
    uint64_t top = items[0];
    uint64_t last = items.back();
    items.pop_back();
    if (!items.empty()) sift_down(0, last);
    return top;
  }
};

}  // namespace

void BpeModel::PairTable::reserve(size_t n) {
  KLLENS_CHECK(size_ == 0, "PairTable::reserve after inserts");
  int bits = 4;
  while ((size_t{1} << bits) < 2 * n) ++bits;
  keys_.assign(size_t{1} << bits, kEmpty);
  merges_.assign(size_t{1} << bits, Merge{});
  shift_ = 64 - bits;
}

void BpeModel::PairTable::insert_or_assign(uint64_t key, Merge merge) {
  KLLENS_CHECK(2 * (size_ + 1) <= keys_.size(), "PairTable over half full ({} of {})", size_ + 1,
               keys_.size());
  const size_t mask = keys_.size() - 1;
  for (size_t i = slot(key);; i = (i + 1) & mask) {
    if (keys_[i] == key) {
      merges_[i] = merge;
      return;
    }
    if (keys_[i] == kEmpty) {
      keys_[i] = key;
      merges_[i] = merge;
      ++size_;
      return;
    }
  }
}

const BpeModel::Merge* BpeModel::PairTable::find(uint64_t key) const {
  if (keys_.empty()) return nullptr;
  const size_t mask = keys_.size() - 1;
  for (size_t i = slot(key);; i = (i + 1) & mask) {
    if (keys_[i] == key) return &merges_[i];
    if (keys_[i] == kEmpty) return nullptr;
  }
}

BpeModel::BpeModel(const json& model, const std::string& path) {
  if (!model.contains("vocab") || !model["vocab"].is_object())
    fail("{}: BPE model has no \"vocab\" object", path);
  if (!model.contains("merges") || !model["merges"].is_array())
    fail("{}: BPE model has no \"merges\" list", path);

  auto opt_string = [&](const char* key) -> std::optional<std::string> {
    if (!model.contains(key) || model[key].is_null()) return std::nullopt;
    if (!model[key].is_string()) fail("{}: BPE model field \"{}\" is not a string", path, key);
    return model[key].get<std::string>();
  };
  auto opt_bool = [&](const char* key) {
    if (!model.contains(key) || model[key].is_null()) return false;
    if (!model[key].is_boolean()) fail("{}: BPE model field \"{}\" is not a boolean", path, key);
    return model[key].get<bool>();
  };

  if (model.contains("dropout") && !model["dropout"].is_null()) {
    if (!model["dropout"].is_number()) fail("{}: BPE \"dropout\" is not a number", path);
    double p = model["dropout"].get<double>();
    if (p != 0.0 && p != 1.0)
      fail("{}: unsupported BPE dropout {} (only deterministic BPE is supported)", path, p);
  }
  if (auto prefix = opt_string("continuing_subword_prefix"); prefix && !prefix->empty())
    fail("{}: unsupported BPE continuing_subword_prefix \"{}\"", path, *prefix);
  if (auto suffix = opt_string("end_of_word_suffix"); suffix && !suffix->empty())
    fail("{}: unsupported BPE end_of_word_suffix \"{}\"", path, *suffix);
  fuse_unk_ = opt_bool("fuse_unk");
  byte_fallback_ = opt_bool("byte_fallback");
  ignore_merges_ = opt_bool("ignore_merges");

  int64_t max_id = -1;
  vocab_.reserve(model["vocab"].size());
  for (const auto& [token, value] : model["vocab"].items()) {
    if (!value.is_number_integer())
      fail("{}: vocab entry \"{}\" has a non-integer id", path, token);
    // An unsigned id above INT64_MAX would wrap through get<int64_t>() (to -1 for 2^64 - 1).
    const int64_t id = value.is_number_unsigned() && value.get<uint64_t>() > (uint64_t{1} << 30)
                           ? int64_t{-1}
                           : value.get<int64_t>();
    if (id < 0 || id > (int64_t{1} << 30))
      fail("{}: vocab entry \"{}\" has id {} out of range 0..{}", path, token, value.dump(),
           int64_t{1} << 30);
    vocab_.insert_or_assign(token, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  // Ids index a dense table: refuse vocabularies whose ids are far sparser than their size.
  if (max_id >= static_cast<int64_t>(vocab_.size()) + (int64_t{1} << 20))
    fail("{}: vocab ids are too sparse (max id {} for {} tokens)", path, max_id, vocab_.size());
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_id_.assign(static_cast<size_t>(max_id + 1), 0);
  // In the file's key order (nlohmann's object is sorted), so the message names the same two
  // tokens every time. Two tokens of one id would make decoding that id depend on hash order.
  for (const auto& [token, value] : model["vocab"].items()) {
    const int32_t id = vocab_.find(token)->second;
    if (has_id_[id])
      fail("{}: vocab entries \"{}\" and \"{}\" have the same id {}", path, id_to_token_[id],
           token, id);
    id_to_token_[id] = token;
    has_id_[id] = 1;
  }

  if (auto unk = opt_string("unk_token")) {
    auto it = vocab_.find(*unk);
    if (it == vocab_.end()) fail("{}: BPE unk_token \"{}\" is not in the vocab", path, *unk);
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  for (int c = 0; c < 128; ++c) {
    auto it = vocab_.find(std::string(1, static_cast<char>(c)));
    ascii_ids_[c] = it == vocab_.end() ? -1 : it->second;
  }

  const auto& merges = model["merges"];
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& m : merges) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail("{}: merge #{} \"{}\" is not two tokens separated by one space", path, rank, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail("{}: merge #{} is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
      fail("{}: merge #{} (\"{}\", \"{}\") uses a token missing from the vocab", path, rank, a, b);
    // A repeated pair keeps its last rank, as a Rust HashMap built from the list does.
    merges_.insert_or_assign(pair_key(ia->second, ib->second), Merge{rank, iab->second});
    ++rank;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  // Initial symbols: one per character; unknown characters go to byte fallback, else unk
  // (fused with a preceding unk when fuse_unk), else are dropped -- as HF's BPE::merge_word.
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  int32_t pending_unk = -1;  // an unk not yet emitted (fuse_unk may extend it)
  for (size_t i = 0; i < word.size();) {
    char32_t cp;
    int w = utf8_next(word, i, &cp);
    KLLENS_CHECK(w > 0, "BPE word is not valid UTF-8 at byte {}", i);
    std::string_view ch = word.substr(i, w);
    i += w;
    int32_t id = -1;
    if (w == 1) {
      id = ascii_ids_[static_cast<unsigned char>(ch[0])];
    } else if (auto it = vocab_.find(ch); it != vocab_.end()) {
      id = it->second;
    }
    if (id >= 0) {
      if (pending_unk >= 0) {
        ids.push_back(pending_unk);
        pending_unk = -1;
      }
      ids.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // HF leaves a pending unk pending here (it is emitted later, after these bytes).
        for (char c : ch) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);

  const size_t n = ids.size();
  if (n <= 1 || merges_.empty()) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  // Merge by rank (ties: leftmost) with a heap over a linked list of symbols, dropping stale
  // heap entries -- HF's Word::merge_all. An entry is (rank << 32 | pos), so the smallest key is
  // the lowest rank, then the leftmost position. An entry is live while its position still
  // starts a pair of that rank: symbols only grow, so a pair of the same rank (ranks are unique
  // per pair) at the same position is the very pair the entry was made for. pair_at[pos] is the
  // merge of the pair starting at pos now (rank -1: none), kept current as symbols merge, so
  // telling a live entry from a stale one needs no lookup. The pairs of the initial symbols,
  // most of the entries, are sorted once and read in order; the heap holds only the pairs that
  // merges make, and each step takes the smaller of the two heads -- the same order as one heap
  // of everything, without a deep heap's cache misses on every pop. O(n log n) in the length.
  std::vector<int32_t> prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  std::vector<Merge> pair_at(n, Merge{-1, -1});
  std::vector<uint64_t> initial;
  initial.reserve(n);
  MinHeap heap;
  auto key = [](int32_t rank, int32_t pos) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(rank)) << 32) | static_cast<uint32_t>(pos);
  };
  // The pair starting at pos: recorded, and queued when it has a merge.
  auto update_pair = [&](int32_t pos, bool queue) {
    const Merge* m = merges_.find(pair_key(ids[pos], ids[next[pos]]));
    pair_at[pos] = m ? *m : Merge{-1, -1};
    if (m && queue) heap.push(key(m->rank, pos));
  };
  for (size_t k = 0; k < n; ++k) {
    prev[k] = static_cast<int32_t>(k) - 1;
    next[k] = k + 1 < n ? static_cast<int32_t>(k + 1) : -1;
  }
  for (size_t k = 0; k + 1 < n; ++k) {
    update_pair(static_cast<int32_t>(k), false);
    if (pair_at[k].rank >= 0) initial.push_back(key(pair_at[k].rank, static_cast<int32_t>(k)));
  }
  std::sort(initial.begin(), initial.end());
  for (size_t next_initial = 0; next_initial < initial.size() || !heap.items.empty();) {
    const uint64_t top =
        next_initial < initial.size() && (heap.items.empty() || initial[next_initial] < heap.items[0])
            ? initial[next_initial++]
            : heap.pop();
    auto rank = static_cast<int32_t>(top >> 32);
    auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    if (!alive[pos] || pair_at[pos].rank != rank) continue;  // stale entry
    const int32_t right = next[pos];
    ids[pos] = pair_at[pos].new_id;
    alive[right] = 0;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (int32_t p = prev[pos]; p >= 0) update_pair(p, true);
    if (next[pos] >= 0) {
      update_pair(pos, true);
    } else {
      pair_at[pos] = Merge{-1, -1};
    }
  }
  for (int32_t k = 0; k >= 0; k = next[k]) out.push_back(ids[k]);
}

}  // namespace kllens::tok
