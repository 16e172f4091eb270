#include "tokenizer/byte_level.h"

#include <array>

#include "core/error.h"
#include "tokenizer/text.h"

namespace kllens::tok {

namespace {

struct ByteTables {
  std::array<std::string, 256> byte_str;  // byte -> UTF-8 of its character
  std::array<int16_t, 512> cp_byte;       // character (all below U+0144) -> byte, -1 if none

  ByteTables() {
    cp_byte.fill(-1);
    // Bytes that are printable Latin-1 map to themselves; the other 68 bytes map, in order,
    // to U+0100, U+0101, ...
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = keep ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      utf8_append(byte_str[b], cp);
      cp_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

void byte_level_append(std::string& out, std::string_view bytes) {
  const auto& t = tables();
  for (char c : bytes) out.append(t.byte_str[static_cast<unsigned char>(c)]);
}

int byte_level_byte(char32_t cp) {
  if (cp >= 512) return -1;
  return tables().cp_byte[cp];
}

void gpt2_split(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) {
  // Decode once: code points, their byte offsets and classes.
  thread_local std::vector<char32_t> cps;
  thread_local std::vector<uint32_t> offs;
  thread_local std::vector<CharClass> cls;
  cps.clear();
  offs.clear();
  cls.clear();
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    int w = utf8_next(text, i, &cp);
    KLLENS_CHECK(w > 0, "gpt2_split: invalid UTF-8 at byte {}", i);
    cps.push_back(cp);
    offs.push_back(static_cast<uint32_t>(i));
    cls.push_back(char_class(cp));
    i += w;
  }
  const size_t n = cps.size();
  offs.push_back(static_cast<uint32_t>(text.size()));

  auto run_end = [&](size_t j, CharClass c) {
    while (j < n && cls[j] == c) ++j;
    return j;
  };

  size_t i = 0;
  while (i < n) {
    size_t end = 0;
    // 's|'t|'re|'ve|'m|'ll|'d
    if (cps[i] == U'\'' && i + 1 < n) {
      char32_t a = cps[i + 1];
      if (a == U's' || a == U't' || a == U'm' || a == U'd') {
        end = i + 2;
      } else if (i + 2 < n) {
        char32_t b = cps[i + 2];
        if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
          end = i + 3;
      }
    }
    if (end == 0) {
      // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional U+0020, then a run of one
      // class. Without the space, the run must start at i; a space is never in these classes.
      size_t j = (cps[i] == U' ' && i + 1 < n) ? i + 1 : i;
      CharClass c = cls[j];
      if (j > i && c == CharClass::Space) j = i, c = cls[i];
      if (c != CharClass::Space) {
        end = run_end(j, c);
      } else {
        // \s+(?!\S) then \s+: the whitespace run, less its last character when a
        // non-space follows and the run is longer than one.
        size_t k = run_end(i, CharClass::Space);
        end = (k < n && k - i >= 2) ? k - 1 : k;
      }
    }
    out.emplace_back(offs[i], offs[end]);
    i = end;
  }
}

}  // namespace kllens::tok
