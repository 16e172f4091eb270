#include "tokenizer/added_vocab.h"

#include <algorithm>

#include "tokenizer/text.h"

namespace kllens::tok {

void PatternSet::add(std::string_view pattern, int32_t index) {
  if (pattern.empty()) return;
  size_t node = 0;
  for (char c : pattern) {
    auto b = static_cast<unsigned char>(c);
    auto& ch = nodes_[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), b,
                               [](const auto& e, unsigned char v) { return e.first < v; });
    if (it != ch.end() && it->first == b) {
      node = static_cast<size_t>(it->second);
    } else {
      int32_t fresh = static_cast<int32_t>(nodes_.size());
      ch.insert(it, {b, fresh});
      nodes_.emplace_back();
      node = static_cast<size_t>(fresh);
    }
  }
  // The same content twice: the first one wins, like the first pattern of an Aho-Corasick set.
  if (nodes_[node].pattern < 0) nodes_[node].pattern = index;
}

int32_t PatternSet::longest_at(std::string_view text, size_t pos, size_t* len) const {
  size_t node = 0;
  int32_t best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    auto b = static_cast<unsigned char>(text[i]);
    const auto& ch = nodes_[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), b,
                               [](const auto& e, unsigned char v) { return e.first < v; });
    if (it == ch.end() || it->first != b) break;
    node = static_cast<size_t>(it->second);
    if (nodes_[node].pattern >= 0) {
      best = nodes_[node].pattern;
      *len = i + 1 - pos;
    }
  }
  return best;
}

void AddedVocabulary::build(std::vector<AddedToken> tokens,
                            const std::vector<std::string>& normalized_contents) {
  tokens_ = std::move(tokens);
  raw_ = PatternSet();
  normalized_ = PatternSet();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].normalized)
      normalized_.add(normalized_contents[i], static_cast<int32_t>(i));
    else
      raw_.add(tokens_[i].content, static_cast<int32_t>(i));
  }
}

namespace {

// Last / first code point of a valid UTF-8 string.
char32_t last_cp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp = 0;
  utf8_next(s, i, &cp);
  return cp;
}

char32_t first_cp(std::string_view s) {
  char32_t cp = 0;
  utf8_next(s, 0, &cp);
  return cp;
}

// Start of the trailing whitespace of s (s.size() if none).
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    char32_t cp = 0;
    utf8_next(s, i, &cp);
    if (!is_white_space(cp)) break;
    end = i;
  }
  return end;
}

// Length of the leading whitespace of s.
size_t leading_space_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp = 0;
    int w = utf8_next(s, i, &cp);
    if (w == 0 || !is_white_space(cp)) break;
    i += static_cast<size_t>(w);
  }
  return i;
}

}  // namespace

void AddedVocabulary::split(std::string_view text, bool normalized_set,
                            std::vector<Piece>& out) const {
  if (text.empty()) return;
  const PatternSet& set = normalized_set ? normalized_ : raw_;
  const auto n = static_cast<uint32_t>(text.size());
  if (set.empty()) {
    out.push_back({0, n, -1});
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    int32_t index = set.longest_at(text, pos, &len);
    if (index < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop;  // the matcher resumes after the match itself, not after stripped spaces
    const AddedToken& tok = tokens_[static_cast<size_t>(index)];
    if (tok.single_word) {
      bool start_space = start == 0 || !is_word_char(last_cp(text.substr(0, start)));
      bool stop_space = stop == text.size() || !is_word_char(first_cp(text.substr(stop)));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (tok.rstrip) stop += leading_space_len(text.substr(stop));
    if (start_offset < start)
      out.push_back({static_cast<uint32_t>(start_offset), static_cast<uint32_t>(start), -1});
    out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(stop), tok.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({static_cast<uint32_t>(start_offset), n, -1});
}

}  // namespace kllens::tok
