// kllens' own quantizers for ggml's Q4_K, Q5_K and Q6_K layouts: the schemes "q4_K:refined",
// "q5_K:refined" and "q6_K:refined". The bytes are ggml's blocks, so llama.cpp and kllens' packed
// kernels read them unchanged; only the choice of scales, mins and codes differs.
//
// Why: ggml's quantizers choose each sub-block's (scale, min) by a short grid search, then round
// those to 6- or 8-bit codes against one fp16 super-block scale, and never look back. What the
// block then holds is not the best it could hold: with the codes fixed, another super-block scale
// fits better; with that scale fixed, a neighbouring sub-block code does. The refinement starts
// from ggml's block (and from ten rescaled copies of it, best_of_starts) and descends on the
// stored parameters themselves:
//   (a) with the fp16 super-block scale (and min scale) fixed, each sub-block's integer scale
//       (and min) code is searched in a window around its current value; the codes of a
//       sub-block are then round-to-nearest, which is optimal for fixed parameters because the
//       error is separable per element and convex in the code;
//   (b) with every integer code fixed, the super-block scale (and min scale) is the weighted
//       least-squares solution, tried at the fp16 values around it.
// A step is kept only if it lowers the objective, so the result is never worse than ggml's block.
//
// The objective is Σ w_i (x_i - x̂_i)² with w the importance vector (llama.cpp's imatrix entry: the
// column's mean squared activation, so the sum estimates the layer's output error for
// uncorrelated inputs) or 1 without one. ggml weights its search differently (qw·√(σ² + x²)).
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "quant/ggml_kpack.h"
#include "quant/ggml_quants.h"
#include "quant/ggml_refined.h"

namespace kllens::ggml {

namespace {

constexpr int kRounds = 6;
constexpr int kSubWindowAffine = 5;  // ±5 on the 6-bit scale and min codes: 121 candidates
constexpr int kSubWindowSym = 8;     // ±8 on Q6_K's 8-bit scale codes
constexpr float kStartFactors[] = {1.0f,   0.85f, 0.9f, 0.925f, 0.95f, 0.975f,
                                   1.025f, 1.05f, 1.075f, 1.1f, 1.15f};

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

bool is_finite(float v) { return std::fabs(v) <= 3.4028234e38f; }

// nearest_int needs |f| <= 2^22; a code outside [lo, hi] clamps anyway.
int nearest_code(float f, int lo, int hi) {
  const float c = f < lo - 1.0f ? lo - 1.0f : f > hi + 1.0f ? hi + 1.0f : f;
  return clamp_int(nearest_int(c), lo, hi);
}

// Several starts: ggml's block, and its super-block scale d moved by -15% .. +15% with the
// sub-block scale codes (in [lo, hi]) rescaled to keep their products; each is descended
// (`descend` returns the final objective), since the descent alone stops in a local minimum.
// Returns the best objective; *best_state receives its state when it beats ggml_error.
template <typename State, typename Descend>
float best_of_starts(const State& ggml_state, float ggml_error, int lo, int hi, Descend descend,
                     State* best_state) {
  float best = ggml_error;
  for (float f : kStartFactors) {
    State s = ggml_state;
    if (f != 1.0f) {
      s.d = f32_to_f16(f16_to_f32(ggml_state.d) * f);
      for (auto& c : s.sc)
        c = static_cast<std::remove_reference_t<decltype(c)>>(
            clamp_int(nearest_int(static_cast<float>(c) / f), lo, hi));
    }
    const float e = descend(s);
    if (e < best) {
      best = e;
      *best_state = s;
    }
  }
  return best;
}

// --- affine sub-blocks (Q4_K, Q5_K): x̂ = dl·q - ml, q in [0, nmax] ---------------------------

float affine_error(const float* x, const float* w, int n, int nmax, float dl, float ml,
                   uint8_t* L) {
  float err = 0;
  if (dl == 0) {
    for (int i = 0; i < n; ++i) {
      const float e = x[i] + ml;
      err += w[i] * e * e;
      if (L) L[i] = 0;
    }
    return err;
  }
  const float inv = 1.0f / dl;
  for (int i = 0; i < n; ++i) {
    const int q = nearest_code((x[i] + ml) * inv, 0, nmax);
    const float e = x[i] - (dl * static_cast<float>(q) - ml);
    err += w[i] * e * e;
    if (L) L[i] = static_cast<uint8_t>(q);
  }
  return err;
}

struct AffineState {
  uint16_t d = 0, dmin = 0;
  uint8_t sc[kQK_K / 32] = {}, m[kQK_K / 32] = {};
};

constexpr int kAffineGroups = kQK_K / 32;

float affine_total(const float* x, const float* w, int nmax, const AffineState& s, uint8_t* L) {
  const float d = f16_to_f32(s.d), dmin = f16_to_f32(s.dmin);
  float err = 0;
  for (int j = 0; j < kAffineGroups; ++j)
    err += affine_error(x + 32 * j, w + 32 * j, 32, nmax, d * s.sc[j], dmin * s.m[j],
                        L ? L + 32 * j : nullptr);
  return err;
}

// fp16 values around v (the rounded one and its two neighbours), finite only.
int fp16_neighbours(float v, uint16_t* out) {
  if (!is_finite(v)) return 0;
  const uint16_t h = f32_to_f16(v);
  int n = 0;
  for (int delta = -1; delta <= 1; ++delta) {
    const uint16_t c = static_cast<uint16_t>(h + delta);
    if (is_finite(f16_to_f32(c))) out[n++] = c;
  }
  return n;
}

// Descends from `s`; returns its objective at the end.
float refine_affine(const float* x, const float* w, int nmax, AffineState& s) {
  float best = affine_total(x, w, nmax, s, nullptr);
  uint8_t L[kQK_K];
  for (int round = 0; round < kRounds && best > 0; ++round) {
    const float before = best;
    // (a) each sub-block's scale and min codes, the super-block scales fixed.
    const float d = f16_to_f32(s.d), dmin = f16_to_f32(s.dmin);
    for (int j = 0; j < kAffineGroups; ++j) {
      const float* xj = x + 32 * j;
      const float* wj = w + 32 * j;
      float cur = affine_error(xj, wj, 32, nmax, d * s.sc[j], dmin * s.m[j], nullptr);
      const int sc0 = s.sc[j], m0 = s.m[j];
      for (int sc = std::max(0, sc0 - kSubWindowAffine); sc <= std::min(63, sc0 + kSubWindowAffine);
           ++sc) {
        for (int m = std::max(0, m0 - kSubWindowAffine); m <= std::min(63, m0 + kSubWindowAffine);
             ++m) {
          const float e = affine_error(xj, wj, 32, nmax, d * sc, dmin * m, nullptr);
          if (e < cur) {
            cur = e;
            s.sc[j] = static_cast<uint8_t>(sc);
            s.m[j] = static_cast<uint8_t>(m);
          }
        }
      }
    }
    best = affine_total(x, w, nmax, s, L);
    // (b) d and dmin by weighted least squares on x ≈ d·(sc·q) - dmin·m, codes fixed.
    double saa = 0, sab = 0, sbb = 0, sax = 0, sbx = 0;
    for (int i = 0; i < kQK_K; ++i) {
      const double a = static_cast<double>(s.sc[i / 32]) * L[i];
      const double b = s.m[i / 32];
      saa += w[i] * a * a;
      sab += w[i] * a * b;
      sbb += w[i] * b * b;
      sax += w[i] * a * x[i];
      sbx += w[i] * b * x[i];
    }
    const double det = sab * sab - saa * sbb;
    double d_ls = 0, dmin_ls = dmin;
    if (std::fabs(det) > 1e-12 * saa * sbb && sbb > 0) {
      d_ls = (sab * sbx - sax * sbb) / det;
      dmin_ls = (saa * sbx - sab * sax) / det;
    } else if (saa > 0) {
      d_ls = (sax + dmin * sab) / saa;
    }
    uint16_t dc[3], mc[3];
    const int nd = d_ls >= 0 ? fp16_neighbours(static_cast<float>(d_ls), dc) : 0;
    const int nm = dmin_ls >= 0 ? fp16_neighbours(static_cast<float>(dmin_ls), mc) : 0;
    for (int a = 0; a < nd; ++a) {
      for (int b = 0; b < nm; ++b) {
        AffineState t = s;
        t.d = dc[a];
        t.dmin = mc[b];
        const float e = affine_total(x, w, nmax, t, nullptr);
        if (e < best) {
          best = e;
          s = t;
        }
      }
    }
    if (!(best < before)) break;
  }
  return best;
}

AffineState affine_state_of(uint16_t d, uint16_t dmin, const uint8_t* scale_bytes) {
  AffineState s;
  s.d = d;
  s.dmin = dmin;
  for (int j = 0; j < kAffineGroups; ++j) unpack_k4_scale(j, scale_bytes, &s.sc[j], &s.m[j]);
  return s;
}

// From several starts (best_of_starts); returns whether `s` improved on ggml's block.
bool refine_affine_starts(const float* x, const float* w, int nmax, AffineState& s) {
  const float ggml_error = affine_total(x, w, nmax, s, nullptr);
  AffineState best_state = s;
  const float best = best_of_starts(
      s, ggml_error, 0, 63, [&](AffineState& t) { return refine_affine(x, w, nmax, t); },
      &best_state);
  if (!(best < ggml_error)) return false;
  s = best_state;
  return true;
}

// --- symmetric sub-blocks of 16 (Q6_K): x̂ = (d·sc)·q, q in [-32, 31] ---------------------------

constexpr int kSymGroups = kQK_K / 16;

float sym_error(const float* x, const float* w, float s, int8_t* L) {
  float err = 0;
  if (s == 0) {
    for (int i = 0; i < 16; ++i) {
      err += w[i] * x[i] * x[i];
      if (L) L[i] = 32;
    }
    return err;
  }
  const float inv = 1.0f / s;
  for (int i = 0; i < 16; ++i) {
    const int q = nearest_code(x[i] * inv, -32, 31);
    const float e = x[i] - s * static_cast<float>(q);
    err += w[i] * e * e;
    if (L) L[i] = static_cast<int8_t>(q + 32);
  }
  return err;
}

float sym_total(const float* x, const float* w, uint16_t d_bits, const int* sc, int8_t* L) {
  const float d = f16_to_f32(d_bits);
  float err = 0;
  for (int j = 0; j < kSymGroups; ++j)
    err += sym_error(x + 16 * j, w + 16 * j, d * static_cast<float>(sc[j]), L ? L + 16 * j : nullptr);
  return err;
}

struct SymState {
  uint16_t d = 0;
  int sc[kSymGroups] = {};
};

// Descends from `s`; returns its objective at the end.
float refine_sym(const float* x, const float* w, SymState& s) {
  float best = sym_total(x, w, s.d, s.sc, nullptr);
  int8_t L[kQK_K];
  for (int round = 0; round < kRounds && best > 0; ++round) {
    const float before = best;
    const float d = f16_to_f32(s.d);
    for (int j = 0; j < kSymGroups; ++j) {
      float cur = sym_error(x + 16 * j, w + 16 * j, d * static_cast<float>(s.sc[j]), nullptr);
      const int s0 = s.sc[j];
      for (int c = std::max(-128, s0 - kSubWindowSym); c <= std::min(127, s0 + kSubWindowSym); ++c) {
        const float e = sym_error(x + 16 * j, w + 16 * j, d * static_cast<float>(c), nullptr);
        if (e < cur) {
          cur = e;
          s.sc[j] = c;
        }
      }
    }
    best = sym_total(x, w, s.d, s.sc, L);
    double saa = 0, sax = 0;
    for (int i = 0; i < kQK_K; ++i) {
      const double a = static_cast<double>(s.sc[i / 16]) * (L[i] - 32);
      saa += w[i] * a * a;
      sax += w[i] * a * x[i];
    }
    if (saa > 0) {
      uint16_t dc[3];
      const int nd = fp16_neighbours(static_cast<float>(sax / saa), dc);
      for (int a = 0; a < nd; ++a) {
        const float e = sym_total(x, w, dc[a], s.sc, nullptr);
        if (e < best) {
          best = e;
          s.d = dc[a];
        }
      }
    }
    if (!(best < before)) break;
  }
  return best;
}

void refine_block_q6_K(const float* x, const float* w, BlockQ6_K* y) {
  SymState ggml_state;
  ggml_state.d = y->d;
  for (int j = 0; j < kSymGroups; ++j) ggml_state.sc[j] = y->scales[j];
  const float ggml_error = sym_total(x, w, ggml_state.d, ggml_state.sc, nullptr);
  if (!(ggml_error > 0)) return;
  SymState best_state = ggml_state;
  const float best = best_of_starts(
      ggml_state, ggml_error, -128, 127, [&](SymState& t) { return refine_sym(x, w, t); },
      &best_state);
  if (!(best < ggml_error)) return;  // ggml's block stays, byte for byte
  int8_t L[kQK_K];
  sym_total(x, w, best_state.d, best_state.sc, L);
  y->d = best_state.d;
  for (int j = 0; j < kSymGroups; ++j) y->scales[j] = static_cast<int8_t>(best_state.sc[j]);
  pack_q6_K_codes(L, y);
}

// The objective's weights for one super-block: the importance vector, or 1 without one.
const float* objective_weights(const float* qw, std::vector<float>& ones) {
  if (qw) return qw;
  ones.assign(kQK_K, 1.0f);
  return ones.data();
}

}  // namespace

namespace {

// Q4_K and Q5_K share the scale bytes and the affine form; they differ in nmax and code packing.
template <typename Block, typename PackCodes>
void refine_row_k4(const float* x, Block* y, int64_t n, const float* qw, int nmax,
                   PackCodes pack_codes) {
  std::vector<float> ones;
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < n / kQK_K; ++i, ++y) {
    const float* xb = x + kQK_K * i;
    const float* w = objective_weights(qw ? qw + kQK_K * i : nullptr, ones);
    AffineState s = affine_state_of(y->d, y->dmin, y->scales);
    if (!refine_affine_starts(xb, w, nmax, s)) continue;  // ggml's block stays, byte for byte
    affine_total(xb, w, nmax, s, L);
    y->d = s.d;
    y->dmin = s.dmin;
    std::memset(y->scales, 0, sizeof(y->scales));
    pack_k4_scales(s.sc, s.m, y->scales);
    pack_codes(L, y);
  }
}

}  // namespace

void quantize_row_q4_K_refined(const float* x, void* dst, int64_t n, const float* qw) {
  quantize_row_q4_K(x, dst, n, qw);
  refine_row_k4(x, static_cast<BlockQ4_K*>(dst), n, qw, 15,
                [](const uint8_t* L, BlockQ4_K* y) { pack_q4_K_codes(L, y->qs); });
}

void quantize_row_q5_K_refined(const float* x, void* dst, int64_t n, const float* qw) {
  quantize_row_q5_K(x, dst, n, qw);
  refine_row_k4(x, static_cast<BlockQ5_K*>(dst), n, qw, 31,
                [](const uint8_t* L, BlockQ5_K* y) { pack_q5_K_codes(L, y->qh, y->qs); });
}

void quantize_row_q6_K_refined(const float* x, void* dst, int64_t n, const float* qw) {
  quantize_row_q6_K(x, dst, n, qw);
  auto* y = static_cast<BlockQ6_K*>(dst);
  std::vector<float> ones;
  for (int64_t i = 0; i < n / kQK_K; ++i, ++y)
    refine_block_q6_K(x + kQK_K * i, objective_weights(qw ? qw + kQK_K * i : nullptr, ones), y);
}

}  // namespace kllens::ggml
