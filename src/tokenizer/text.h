// Text helpers for the tokenizer: strict UTF-8 decoding, Rust-compatible lossy UTF-8 repair,
// the Unicode character classes the GPT-2 split and the added-token rules need (ICU), and
// Unicode normalization forms (ICU Normalizer2). Internal to src/tokenizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kllens::tok {

// Decodes the well-formed UTF-8 sequence starting at s[i]: returns its length (1..4) and sets
// *cp, or returns 0 if the bytes at i are not a well-formed sequence (overlong forms,
// surrogates and values above U+10FFFF are ill-formed, as in Unicode and Rust).
int utf8_next(std::string_view s, size_t i, char32_t* cp);

// Byte offset of the first ill-formed byte, or std::string_view::npos if s is valid UTF-8.
size_t utf8_invalid_offset(std::string_view s);

void utf8_append(std::string& out, char32_t cp);

// What Rust's String::from_utf8_lossy gives: every maximal ill-formed subpart becomes one
// U+FFFD (the Unicode "substitution of maximal subparts" practice).
std::string utf8_lossy(std::string_view bytes);

// The classes of the GPT-2 pre-tokenizer regex: \p{L}, \p{N}, \s (Unicode White_Space), rest.
enum class CharClass : uint8_t { Letter, Number, Space, Other };
CharClass char_class(char32_t cp);

// Unicode White_Space (Rust's char::is_whitespace, regex \s).
bool is_white_space(char32_t cp);

// Rust regex's Unicode \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation,
// Join_Control.
bool is_word_char(char32_t cp);

enum class NormForm { NFC, NFD, NFKC, NFKD };

// Normalizes valid UTF-8 text to the given form.
std::string unicode_normalize(std::string_view s, NormForm form);

}  // namespace kllens::tok
