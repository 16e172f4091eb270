// ggml's legacy 32-element formats (q4_0, q4_1, q5_0, q5_1, q8_0) and its non-linear 4-bit formats
// (iq4_nl, iq4_xs), quantized exactly as llama-quantize quantizes them: ggml_quantize_chunk ->
// quantize_<t>, which runs the reference quantizer without an importance vector and the `_impl`
// search with one (../shared/docs/llamacpp-formats-and-hybrids.md §1.5). iq4_nl / iq4_xs have no
// separate reference path in llama-quantize: both cases run the same search (ntry = 7) and only
// the element weights differ.
//
// Bit-exactness rules followed throughout (§1.1): every float expression keeps ggml's operand
// order and its two-step a*b + c (this file is compiled with -ffp-contract=off, as ggml-base is
// on x86-64), sums accumulate sequentially in float in index order, ggml's reciprocals are
// multiplied rather than divided, and the truncating integer casts of the reference quantizers
// are kept (their arguments are >= 0, so they are floors).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "quant/ggml_quants.h"
#include "quant/ggml_search.h"

namespace kllens::ggml {
namespace {

constexpr int kQK = 32;  // elements per legacy / iq4_nl block and per iq4_xs sub-block

// The first element of largest |x| (strict comparison, so the earliest wins a tie), signed: the
// symmetric formats map it to their most negative code.
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// Σx²/n over the whole row: the `_impl` quantizers of q4_0..q5_1 take sigma2 over n_per_row,
// not per block (§1.5), and with no factor 2 (unlike iq4 and the K-quants).
float row_sigma2(const float* x, int64_t n) {
  float sum_x2 = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

// The importance weights of one block: qw·√(sigma2 + x²), so that a column the imatrix barely
// saw still counts in proportion to its own magnitude.
void imatrix_weights(const float* xb, const float* qw, float sigma2, int n, float* weight) {
  for (int j = 0; j < n; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

// Packs 32 codes of up to 4 bits: byte j holds element j (low nibble) and j + 16 (high).
void pack_nibbles(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
}

// Packs 32 5-bit codes: the low nibbles as pack_nibbles, bit 4 of element j into bit j of the
// little-endian u32 qh.
void pack_5bit(const uint8_t* L, uint8_t* qs, uint8_t* qh) {
  pack_nibbles(L, qs);
  uint32_t h = 0;
  for (int j = 0; j < kQK; ++j) h |= static_cast<uint32_t>((L[j] >> 4) & 1) << j;
  std::memcpy(qh, &h, sizeof(h));
}

uint32_t load_qh(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, sizeof(h));
  return h;
}

// --- reference quantizers (no importance vector) ------------------------------------------------

// quantize_row_q4_1_ref, one block: d = (max - min)/15 over the raw block min and max (min is
// not clamped to <= 0), code = min(15, trunc((x - min)·id + 0.5)).
void q4_1_ref(const float* x, BlockQ4_1* y) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / ((1 << 4) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(min);
  uint8_t L[kQK];
  for (int j = 0; j < kQK; ++j) {
    const float v = (x[j] - min) * id;
    L[j] = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(v + 0.5f))));
  }
  pack_nibbles(L, y->qs);
}

// quantize_row_q5_0_ref, one block: d = max/-16, code = min(31, trunc(x·id + 16.5)).
void q5_0_ref(const float* x, BlockQ5_0* y) {
  const float max = signed_absmax(x, kQK);
  const float d = max / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  uint8_t L[kQK];
  for (int j = 0; j < kQK; ++j) {
    const float v = x[j] * id;
    L[j] = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(v + 16.5f))));
  }
  pack_5bit(L, y->qs, y->qh);
}

// quantize_row_q5_1_ref, one block: d = (max - min)/31, code = trunc((x - min)·id + 0.5) with no
// clamp (the argument never reaches 32: (max - min)·id rounds to at most 31 + a few ulps).
void q5_1_ref(const float* x, BlockQ5_1* y) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / ((1 << 5) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(min);
  uint8_t L[kQK];
  for (int j = 0; j < kQK; ++j) {
    const float v = (x[j] - min) * id;
    L[j] = static_cast<uint8_t>(v + 0.5f);
  }
  pack_5bit(L, y->qs, y->qh);
}

// --- iq4_nl / iq4_xs (ggml's quantize_row_iq4_nl_impl) -----------------------------------------

// The scale search of one 32-element (sub-)block against the non-linear levels, given the element
// weights. Starts from d = -max/values[0] (ntry > 0; max/values[0] otherwise), fits the weighted
// least-squares scale of the nearest-level codes, then tries the 2·ntry+1 inverse scales
// (itry + values[0])/max and keeps the fit of largest (Σwqx)²/Σwq². Returns 0 for a block below
// kGroupMaxEps, and 0 when Σwq² = 0 (an imatrix with zeros over the block) instead of 0/0. The
// codes are not returned: the callers recompute them from the final (and for iq4_xs, requantized)
// scale, as ggml does on the ntry > 0 path.
float iq4_block_scale(const float* xb, const float* weight, int ntry) {
  const int8_t* values = kValuesIQ4NL;
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < kGroupMaxEps) return 0.0f;

  // Weighted sums of the codes chosen with inverse scale id; (w·q)·x and (w·q)·q as ggml groups them.
  auto fit = [&](float id, float* sumqx, float* sumq2) {
    float sqx = 0.0f, sq2 = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      const float q = values[best_index_int8(16, values, id * xb[j])];
      const float w = weight[j];
      sqx += w * q * xb[j];
      sq2 += w * q * q;
    }
    *sumqx = sqx;
    *sumq2 = sq2;
  };

  float d = ntry > 0 ? -max / values[0] : max / values[0];
  float sumqx, sumq2;
  fit(1.0f / d, &sumqx, &sumq2);
  d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
  float best = d * sumqx;
  for (int itry = -ntry; itry <= ntry; ++itry) {
    const float id = static_cast<float>(itry + values[0]) / max;
    fit(id, &sumqx, &sumq2);
    if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// llama-quantize's ntry: quantize_iq4_nl / quantize_iq4_xs pass 7 with and without an imatrix
// (the ntry = -1 quantize_row_iq4_nl_ref is never called by it).
constexpr int kIQ4Ntry = 7;

// Element weights of one 32-block for the iq4 search: x² without an imatrix, qw·√(sigma2 + x²)
// with one, sigma2 = 2·Σx²/super over the enclosing (super-)block.
void iq4_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  if (qw) {
    imatrix_weights(xb, qw, sigma2, kQK, weight);
  } else {
    for (int j = 0; j < kQK; ++j) weight[j] = xb[j] * xb[j];
  }
}

float iq4_sigma2(const float* x, int n) {
  float sigma2 = 0.0f;
  for (int j = 0; j < n; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.0f / static_cast<float>(n);
  return sigma2;
}

// Codes of 32 elements for inverse scale id: the nearest level (ties to the higher one, so 0 -> 8).
void iq4_codes(const float* xb, float id, uint8_t* L) {
  for (int j = 0; j < kQK; ++j) L[j] = static_cast<uint8_t>(best_index_int8(16, kValuesIQ4NL, id * xb[j]));
}

void iq4_nl_block(const float* x, const float* qw, BlockIQ4_NL* y) {
  float weight[kQK];
  iq4_weights(x, qw, iq4_sigma2(x, kQK), weight);
  const float d = iq4_block_scale(x, weight, kIQ4Ntry);
  y->d = f32_to_f16(d);
  // The codes come from the fp32 scale, not the fp16 one stored.
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  uint8_t L[kQK];
  iq4_codes(x, id, L);
  pack_nibbles(L, y->qs);
}

void iq4_xs_block(const float* x, const float* qw, BlockIQ4_XS* y) {
  constexpr int kSub = kQK_K / kQK;
  const float sigma2 = iq4_sigma2(x, kQK_K);
  float scales[kSub];
  float max_scale = 0.0f, amax_scale = 0.0f;
  for (int ib = 0; ib < kSub; ++ib) {
    float weight[kQK];
    iq4_weights(x + kQK * ib, qw ? qw + kQK * ib : nullptr, sigma2, weight);
    scales[ib] = iq4_block_scale(x + kQK * ib, weight, kIQ4Ntry);
    if (std::fabs(scales[ib]) > amax_scale) {
      amax_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  // The super-scale maps the largest sub-scale to code -32; an all-zero super-block gives
  // d = -0.0 (fp16 0x8000) and every sub-scale code 32.
  const float d = -max_scale / 32;
  y->d = f32_to_f16(d);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->scales_h = 0;
  std::memset(y->scales_l, 0, sizeof(y->scales_l));
  for (int ib = 0; ib < kSub; ++ib) {
    const int l = std::clamp(nearest_int(id * scales[ib]), -32, 31);
    // The codes use the fp32 d·l, not the fp16 d of the block.
    const float dl = d * static_cast<float>(l);
    const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
    uint8_t L[kQK];
    iq4_codes(x + kQK * ib, idl, L);
    pack_nibbles(L, y->qs + 16 * ib);
    const int code = l + 32;
    y->scales_l[ib / 2] |= static_cast<uint8_t>((code & 0x0F) << (4 * (ib % 2)));
    y->scales_h |= static_cast<uint16_t>((code >> 4) << (2 * ib));
  }
}

}  // namespace

// --- row quantizers ----------------------------------------------------------------------------

void quantize_row_q4_0(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ4_0*>(dst);
  const int64_t nb = n / kQK;
  if (!qw) {
    for (int64_t ib = 0; ib < nb; ++ib) quantize_block_q4_0(x + kQK * ib, y + ib);
    return;
  }
  // quantize_row_q4_0_impl: make_qx_quants' weighted search; its codes (already offset by 8)
  // are stored as they are, with no requantization against the fp16 scale.
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    float weight[kQK];
    imatrix_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    int8_t L[kQK];
    const float d = make_qx_quants(kQK, 8, xb, L, 1, weight);
    y[ib].d = f32_to_f16(d);
    pack_nibbles(reinterpret_cast<const uint8_t*>(L), y[ib].qs);
  }
}

void quantize_row_q4_1(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ4_1*>(dst);
  const int64_t nb = n / kQK;
  if (!qw) {
    for (int64_t ib = 0; ib < nb; ++ib) q4_1_ref(x + kQK * ib, y + ib);
    return;
  }
  // quantize_row_q4_1_impl: make_qkx3_quants returns the scale and a positive offset -min.
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    float weight[kQK];
    imatrix_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    uint8_t L[kQK], Laux[kQK];
    float the_min = 0.0f;
    const float d = make_qkx3_quants(kQK, 15, xb, weight, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-the_min);
    pack_nibbles(L, y[ib].qs);
  }
}

void quantize_row_q5_0(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ5_0*>(dst);
  const int64_t nb = n / kQK;
  if (!qw) {
    for (int64_t ib = 0; ib < nb; ++ib) q5_0_ref(x + kQK * ib, y + ib);
    return;
  }
  // quantize_row_q5_0_impl: as q4_0's with nmax 16 (codes 0..31).
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    float weight[kQK];
    imatrix_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    int8_t L[kQK];
    const float d = make_qx_quants(kQK, 16, xb, L, 1, weight);
    y[ib].d = f32_to_f16(d);
    pack_5bit(reinterpret_cast<const uint8_t*>(L), y[ib].qs, y[ib].qh);
  }
}

void quantize_row_q5_1(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockQ5_1*>(dst);
  const int64_t nb = n / kQK;
  if (!qw) {
    for (int64_t ib = 0; ib < nb; ++ib) q5_1_ref(x + kQK * ib, y + ib);
    return;
  }
  // quantize_row_q5_1_impl: as q4_1's with nmax 31.
  const float sigma2 = row_sigma2(x, n);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    float weight[kQK];
    imatrix_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    uint8_t L[kQK], Laux[kQK];
    float the_min = 0.0f;
    const float d = make_qkx3_quants(kQK, 31, xb, weight, L, &the_min, Laux, -0.9f, 0.05f, 36, false);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-the_min);
    pack_5bit(L, y[ib].qs, y[ib].qh);
  }
}

// quantize_q8_0 ignores the importance vector: it always runs the reference quantizer.
void quantize_row_q8_0(const float* x, void* dst, int64_t n, const float* /*qw*/) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t ib = 0; ib < n / kQK; ++ib) quantize_block_q8_0(x + kQK * ib, y + ib);
}

// quantize_iq4_nl: one independent search per 32-block (sigma2 over that block alone).
void quantize_row_iq4_nl(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockIQ4_NL*>(dst);
  for (int64_t ib = 0; ib < n / kQK; ++ib)
    iq4_nl_block(x + kQK * ib, qw ? qw + kQK * ib : nullptr, y + ib);
}

// quantize_iq4_xs: 256-element super-blocks of 8 sub-blocks with 6-bit sub-scales.
void quantize_row_iq4_xs(const float* x, void* dst, int64_t n, const float* qw) {
  auto* y = static_cast<BlockIQ4_XS*>(dst);
  for (int64_t ib = 0; ib < n / kQK_K; ++ib)
    iq4_xs_block(x + kQK_K * ib, qw ? qw + kQK_K * ib : nullptr, y + ib);
}

// --- dequantizers (ggml's dequantize_row_*: float(code)·d, then + m for the offset formats) ------

void dequantize_row_q4_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) dequantize_block_q4_0(x[ib], y + kQK * ib);
}

void dequantize_row_q4_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_1*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(x[ib].d);
    const float m = f16_to_f32(x[ib].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(x[ib].qs[j] & 0x0F) * d + m;
      y[j + 16] = static_cast<float>(x[ib].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_row_q5_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(x[ib].d);
    const uint32_t qh = load_qh(x[ib].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = (x[ib].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1) << 4);
      const int q1 = (x[ib].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
      y[j] = static_cast<float>(q0 - 16) * d;
      y[j + 16] = static_cast<float>(q1 - 16) * d;
    }
  }
}

void dequantize_row_q5_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_1*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(x[ib].d);
    const float m = f16_to_f32(x[ib].m);
    const uint32_t qh = load_qh(x[ib].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = (x[ib].qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1) << 4);
      const int q1 = (x[ib].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
      y[j] = static_cast<float>(q0) * d + m;
      y[j + 16] = static_cast<float>(q1) * d + m;
    }
  }
}

void dequantize_row_q8_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ8_0*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib) dequantize_block_q8_0(x[ib], y + kQK * ib);
}

void dequantize_row_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockIQ4_NL*>(src);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(x[ib].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * static_cast<float>(kValuesIQ4NL[x[ib].qs[j] & 0x0F]);
      y[j + 16] = d * static_cast<float>(kValuesIQ4NL[x[ib].qs[j] >> 4]);
    }
  }
}

// Sub-block ib's scale is d·(ls - 32), ls = 4 bits of scales_l[ib/2] | 2 bits of scales_h << 4,
// rounded to float once and then applied to each level.
void dequantize_row_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int ib = 0; ib < kQK_K / kQK; ++ib, y += kQK) {
      const int ls = ((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) |
                     (((x[i].scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      const uint8_t* qs = x[i].qs + 16 * ib;
      for (int j = 0; j < kQK / 2; ++j) {
        y[j] = dl * static_cast<float>(kValuesIQ4NL[qs[j] & 0x0F]);
        y[j + 16] = dl * static_cast<float>(kValuesIQ4NL[qs[j] >> 4]);
      }
    }
  }
}

}  // namespace kllens::ggml
