// ggml's K-quants Q2_K..Q6_K (256-element super-blocks), quantized and dequantized byte for byte
// as ggml does it at llama.cpp 3f545becc, so a kllens GGUF holds exactly what llama-quantize
// writes. Hand-written because no Debian package ships ggml's quantizers as a library; the code
// follows the documented algorithms (../shared/docs/llamacpp-formats-and-hybrids.md §1.3-§1.5),
// it is not a copy. Tested against ggml's own output (data/fixtures/ggml-quants).
//
// Which algorithm runs is what ggml_quantize_chunk picks: without an importance vector the
// reference quantizer (quantize_row_<t>_ref), with one the `_impl` quantizer, row by row.
// Every format has two stages: a per-sub-block search for (scale, min) and codes L, then the
// sub-block scales are themselves quantized, stored as fp16 and read back, and each sub-block's
// codes are recomputed from the stored values. A sub-block whose stored scale decodes to 0 keeps
// the first stage's codes (ggml's `if (!d) continue`), so that stage decides bytes too.
//
// Bit-exactness: sums accumulate sequentially in float in index order, this file is compiled
// with -ffp-contract=off, divisions stay divisions, and intermediate codes live in the integer
// types ggml keeps them in (uint8_t/int8_t wrap-arounds included).
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "quant/ggml_kpack.h"
#include "quant/ggml_quants.h"
#include "quant/ggml_search.h"

namespace kllens::ggml {

namespace {

constexpr int kGroups16 = kQK_K / 16;  // Q2_K, Q3_K, Q6_K: 16 sub-blocks of 16
constexpr int kGroups32 = kQK_K / 32;  // Q4_K, Q5_K: 8 sub-blocks of 32

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

float sum_of_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

float sum_of(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i];
  return s;
}

// The importance weights of the `_impl` quantizers: qw·√(sigma2 + x²).
void imatrix_weights(const float* x, const float* qw, float sigma2, int n, float* w) {
  for (int i = 0; i < n; ++i) w[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
}

// 2-bit codes of 256 elements: byte 32h + r%32 of half h holds element 128h + r at bits 2(r/32).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) |
                                           (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

int unpack_2bit(const uint8_t* qs, int e) {
  const int r = e % 128;
  return (qs[32 * (e / 128) + r % 32] >> (2 * (r / 32))) & 3;
}

// --- Q4_K / Q5_K scale bytes: 8 6-bit scales and 8 6-bit mins in 12 bytes --------------------

// --- Q3_K scale bytes: 16 6-bit codes (value + 32) in 12 bytes ------------------------------

void pack_q3_scales(const int* codes, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < kGroups16; ++j) {
    const int l = codes[j];
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((l & 0xF) << 4));
    }
    scales[j % 4 + 8] = static_cast<uint8_t>(scales[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
  }
}


// --- Q2_K --------------------------------------------------------------------------------------

// Second stage shared by ref and impl: recompute each sub-block's codes from the stored d, dmin
// and 4-bit scale/min codes, then pack.
void finish_q2_K(const float* x, uint8_t* L, BlockQ2_K* y) {
  const float d_all = f16_to_f32(y->d);
  const float m_all = f16_to_f32(y->dmin);
  for (int j = 0; j < kGroups16; ++j) {
    const float d = d_all * (y->scales[j] & 0xF);
    if (!d) continue;
    const float dm = m_all * (y->scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int((x[16 * j + ii] + dm) / d);
      L[16 * j + ii] = static_cast<uint8_t>(clamp_int(l, 0, 3));
    }
  }
  pack_2bit(L, y->qs);
}

void quantize_block_q2_K_ref(const float* x, BlockQ2_K* y) {
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float weights[16];
  float mins[kGroups16];
  float scales[kGroups16];
  constexpr float kQ4Scale = 15.0f;

  // Scales are positive (the min is subtracted), so only the largest one matters.
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < kGroups16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                 0.1f, 15, true);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }

  if (max_scale > 0) {
    const float iscale = kQ4Scale / max_scale;
    for (int j = 0; j < kGroups16; ++j) {
      y->scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
    }
    y->d = f32_to_f16(max_scale / kQ4Scale);
  } else {
    std::memset(y->scales, 0, sizeof(y->scales));
    y->d = f32_to_f16(0.0f);
  }
  if (max_min > 0) {
    const float iscale = kQ4Scale / max_min;
    for (int j = 0; j < kGroups16; ++j) {
      const int l = nearest_int(iscale * mins[j]);
      y->scales[j] = static_cast<uint8_t>(y->scales[j] | (l << 4));
    }
    y->dmin = f32_to_f16(max_min / kQ4Scale);
  } else {
    y->dmin = f32_to_f16(0.0f);
  }
  finish_q2_K(x, L, y);
}

void quantize_block_q2_K_impl(const float* x, BlockQ2_K* y, const float* qw) {
  uint8_t L[kQK_K];
  uint8_t Laux[16];
  float mins[kGroups16];
  float scales[kGroups16];
  float sw[kGroups16];
  float weight[16];
  uint8_t Ls[kGroups16], Lm[kGroups16];

  const float sigma2 = sum_of_squares(x, kQK_K) / kQK_K;  // no factor 2 here, unlike Q3..Q5_K
  for (int j = 0; j < kGroups16; ++j) {
    imatrix_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
    sw[j] = sum_of(weight, 16);
    scales[j] = make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36, false);
  }
  // Sub-block scales and mins are quantized to 4 bits, weighted by their sub-block's weight.
  const float dm = make_qp_quants(kGroups16, 15, scales, Ls, sw);
  const float mm = make_qp_quants(kGroups16, 15, mins, Lm, sw);
  y->d = f32_to_f16(dm);
  y->dmin = f32_to_f16(mm);
  for (int j = 0; j < kGroups16; ++j) y->scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
  finish_q2_K(x, L, y);
}

// --- Q3_K --------------------------------------------------------------------------------------

// Second stage shared by ref and impl: codes from the stored d and 6-bit scales, high bits to
// hmask (element e at byte e%32, bit e/32), low 2 bits packed as in Q2_K.
void finish_q3_K(const float* x, int8_t* L, BlockQ3_K* y) {
  const float d_all = f16_to_f32(y->d);
  for (int j = 0; j < kGroups16; ++j) {
    const float d = d_all * unpack_q3_scale(y->scales, j);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<int8_t>(clamp_int(l, -4, 3) + 4);
    }
  }
  std::memset(y->hmask, 0, sizeof(y->hmask));
  uint8_t low[kQK_K];
  for (int e = 0; e < kQK_K; ++e) {
    int l = L[e];
    if (l > 3) {
      y->hmask[e % 32] = static_cast<uint8_t>(y->hmask[e % 32] | (1 << (e / 32)));
      l -= 4;
    }
    low[e] = static_cast<uint8_t>(l);
  }
  pack_2bit(low, y->qs);
}

void quantize_block_q3_K_ref(const float* x, BlockQ3_K* y) {
  int8_t L[kQK_K];
  float scales[kGroups16];

  // Scales are signed here (symmetric codes); keep the one with the largest magnitude.
  float max_scale = 0;
  float amax = 0;
  for (int j = 0; j < kGroups16; ++j) {
    scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
    const float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }

  if (max_scale) {
    const float iscale = -32.0f / max_scale;
    int codes[kGroups16];
    for (int j = 0; j < kGroups16; ++j) {
      const int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
      codes[j] = clamp_int(l, -32, 31) + 32;
    }
    pack_q3_scales(codes, y->scales);
    y->d = f32_to_f16(1 / iscale);
  } else {
    std::memset(y->scales, 0, sizeof(y->scales));
    y->d = f32_to_f16(0.0f);
  }
  finish_q3_K(x, L, y);
}

void quantize_block_q3_K_impl(const float* x, BlockQ3_K* y, const float* qw) {
  int8_t L[kQK_K];
  float scales[kGroups16];
  float weight[16];
  float sw[kGroups16];
  int8_t Ls[kGroups16];

  const float sigma2 = 2 * sum_of_squares(x, kQK_K) / kQK_K;
  for (int j = 0; j < kGroups16; ++j) {
    imatrix_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
    sw[j] = sum_of(weight, 16);
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
  }
  // The 16 signed scales are themselves quantized to 6 bits; Ls already carries the +32.
  const float d_block = make_qx_quants(kGroups16, 32, scales, Ls, 1, sw);
  int codes[kGroups16];
  for (int j = 0; j < kGroups16; ++j) codes[j] = Ls[j];
  pack_q3_scales(codes, y->scales);
  y->d = f32_to_f16(d_block);
  finish_q3_K(x, L, y);
}

// --- Q4_K and Q5_K -----------------------------------------------------------------------------

// First stage of the reference path, shared by Q4_K and Q5_K: per 32-group weights av_x + |x|
// (av_x the group's RMS) and an asymmetric search; returns the largest scale and min.
void search_k_groups_ref(const float* x, int nmax, float rmin, int nstep, uint8_t* L,
                         float* scales, float* mins, float* max_scale, float* max_min) {
  uint8_t Laux[32];
  float weights[32];
  *max_scale = 0;
  *max_min = 0;
  for (int j = 0; j < kGroups32; ++j) {
    const float* xg = x + 32 * j;
    const float av_x = std::sqrt(sum_of_squares(xg, 32) / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xg[l]);
    scales[j] = make_qkx2_quants(32, nmax, xg, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f,
                                 nstep, false);
    if (scales[j] > *max_scale) *max_scale = scales[j];
    if (mins[j] > *max_min) *max_min = mins[j];
  }
}

// The reference path's 6-bit codes of the sub-block scales and mins, relative to the largest.
void k_scale_codes_ref(const float* scales, const float* mins, float max_scale, float max_min,
                       uint8_t* ls, uint8_t* lm) {
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  for (int j = 0; j < kGroups32; ++j) {
    const uint8_t s = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    const uint8_t m = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    ls[j] = s < 63 ? s : 63;
    lm[j] = m < 63 ? m : 63;
  }
}

// First stage of the importance path, shared by Q4_K and Q5_K: weights qw·√(sigma2 + x²) with
// sigma2 = 2·mean(x²) of the super-block, an asymmetric search per group, then the scales and
// mins quantized to 6 bits by make_qp_quants weighted by each group's total weight.
void search_k_groups_impl(const float* x, const float* qw, int nmax, uint8_t* L, uint8_t* Ls,
                          uint8_t* Lm, float* d_block, float* m_block) {
  uint8_t Laux[32];
  float weights[32];
  float sw[kGroups32];
  float mins[kGroups32];
  float scales[kGroups32];
  const float sigma2 = 2 * sum_of_squares(x, kQK_K) / kQK_K;
  for (int j = 0; j < kGroups32; ++j) {
    imatrix_weights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
    sw[j] = sum_of(weights, 32);
    scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                 -0.9f, 0.05f, 36, false);
  }
  *d_block = make_qp_quants(kGroups32, 63, scales, Ls, sw);
  *m_block = make_qp_quants(kGroups32, 63, mins, Lm, sw);
}

// Second stage shared by Q4_K and Q5_K: codes 0..nmax from the stored d, dmin and scale bytes.
void requantize_k_groups(const float* x, int nmax, const uint8_t* scale_bytes, uint16_t d_bits,
                         uint16_t dmin_bits, uint8_t* L) {
  const float d_all = f16_to_f32(d_bits);
  const float m_all = f16_to_f32(dmin_bits);
  for (int j = 0; j < kGroups32; ++j) {
    uint8_t sc, m;
    unpack_k4_scale(j, scale_bytes, &sc, &m);
    const float d = d_all * sc;
    if (!d) continue;
    const float dm = m_all * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(clamp_int(l, 0, nmax));
    }
  }
}

void quantize_block_q4_K(const float* x, BlockQ4_K* y, const float* qw) {
  uint8_t L[kQK_K];
  uint8_t ls[kGroups32], lm[kGroups32];
  std::memset(y->scales, 0, sizeof(y->scales));
  if (qw == nullptr) {
    float scales[kGroups32], mins[kGroups32], max_scale, max_min;
    search_k_groups_ref(x, 15, -1.0f, 20, L, scales, mins, &max_scale, &max_min);
    k_scale_codes_ref(scales, mins, max_scale, max_min, ls, lm);
    pack_k4_scales(ls, lm, y->scales);
    y->d = f32_to_f16(max_scale / 63.0f);
    y->dmin = f32_to_f16(max_min / 63.0f);
  } else {
    float d_block, m_block;
    search_k_groups_impl(x, qw, 15, L, ls, lm, &d_block, &m_block);
    pack_k4_scales(ls, lm, y->scales);  // Q4_K's impl does not clamp the codes to 63
    y->d = f32_to_f16(d_block);
    y->dmin = f32_to_f16(m_block);
  }
  requantize_k_groups(x, 15, y->scales, y->d, y->dmin, L);
  pack_q4_K_codes(L, y->qs);
}

void quantize_block_q5_K(const float* x, BlockQ5_K* y, const float* qw) {
  uint8_t L[kQK_K];
  uint8_t ls[kGroups32], lm[kGroups32];
  std::memset(y->scales, 0, sizeof(y->scales));
  if (qw == nullptr) {
    float scales[kGroups32], mins[kGroups32], max_scale, max_min;
    search_k_groups_ref(x, 31, -0.5f, 15, L, scales, mins, &max_scale, &max_min);
    k_scale_codes_ref(scales, mins, max_scale, max_min, ls, lm);
    pack_k4_scales(ls, lm, y->scales);
    y->d = f32_to_f16(max_scale / 63.0f);
    y->dmin = f32_to_f16(max_min / 63.0f);
  } else {
    float d_block, m_block;
    search_k_groups_impl(x, qw, 31, L, ls, lm, &d_block, &m_block);
    for (int j = 0; j < kGroups32; ++j) {
      ls[j] = ls[j] < 63 ? ls[j] : 63;
      lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    pack_k4_scales(ls, lm, y->scales);
    y->d = f32_to_f16(d_block);
    y->dmin = f32_to_f16(m_block);
  }
  requantize_k_groups(x, 31, y->scales, y->d, y->dmin, L);
  pack_q5_K_codes(L, y->qh, y->qs);
}

// --- Q6_K --------------------------------------------------------------------------------------

// Ref and impl differ only in make_qx_quants' weights: x² without qw, the raw qw with it.
void quantize_block_q6_K(const float* x, BlockQ6_K* y, const float* qw) {
  int8_t L[kQK_K];
  float scales[kGroups16];

  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < kGroups16; ++ib) {
    const float scale =
        make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : nullptr);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scale;
    }
  }
  if (max_abs_scale < kGroupMaxEps) {  // the whole super-block is zero: every byte 0
    std::memset(y, 0, sizeof(*y));
    y->d = f32_to_f16(0.0f);
    return;
  }

  const float iscale = -128.0f / max_scale;
  y->d = f32_to_f16(1 / iscale);
  for (int ib = 0; ib < kGroups16; ++ib) {
    const int s = nearest_int(iscale * scales[ib]);
    y->scales[ib] = static_cast<int8_t>(s < 127 ? s : 127);
  }
  const float d_all = f16_to_f32(y->d);
  for (int j = 0; j < kGroups16; ++j) {
    const float d = d_all * y->scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<int8_t>(clamp_int(l, -32, 31) + 32);
    }
  }

  pack_q6_K_codes(L, y);
}

}  // namespace

// --- packers shared with the refined quantizers (quant/ggml_kpack.h) -----------------------

void pack_k4_scales(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  for (int j = 0; j < kGroups32; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      // Low nibbles in bytes 8..11, high 2 bits in the top of bytes 0..7.
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales[j - 4] = static_cast<uint8_t>(scales[j - 4] | ((ls[j] >> 4) << 6));
      scales[j] = static_cast<uint8_t>(scales[j] | ((lm[j] >> 4) << 6));
    }
  }
}

// Q4_K nibbles: 64-chunk c, element r < 32 in the low nibble of qs[32c + r], r >= 32 high.
void pack_q4_K_codes(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 64) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 2 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

// Q5_K: nibbles as Q4_K, the fifth bit of chunk c at bit 2c (low half) / 2c+1 (high half) of qh.
void pack_q5_K_codes(const uint8_t* L, uint8_t* qh, uint8_t* qs) {
  std::memset(qh, 0, kQK_K / 8);
  for (int c = 0; c < kQK_K / 64; ++c) {
    const uint8_t bit_lo = static_cast<uint8_t>(1 << (2 * c));
    const uint8_t bit_hi = static_cast<uint8_t>(2 << (2 * c));
    for (int j = 0; j < 32; ++j) {
      int l1 = L[64 * c + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | bit_lo);
      }
      int l2 = L[64 * c + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | bit_hi);
      }
      qs[32 * c + j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
  }
}

void pack_q6_K_codes(const int8_t* L, BlockQ6_K* y) {
  // Per 128-half h: low nibbles of elements l, l+32 (ql[l], ql[l+32] low) and l+64, l+96 (their
  // high nibbles); the two high bits of all four in qh[l] at bits 0, 2, 4, 6.
  for (int h = 0; h < 2; ++h) {
    const int8_t* Lh = L + 128 * h;
    uint8_t* ql = y->ql + 64 * h;
    uint8_t* qh = y->qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = Lh[l] & 0xF, q2 = Lh[l + 32] & 0xF;
      const int q3 = Lh[l + 64] & 0xF, q4 = Lh[l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                   ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
    }
  }
}

// --- rows --------------------------------------------------------------------------------------
// The importance path takes the super-block's slice of the row's column weights.

void quantize_row_q2_K(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ2_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    if (qw == nullptr) {
      quantize_block_q2_K_ref(x + kQK_K * i, y + i);
    } else {
      quantize_block_q2_K_impl(x + kQK_K * i, y + i, qw + kQK_K * i);
    }
  }
}

void quantize_row_q3_K(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ3_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    if (qw == nullptr) {
      quantize_block_q3_K_ref(x + kQK_K * i, y + i);
    } else {
      quantize_block_q3_K_impl(x + kQK_K * i, y + i, qw + kQK_K * i);
    }
  }
}

void quantize_row_q4_K(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    quantize_block_q4_K(x + kQK_K * i, y + i, qw ? qw + kQK_K * i : nullptr);
  }
}

void quantize_row_q5_K(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    quantize_block_q5_K(x + kQK_K * i, y + i, qw ? qw + kQK_K * i : nullptr);
  }
}

void quantize_row_q6_K(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    quantize_block_q6_K(x + kQK_K * i, y + i, qw ? qw + kQK_K * i : nullptr);
  }
}

// --- dequantization (element e of a super-block; the float expressions are ggml's) -------------

void dequantize_row_q2_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, ++b, y += kQK_K) {
    const float d = f16_to_f32(b->d);
    const float min = f16_to_f32(b->dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const uint8_t sc = b->scales[e / 16];
      const float dl = d * (sc & 0xF);
      const float ml = min * (sc >> 4);
      y[e] = dl * unpack_2bit(b->qs, e) - ml;
    }
  }
}

void dequantize_row_q3_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, ++b, y += kQK_K) {
    const float d_all = f16_to_f32(b->d);
    for (int e = 0; e < kQK_K; ++e) {
      const float dl = d_all * unpack_q3_scale(b->scales, e / 16);
      const bool high = (b->hmask[e % 32] >> (e / 32)) & 1;
      y[e] = dl * (unpack_2bit(b->qs, e) - (high ? 0 : 4));
    }
  }
}

void dequantize_row_q4_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, ++b, y += kQK_K) {
    const float d = f16_to_f32(b->d);
    const float min = f16_to_f32(b->dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const int c = e / 64, r = e % 64;
      uint8_t sc, m;
      unpack_k4_scale(e / 32, b->scales, &sc, &m);
      const uint8_t byte = b->qs[32 * c + r % 32];
      const int q = r < 32 ? byte & 0xF : byte >> 4;
      const float dl = d * sc;
      const float ml = min * m;
      y[e] = dl * q - ml;
    }
  }
}

void dequantize_row_q5_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, ++b, y += kQK_K) {
    const float d = f16_to_f32(b->d);
    const float min = f16_to_f32(b->dmin);
    for (int e = 0; e < kQK_K; ++e) {
      const int c = e / 64, r = e % 64;
      uint8_t sc, m;
      unpack_k4_scale(e / 32, b->scales, &sc, &m);
      const uint8_t byte = b->qs[32 * c + r % 32];
      const int low = r < 32 ? byte & 0xF : byte >> 4;
      const bool high = (b->qh[r % 32] >> (2 * c + (r < 32 ? 0 : 1))) & 1;
      const float dl = d * sc;
      const float ml = min * m;
      y[e] = dl * (low + (high ? 16 : 0)) - ml;
    }
  }
}

void dequantize_row_q6_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, ++b, y += kQK_K) {
    const float d = f16_to_f32(b->d);
    for (int e = 0; e < kQK_K; ++e) {
      // Quarter k of half h: elements 128h + 32k + l, l < 32.
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t lbyte = b->ql[64 * h + l + 32 * (k % 2)];
      const int low = k < 2 ? lbyte & 0xF : lbyte >> 4;
      const int high = (b->qh[32 * h + l] >> (2 * k)) & 3;
      const int q = (low | (high << 4)) - 32;
      y[e] = d * b->scales[e / 16] * q;
    }
  }
}

}  // namespace kllens::ggml
