// Internal to quant/qmatmul*.cpp: every packed format decoded, one row at a time, into the one
// form the integer kernels read (qk::DecodedRow): K unsigned codes u in natural element order and,
// for each 16 consecutive elements j, a float scale s_j and offset o_j with w = s_j u + o_j.
//
//   q8_0    u = qs + 128       s = d          o = -128 d
//   q4_0    u = nibble         s = d          o = -8 d
//   q4_1    u = nibble         s = d          o = m
//   q5_0    u = nibble | h<<4  s = d          o = -16 d
//   q5_1    u = nibble | h<<4  s = d          o = m
//   iq4_nl  u = level + 128    s = d          o = -128 d      (level: the 16 non-linear values)
//   iq4_xs  u = level + 128    s = d (ls-32)  o = -128 s      (per 32)
//   q2_K    u = 2 bits         s = d sc       o = -dmin m     (per 16)
//   q3_K    u = 2 bits + 4 h   s = d (sc-32)  o = -4 s        (per 16; h = the hmask bit)
//   q4_K    u = nibble         s = d sc       o = -dmin m     (per 32)
//   q5_K    u = nibble | h<<4  s = d sc       o = -dmin m     (per 32)
//   q6_K    u = 6 bits         s = d sc       o = -32 s       (per 16)
//   intB    u = stored code    s = group s    o = -z s        (groups a multiple of 16, or g0)
//
// The code loops are plain C++ written so that GCC vectorizes them for the instruction set of
// the including file (each includes this after its own `#pragma GCC target`); they have internal
// linkage, so the three compilations never merge. The scale expressions are ggml's (the same
// float products its dequantizers form), so s u + o is the dequantized weight up to one rounding.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "quant/ggml_quants.h"
#include "quant/qmatmul_kernels.h"

namespace kllens::qk {
namespace {

using ggml::kQK_K;

inline float half(uint16_t h) { return f16_to_f32(h); }

// 16 bytes of nibbles -> 32 codes: the low nibbles (elements 0..15), then the high ones.
inline void split_nibbles(const uint8_t* qs, uint8_t* u) {
  for (int j = 0; j < 16; ++j) u[j] = qs[j] & 0x0F;
  for (int j = 0; j < 16; ++j) u[j + 16] = qs[j] >> 4;
}

// The 16 levels of iq4_nl/iq4_xs plus 128 (unsigned codes 1..241), looked up by nibble.
inline void iq4_levels(const uint8_t* qs, uint8_t* u) {
  static constexpr auto kLevels = [] {
    std::array<uint8_t, 16> v{};
    for (int i = 0; i < 16; ++i) v[i] = static_cast<uint8_t>(ggml::kValuesIQ4NL[i] + 128);
    return v;
  }();
  for (int j = 0; j < 16; ++j) u[j] = kLevels[qs[j] & 0x0F];
  for (int j = 0; j < 16; ++j) u[j + 16] = kLevels[qs[j] >> 4];
}

// Bit j of the 32 bits qh (little-endian), shifted to 16: the fifth bit of element j.
inline void add_fifth_bits(const uint8_t* qh_bytes, uint8_t* u) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  for (int j = 0; j < 32; ++j) u[j] |= static_cast<uint8_t>(((qh >> j) & 1) << 4);
}

inline void set_pair(float* s16, float* o16, int j, float s, float o) {
  s16[j] = s16[j + 1] = s;
  o16[j] = o16[j + 1] = o;
}

template <typename Block>
const Block* row_blocks(const QTensor& w, int64_t r, int64_t elems_per_block) {
  return reinterpret_cast<const Block*>(w.data.data()) + r * (w.cols / elems_per_block);
}

void decode_q8_0(const QTensor& w, int64_t r, DecodedRow out) {
  const BlockQ8_0* b = row_blocks<BlockQ8_0>(w, r, 32);
  for (int64_t i = 0; i < w.cols / 32; ++i, ++b) {
    for (int j = 0; j < 32; ++j) out.codes[32 * i + j] = static_cast<uint8_t>(b->qs[j] + 128);
    const float d = half(b->d);
    set_pair(out.scale16, out.offset16, 2 * static_cast<int>(i), d, -128.0f * d);
  }
}

// q4_0, q4_1, q5_0, q5_1: nibbles (plus q5's fifth bits), scale d and offset m (the _1 formats)
// or -zero d.
template <typename Block, bool kFifth, bool kMin>
void decode_legacy(const QTensor& w, int64_t r, DecodedRow out, float zero = 0) {
  const Block* b = row_blocks<Block>(w, r, 32);
  for (int64_t i = 0; i < w.cols / 32; ++i, ++b) {
    split_nibbles(b->qs, out.codes + 32 * i);
    if constexpr (kFifth) add_fifth_bits(b->qh, out.codes + 32 * i);
    const float d = half(b->d);
    float o = -zero * d;
    if constexpr (kMin) o = half(b->m);
    set_pair(out.scale16, out.offset16, 2 * static_cast<int>(i), d, o);
  }
}

void decode_iq4_nl(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<ggml::BlockIQ4_NL>(w, r, 32);
  for (int64_t i = 0; i < w.cols / 32; ++i, ++b) {
    iq4_levels(b->qs, out.codes + 32 * i);
    const float d = half(b->d);
    set_pair(out.scale16, out.offset16, 2 * static_cast<int>(i), d, -128.0f * d);
  }
}

void decode_iq4_xs(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<ggml::BlockIQ4_XS>(w, r, kQK_K);
  for (int64_t i = 0; i < w.cols / kQK_K; ++i, ++b) {
    const float d = half(b->d);
    for (int ib = 0; ib < 8; ++ib) {
      iq4_levels(b->qs + 16 * ib, out.codes + kQK_K * i + 32 * ib);
      const int ls = ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | (((b->scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      set_pair(out.scale16, out.offset16, static_cast<int>(16 * i) + 2 * ib, dl, -128.0f * dl);
    }
  }
}

// The 2-bit codes of q2_K and the low two bits of q3_K's: element 128h + 32s + l is bits 2s..2s+1
// of qs[32h + l].
inline void two_bit_codes(const uint8_t* qs, uint8_t* u) {
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) u[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
}

void decode_q2_K(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<ggml::BlockQ2_K>(w, r, kQK_K);
  for (int64_t i = 0; i < w.cols / kQK_K; ++i, ++b) {
    two_bit_codes(b->qs, out.codes + kQK_K * i);
    const float d = half(b->d), dmin = half(b->dmin);
    for (int j = 0; j < 16; ++j) {
      out.scale16[16 * i + j] = d * static_cast<float>(b->scales[j] & 0xF);
      out.offset16[16 * i + j] = -(dmin * static_cast<float>(b->scales[j] >> 4));
    }
  }
}

void decode_q3_K(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<ggml::BlockQ3_K>(w, r, kQK_K);
  for (int64_t i = 0; i < w.cols / kQK_K; ++i, ++b) {
    uint8_t* u = out.codes + kQK_K * i;
    // Low bits as q2_K's; the third is bit k of hmask[l] for element 32k + l (set: no -4 shift,
    // which here is u = low + 4 with the offset -4 s for every element).
    two_bit_codes(b->qs, u);
    for (int k = 0; k < 8; ++k)
      for (int l = 0; l < 32; ++l) u[32 * k + l] |= static_cast<uint8_t>(((b->hmask[l] >> k) & 1) << 2);
    const float d = half(b->d);
    for (int j = 0; j < 16; ++j) {
      const float dl = d * static_cast<float>(ggml::unpack_q3_scale(b->scales, j));
      out.scale16[16 * i + j] = dl;
      out.offset16[16 * i + j] = -4.0f * dl;
    }
  }
}

template <typename Block, bool kFifthBit>
void decode_q45_K(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<Block>(w, r, kQK_K);
  for (int64_t i = 0; i < w.cols / kQK_K; ++i, ++b) {
    uint8_t* u = out.codes + kQK_K * i;
    // Element 64c + l (l < 32) is the low nibble of qs[32c + l], 64c + 32 + l its high nibble;
    // q5_K's fifth bits are bits 2c and 2c + 1 of qh[l].
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) u[64 * c + l] = b->qs[32 * c + l] & 0x0F;
      for (int l = 0; l < 32; ++l) u[64 * c + 32 + l] = b->qs[32 * c + l] >> 4;
      if constexpr (kFifthBit) {
        for (int l = 0; l < 32; ++l) u[64 * c + l] |= static_cast<uint8_t>(((b->qh[l] >> (2 * c)) & 1) << 4);
        for (int l = 0; l < 32; ++l) u[64 * c + 32 + l] |= static_cast<uint8_t>(((b->qh[l] >> (2 * c + 1)) & 1) << 4);
      }
    }
    const float d = half(b->d), dmin = half(b->dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      ggml::unpack_k4_scale(j, b->scales, &sc, &m);
      set_pair(out.scale16, out.offset16, static_cast<int>(16 * i) + 2 * j, d * static_cast<float>(sc),
               -(dmin * static_cast<float>(m)));
    }
  }
}

void decode_q6_K(const QTensor& w, int64_t r, DecodedRow out) {
  const auto* b = row_blocks<ggml::BlockQ6_K>(w, r, kQK_K);
  for (int64_t i = 0; i < w.cols / kQK_K; ++i, ++b) {
    uint8_t* u = out.codes + kQK_K * i;
    // Element 128h + 32k + l: low nibble (k < 2) or high nibble of ql[64h + 32(k%2) + l], high
    // two bits at 2k of qh[32h + l].
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          const uint8_t lbyte = b->ql[64 * h + 32 * (k % 2) + l];
          const int low = k < 2 ? lbyte & 0xF : lbyte >> 4;
          u[128 * h + 32 * k + l] = static_cast<uint8_t>(low | (((b->qh[32 * h + l] >> (2 * k)) & 3) << 4));
        }
    const float d = half(b->d);
    for (int j = 0; j < 16; ++j) {
      const float dl = d * static_cast<float>(b->scales[j]);
      out.scale16[16 * i + j] = dl;
      out.offset16[16 * i + j] = -32.0f * dl;
    }
  }
}

// intB: the stored codes (code + 2^(B-1) for sym, code for asym) and per group s, -z s.
void decode_int(const QTensor& w, int64_t r, DecodedRow out) {
  const QuantScheme& sc = w.scheme;
  const int64_t G = w.group_size(), gpr = w.groups_per_row();
  unpack_int_codes(w, r, out.codes);
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t gi = r * gpr + g;
    const float s = sc.scale_f16 ? f16_to_f32(w.scales_f16[gi]) : w.scales_f32[gi];
    const int z = sc.symmetric ? (1 << (sc.bits - 1)) : w.zero_points[gi];
    const float o = -static_cast<float>(z) * s;
    for (int64_t j = g * G / 16; j < (g + 1) * G / 16; ++j) {
      out.scale16[j] = s;
      out.offset16[j] = o;
    }
  }
}

// Decodes row r of w (decodable(w)) into out: w.cols codes, w.cols / 16 scales and offsets.
void decode_row_any(const QTensor& w, int64_t r, DecodedRow out) {
  switch (w.scheme.format) {
    case QuantFormat::kInt: decode_int(w, r, out); return;
    case QuantFormat::kQ8_0: decode_q8_0(w, r, out); return;
    case QuantFormat::kQ4_0: decode_legacy<BlockQ4_0, false, false>(w, r, out, 8.0f); return;
    case QuantFormat::kQ4_1: decode_legacy<ggml::BlockQ4_1, false, true>(w, r, out); return;
    case QuantFormat::kQ5_0: decode_legacy<ggml::BlockQ5_0, true, false>(w, r, out, 16.0f); return;
    case QuantFormat::kQ5_1: decode_legacy<ggml::BlockQ5_1, true, true>(w, r, out); return;
    case QuantFormat::kIQ4_NL: decode_iq4_nl(w, r, out); return;
    case QuantFormat::kIQ4_XS: decode_iq4_xs(w, r, out); return;
    case QuantFormat::kQ2_K: decode_q2_K(w, r, out); return;
    case QuantFormat::kQ3_K: decode_q3_K(w, r, out); return;
    case QuantFormat::kQ4_K: decode_q45_K<ggml::BlockQ4_K, false>(w, r, out); return;
    case QuantFormat::kQ5_K: decode_q45_K<ggml::BlockQ5_K, true>(w, r, out); return;
    case QuantFormat::kQ6_K: decode_q6_K(w, r, out); return;
    case QuantFormat::kBF16:
    case QuantFormat::kF16:
    case QuantFormat::kF32: return;  // not decodable (float rows)
  }
}

}  // namespace
}  // namespace kllens::qk
