#include "tokenizer/text.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>

#include <array>
#include <cstdint>

#include "core/error.h"

namespace kllens::tok {

namespace {

// Valid range of the second byte of a sequence, by lead byte (Unicode Table 3-7).
inline bool second_byte_ok(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
  }
}

inline bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Expected total length for a lead byte, 0 if it can never start a sequence.
inline int lead_width(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

}  // namespace

int utf8_next(std::string_view s, size_t i, char32_t* cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  unsigned char b0 = p[i];
  int w = lead_width(b0);
  if (w == 0 || i + w > n) return 0;
  if (w == 1) {
    *cp = b0;
    return 1;
  }
  if (!second_byte_ok(b0, p[i + 1])) return 0;
  for (int k = 2; k < w; ++k)
    if (!is_cont(p[i + k])) return 0;
  char32_t c;
  if (w == 2) {
    c = (char32_t(b0 & 0x1F) << 6) | (p[i + 1] & 0x3F);
  } else if (w == 3) {
    c = (char32_t(b0 & 0x0F) << 12) | (char32_t(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
  } else {
    c = (char32_t(b0 & 0x07) << 18) | (char32_t(p[i + 1] & 0x3F) << 12) |
        (char32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
  }
  *cp = c;
  return w;
}

size_t utf8_invalid_offset(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  char32_t cp;
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int w = utf8_next(s, i, &cp);
    if (w == 0) return i;
    i += w;
  }
  return std::string_view::npos;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  char32_t cp;
  while (i < n) {
    int w = utf8_next(s, i, &cp);
    if (w > 0) {
      out.append(s.substr(i, w));
      i += w;
      continue;
    }
    // Ill-formed: skip the maximal prefix of a well-formed sequence, emit one U+FFFD.
    size_t k = 1;
    int want = lead_width(p[i]);
    if (want >= 2 && i + 1 < n && second_byte_ok(p[i], p[i + 1])) {
      k = 2;
      while (static_cast<int>(k) < want && i + k < n && is_cont(p[i + k])) ++k;
    }
    out.append("\xEF\xBF\xBD");
    i += k;
  }
  return out;
}

CharClass char_class(char32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::Space;
    return CharClass::Other;
  }
  if (u_isUWhiteSpace(static_cast<UChar32>(cp))) return CharClass::Space;
  uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(cp));
  if (mask & U_GC_L_MASK) return CharClass::Letter;
  if (mask & U_GC_N_MASK) return CharClass::Number;
  return CharClass::Other;
}

bool is_white_space(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

bool is_word_char(char32_t cp) {
  auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL))
    return true;
  uint32_t mask = U_GET_GC_MASK(c);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

std::string unicode_normalize(std::string_view s, NormForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = nullptr;
  switch (form) {
    case NormForm::NFC: norm = icu::Normalizer2::getNFCInstance(status); break;
    case NormForm::NFD: norm = icu::Normalizer2::getNFDInstance(status); break;
    case NormForm::NFKC: norm = icu::Normalizer2::getNFKCInstance(status); break;
    case NormForm::NFKD: norm = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || norm == nullptr)
    fail("ICU: cannot load the Unicode normalization data: {}", u_errorName(status));
  if (s.size() > static_cast<size_t>(INT32_MAX))
    fail("text of {} bytes is too long to normalize in one piece", s.size());
  icu::StringPiece piece(s.data(), static_cast<int32_t>(s.size()));
  // Most text is already normalized: check first (cheap), convert only when needed.
  if (norm->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  icu::StringByteSink<std::string> sink(&out);
  norm->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) fail("ICU: Unicode normalization failed: {}", u_errorName(status));
  return out;
}

}  // namespace kllens::tok
