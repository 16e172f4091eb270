#include "kernels/attention.h"

#include <blis.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/scratch.h"

namespace kllens {
namespace {

ops::AttentionShape resolved(const ops::AttentionShape& s) {
  ops::AttentionShape r = s;
  if (r.ldq == 0) r.ldq = s.Hq * s.Dk;
  if (r.ldk == 0) r.ldk = s.Hkv * s.Dk;
  if (r.ldv == 0) r.ldv = s.Hkv * s.Dv;
  if (r.ldo == 0) r.ldo = s.Hq * s.Dv;
  return r;
}

// Below this many q·k multiply-adds (T * S * Hq * Dk) attention runs single-threaded.
constexpr int64_t kParallelMinWork = 32768;

inline bool visible(int64_t qp, int64_t kp, int64_t window, int64_t n_sink) {
  return kp <= qp && (window <= 0 || qp - kp < window || kp < n_sink);
}

}  // namespace

namespace ops {

void apply_rope(float* x, int64_t ld, int64_t T, int64_t H, int64_t D, const int64_t* pos,
                const float* inv_freq, int64_t rot_dim) {
  const int64_t half = rot_dim / 2;
#pragma omp parallel for if (T * H * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[t]) * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < H; ++h) {
        float* row = x + t * ld + h * D;
        const float x1 = row[i], x2 = row[i + half];
        row[i] = x1 * c - x2 * s;
        row[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

void attention(float* out, const float* q, const float* k, const float* v, const int64_t* q_pos,
               const int64_t* k_pos, const AttentionShape& shape_in, int64_t window,
               int64_t n_sink, float scale) {
  // Per query head: scores {T, S} = scale * Q_h K_hᵀ and out_h {T, Dv} = softmax(scores) V_h as
  // two BLAS products (the heads' rows are strided views of q, k, v, out); masking and the
  // softmax in between are plain loops. Heads run in parallel; BLAS inside a parallel region
  // runs single-threaded (nested OpenMP is off).
  const AttentionShape s = resolved(shape_in);
  const int64_t group = s.Hq / s.Hkv;
  const float neg_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel if (s.T * s.S * s.Hq * s.Dk >= 32768)
  {
    // One per OpenMP thread; the first product of each head overwrites it whole.
    thread_local ScratchVec scores_buf;
    float* scores = scores_buf.get(static_cast<size_t>(s.T * s.S));
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < s.Hq; ++h) {
      const int64_t kh = h / group;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(s.T),
                  static_cast<int>(s.S), static_cast<int>(s.Dk), scale, q + h * s.Dk,
                  static_cast<int>(s.ldq), k + kh * s.Dk, static_cast<int>(s.ldk), 0.0f,
                  scores, static_cast<int>(s.S));
      for (int64_t t = 0; t < s.T; ++t) {
        float* row = scores + t * s.S;
        float maxv = neg_inf;
        for (int64_t j = 0; j < s.S; ++j) {
          if (!visible(q_pos[t], k_pos[j], window, n_sink)) row[j] = neg_inf;
          maxv = std::max(maxv, row[j]);
        }
        if (maxv == neg_inf) {  // no visible key: the output row is zero
          std::fill(row, row + s.S, 0.0f);
          continue;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < s.S; ++j) {
          row[j] = row[j] == neg_inf ? 0.0f : std::exp(row[j] - maxv);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < s.S; ++j) row[j] *= inv;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(s.T),
                  static_cast<int>(s.Dv), static_cast<int>(s.S), 1.0f, scores,
                  static_cast<int>(s.S), v + kh * s.Dv, static_cast<int>(s.ldv), 0.0f,
                  out + h * s.Dv, static_cast<int>(s.ldo));
    }
  }
}

}  // namespace ops

namespace ref {

void attention(float* out, const float* q, const float* k, const float* v, const int64_t* q_pos,
               const int64_t* k_pos, const ops::AttentionShape& shape_in, int64_t window,
               int64_t n_sink, float scale) {
  const ops::AttentionShape s = resolved(shape_in);
  const int64_t group = s.Hq / s.Hkv;
  for (int64_t h = 0; h < s.Hq; ++h)
    for (int64_t t = 0; t < s.T; ++t) {
      const int64_t kh = h / group;
      std::vector<double> sc(static_cast<size_t>(s.S));
      double maxv = -INFINITY;
      for (int64_t j = 0; j < s.S; ++j) {
        if (!visible(q_pos[t], k_pos[j], window, n_sink)) {
          sc[j] = -INFINITY;
          continue;
        }
        double dot = 0;
        for (int64_t d = 0; d < s.Dk; ++d)
          dot += static_cast<double>(q[t * s.ldq + h * s.Dk + d]) * k[j * s.ldk + kh * s.Dk + d];
        sc[j] = dot * scale;
        maxv = std::max(maxv, sc[j]);
      }
      for (int64_t d = 0; d < s.Dv; ++d) {
        double acc = 0, sum = 0;
        for (int64_t j = 0; j < s.S; ++j) {
          if (sc[j] == -INFINITY) continue;
          const double e = std::exp(sc[j] - maxv);
          sum += e;
          acc += e * v[j * s.ldv + kh * s.Dv + d];
        }
        out[t * s.ldo + h * s.Dv + d] = sum > 0 ? static_cast<float>(acc / sum) : 0.0f;
      }
    }
}

}  // namespace ref
}  // namespace kllens
