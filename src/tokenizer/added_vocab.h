// Added tokens (special or not) and the splitting of input text on them, as HF's
// AddedVocabulary does: leftmost-longest matching, then the single_word / lstrip / rstrip rules.
// Internal to src/tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kllens::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

// A piece of the input: [begin, end) bytes; id >= 0 when it is an added token.
struct Piece {
  uint32_t begin;
  uint32_t end;
  int32_t id;
};

// Leftmost-longest multi-pattern matcher over bytes (a byte trie; patterns are short).
class PatternSet {
 public:
  void add(std::string_view pattern, int32_t index);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest pattern that starts at text[pos]: its index and length, or index -1.
  int32_t longest_at(std::string_view text, size_t pos, size_t* len) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t pattern = -1;
  };
  std::vector<Node> nodes_{Node{}};
};

class AddedVocabulary {
 public:
  // `tokens` keep their ids; `normalized_contents[i]` is tokens[i].content after the
  // tokenizer's normalizer (used for tokens with normalized = true).
  void build(std::vector<AddedToken> tokens, const std::vector<std::string>& normalized_contents);

  // HF's find_matches: splits `text` on the non-normalized tokens (normalized_set = false) or on
  // the normalized ones (true). Empty text gives no pieces.
  void split(std::string_view text, bool normalized_set, std::vector<Piece>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  PatternSet raw_;          // patterns: index into tokens_
  PatternSet normalized_;
};

}  // namespace kllens::tok
