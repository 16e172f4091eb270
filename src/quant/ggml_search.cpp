// ggml's scale searches (ggml/src/ggml-quants.c at llama.cpp 3f545becc), rewritten from the
// documented algorithms (../shared/docs/llamacpp-formats-and-hybrids.md §1.4). They decide the
// codes of every K-quant and of every format quantized with an importance vector, so each one
// reproduces ggml's float32 arithmetic operation for operation:
//  * every sum runs sequentially over index 0..n-1 in float (no reassociation, no SIMD
//    reduction) and this file is compiled with -ffp-contract=off, as ggml-base is on x86-64;
//  * products are evaluated in ggml's order (w*x*l is (w*x)*l, w*l*l is (w*l)*l), with the
//    integer code converted to float where C's usual conversions convert it;
//  * codes are stored in the element types ggml stores them in (int8_t / uint8_t), and later
//    arithmetic reads them back from there, so even out-of-range codes behave as in ggml.
#include "quant/ggml_search.h"

#include <cmath>
#include <cstring>

#include "quant/ggml_quants.h"

namespace kllens::ggml {

namespace {

// The element with the largest |x|, sign kept; the first one wins ties. *amax gets its |x|.
float signed_absmax(int n, const float* x, float* amax) {
  float max = 0;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > best) {
      best = ax;
      max = x[i];
    }
  }
  *amax = best;
  return max;
}

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// make_qx_quants' weight of element x when no importance vector is given.
float rmse_weight(int rmse_type, float x) {
  switch (rmse_type) {
    case 1: return x * x;
    case 2: return 1.0f;
    case 3: return std::fabs(x);
    default: return std::sqrt(std::fabs(x));
  }
}

// The asymmetric (scale, min) search shared by make_qkx2_quants and make_qkx3_quants. They differ
// only in whether weights may be absent, in the degenerate-range test, and in how a trial code is
// rounded (qkx3 guards against a trial min at or above max, which makes the argument inf/NaN).
struct AsymSearch {
  bool weights_optional;  // qkx3: nullptr weights mean x²
  bool degenerate_if_le;  // qkx3: max <= min; qkx2: max == min
  bool guarded_trial;     // qkx3: v > 0 ? nearest_int(min(v, nmax)) : 0
};

float asym_search(const AsymSearch& kind, int n, int nmax, const float* x, const float* weights,
                  uint8_t* L, float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                  bool use_mad) {
  auto weight = [&](int i) {
    return (kind.weights_optional && weights == nullptr) ? x[i] * x[i] : weights[i];
  };
  auto error_of = [&](float diff) { return use_mad ? std::fabs(diff) : diff * diff; };

  float min = x[0];
  float max = x[0];
  float sum_w = weight(0);
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weight(i);
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;  // the offset only ever shifts down: codes are >= 0
  if (kind.degenerate_if_le ? max <= min : max == min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.0f;
  }

  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(clamp_int(l, 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_error += weight(i) * error_of(diff);
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }

  // Trial grids around nmax; `min` is the best offset so far, so later trials start from it.
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l;
      if (kind.guarded_trial) {
        const float v = iscale * (x[i] - min);
        l = v > 0 ? nearest_int(v < nmax ? v : static_cast<float>(nmax)) : 0;
      } else {
        l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      }
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weight(i);
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    // Weighted least squares for x ≈ scale·l + min, with min forced to <= 0.
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float cur_error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * Laux[i] + this_min - x[i];
      cur_error += weight(i) * error_of(diff);
    }
    if (cur_error < best_error) {
      std::memcpy(L, Laux, static_cast<size_t>(n));
      best_error = cur_error;
      scale = this_scale;
      min = this_min;
    }
  }
  *the_min = -min;
  return scale;
}

}  // namespace

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw) {
  float amax = 0;
  const float max = signed_absmax(n, x, &amax);
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  // The signed max maps to code -nmax, so the larger half of the range goes to its sign.
  float iscale = -nmax / max;
  auto code_of = [&](float is, float v) { return clamp_int(nearest_int(is * v), -nmax, nmax - 1); };
  if (rmse_type == 0) {
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + code_of(iscale, x[i]));
    return 1 / iscale;
  }
  const bool return_early = rmse_type < 0;
  if (return_early) rmse_type = -rmse_type;
  auto weight = [&](int i) { return qw ? qw[i] : rmse_weight(rmse_type, x[i]); };

  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = code_of(iscale, x[i]);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;

  // Try 18 nearby grids; keep one whose least-squares fit explains more of x (sumlx²/suml2).
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = code_of(iscale, x[i]);
      const float w = weight(i);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + code_of(iscale, x[i]));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float make_q3_quants(int n, int nmax, const float* x, int8_t* L, bool do_rmse) {
  float amax = 0;
  const float max = signed_absmax(n, x, &amax);
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const float iscale = -nmax / max;
  auto code_of = [&](float v) { return clamp_int(nearest_int(v), -nmax, nmax - 1); };
  if (!do_rmse) {
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(code_of(iscale * x[i]) + nmax);
    return 1 / iscale;
  }

  // Weighted (w = x²) least squares, improved by coordinate descent: move one code at a time to
  // its best value under the fit of the others, keeping the move if the fit improves.
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = code_of(iscale * x[i]);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (!(slx > 0)) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int new_l = code_of(x[i] * sl2 / slx);
      if (new_l == L[i]) continue;
      slx += w * x[i] * new_l;
      sl2 += w * new_l * new_l;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<int8_t>(new_l);
        sumlx = slx;
        suml2 = sl2;
        ++n_changed;
      }
    }
    if (n_changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  constexpr AsymSearch kQkx2{.weights_optional = false, .degenerate_if_le = false,
                             .guarded_trial = false};
  return asym_search(kQkx2, n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  constexpr AsymSearch kQkx3{.weights_optional = true, .degenerate_if_le = true,
                             .guarded_trial = true};
  return asym_search(kQkx3, n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  // Start from the grid that maps max to nmax (codes unclamped, as ggml), then pick the best of
  // 8 nearby grids by weighted squared error.
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale_is * x[i]);
      l = l < nmax ? l : nmax;
      const float diff = x[i] - scale_is * l;
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }

  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < nmax ? l : nmax;
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  // Coordinate descent on the least-squares fit, as in make_q3_quants.
  for (int sweep = 0; sweep < 5; ++sweep) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (!(slx > 0 && sl2 > 0)) continue;
      int new_l = nearest_int(x[i] * sl2 / slx);
      new_l = new_l < nmax ? new_l : nmax;
      if (new_l == L[i]) continue;
      slx += w * x[i] * new_l;
      sl2 += w * new_l * new_l;
      if (slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<uint8_t>(new_l);
        sumlx = slx;
        suml2 = sl2;
        ++n_changed;
      }
    }
    if (n_changed == 0) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

int best_index_int8(int n, const int8_t* val, float x) {
  if (x <= val[0]) return 0;
  if (x >= val[n - 1]) return n - 1;
  // Bisect to the bracket val[lo] <= x < val[hi], then pick the nearer end; the float
  // differences are compared as ggml compares them, and a tie goes to the higher index.
  int lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < val[mid]) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return x - val[hi - 1] < val[hi] - x ? hi - 1 : hi;
}

}  // namespace kllens::ggml
