// GPT-2 byte-level pieces: the reversible byte <-> printable-character map and the GPT-2
// pre-tokenizer split. Internal to src/tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kllens::tok {

// Appends the byte-level form of `bytes` (each byte -> its GPT-2 character, UTF-8 encoded).
void byte_level_append(std::string& out, std::string_view bytes);

// The byte a GPT-2 character stands for, or -1 if cp is not one of the 256 characters.
int byte_level_byte(char32_t cp);

// Splits valid UTF-8 text like the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (leftmost-first alternation, as Oniguruma runs it for HF's ByteLevel pre-tokenizer).
// Appends the [begin, end) byte ranges of the pieces, which cover the text in order.
void gpt2_split(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out);

}  // namespace kllens::tok
