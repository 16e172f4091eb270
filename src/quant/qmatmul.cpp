#include "quant/qmatmul.h"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/ops.h"
#include "quant/formats.h"
#include "quant/qmatmul_decode_inl.h"
#include "quant/qmatmul_kernels.h"

namespace kllens {

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512-vnni";
  }
  return "scalar";
}

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

Isa best_supported_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
      cpu_has_f16c() && __builtin_cpu_supports("fma"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
    return Isa::kAvx2;
  return Isa::kScalar;
}

namespace {

Isa initial_isa() {
  Isa isa = best_supported_isa();
  if (const char* env = std::getenv("KLLENS_ISA")) {
    const std::string v = env;
    Isa want = isa;
    if (v == "scalar") want = Isa::kScalar;
    else if (v == "avx2") want = Isa::kAvx2;
    else if (v == "avx512" || v == "avx512-vnni") want = Isa::kAvx512;
    isa = std::min(isa, want);
  }
  return isa;
}

Isa g_isa = initial_isa();

using qk::CodeLayout;
using qk::HalfRows;
using qk::IntRows;

bool int_layout(const QTensor& w, IntRows* out) {
  const QuantScheme& s = w.scheme;
  if (w.cols % 32 != 0 || w.cols == 0) return false;
  IntRows r;
  r.rows = w.rows;
  r.cols = w.cols;
  r.data = w.data.data();
  if (s.format == QuantFormat::kQ8_0) {
    r.layout = CodeLayout::kQ8_0;
  } else if (s.format == QuantFormat::kQ4_0) {
    r.layout = CodeLayout::kQ4_0;
  } else if (s.is_int() && (s.bits == 8 || s.bits == 4)) {
    const int64_t group = w.group_size();
    if (group % 32 != 0) return false;
    r.layout = s.bits == 8 ? CodeLayout::kU8 : CodeLayout::kU4EvenOdd;
    r.scales_f16 = s.scale_f16 ? w.scales_f16.data() : nullptr;
    r.scales_f32 = s.scale_f16 ? nullptr : w.scales_f32.data();
    r.zeros = s.symmetric ? nullptr : w.zero_points.data();
    r.default_zero = s.symmetric ? (1 << (s.bits - 1)) : 0;
    r.blocks_per_group = group / 32;
    r.groups_per_row = w.groups_per_row();
    if (r.groups_per_row > 1) {
      if ((r.blocks_per_group & (r.blocks_per_group - 1)) != 0) return false;  // e.g. g96
      r.group_shift = std::countr_zero(static_cast<uint64_t>(r.blocks_per_group));
    }
  } else {
    return false;
  }
  if (out) *out = r;
  return true;
}

bool half_layout(const QTensor& w, HalfRows* out) {
  if (w.scheme.format != QuantFormat::kBF16 && w.scheme.format != QuantFormat::kF16) return false;
  out->bf16 = w.scheme.format == QuantFormat::kBF16;
  out->rows = w.rows;
  out->cols = w.cols;
  out->data = reinterpret_cast<const uint16_t*>(w.data.data());
  return true;
}

// Rows of W per thread chunk: a multiple of 16, at least 64 rows of work per thread.
int threads_for(int64_t rows, int64_t cols) {
  if (omp_in_parallel()) return 1;
  const int t = num_threads();
  if (t <= 1 || rows * cols < (int64_t{1} << 16) || rows < 32) return 1;
  return t;
}

template <typename RowFn>
void parallel_rows(int64_t rows, int64_t cols, RowFn&& fn) {
  const int threads = threads_for(rows, cols);
  if (threads == 1) {
    fn(int64_t{0}, rows);
    return;
  }
  // Eight chunks per thread, handed out dynamically: the two cores of a shared machine rarely
  // stream memory at the same speed, and a static half each left one waiting (a quarter of the
  // decode samples were the idle thread spinning at the join).
  const int64_t chunk = std::max<int64_t>(16, ((rows + 8 * threads - 1) / (8 * threads) + 15) / 16 * 16);
  const int64_t chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < chunks; ++i) fn(i * chunk, std::min(rows, (i + 1) * chunk));
}

void int_rows(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  switch (g_isa) {
    case Isa::kAvx512: qk::int_rows_avx512(w, a, y, r0, r1); return;
    case Isa::kAvx2: qk::int_rows_avx2(w, a, y, r0, r1); return;
    case Isa::kScalar: qk::int_rows_scalar(w, a, y, r0, r1); return;
  }
}

void half_rows(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1) {
  switch (g_isa) {
    case Isa::kAvx512: qk::half_rows_avx512(w, x, y, r0, r1); return;
    case Isa::kAvx2: qk::half_rows_avx2(w, x, y, r0, r1); return;
    case Isa::kScalar: qk::half_rows_scalar(w, x, y, r0, r1); return;
  }
}

void decode_row(const QTensor& w, int64_t r, qk::DecodedRow out) {
  switch (g_isa) {
    case Isa::kAvx512: qk::decode_row_avx512(w, r, out); return;
    case Isa::kAvx2: qk::decode_row_avx2(w, r, out); return;
    case Isa::kScalar: qk::decode_row_scalar(w, r, out); return;
  }
}

void coded_dot(const qk::DecodedRow& w, int64_t K, bool codes_8bit, const ActivationQ8* acts,
               int64_t T, float* y, int64_t y_stride) {
  switch (g_isa) {
    case Isa::kAvx512: qk::coded_dot_avx512(w, K, codes_8bit, acts, T, y, y_stride); return;
    case Isa::kAvx2: qk::coded_dot_avx2(w, K, codes_8bit, acts, T, y, y_stride); return;
    case Isa::kScalar: qk::coded_dot_scalar(w, K, codes_8bit, acts, T, y, y_stride); return;
  }
}

// Whether some code of the scheme can exceed 127 (unsigned codes of 8 bits, or iq4's levels
// shifted by 128).
bool codes_need_8_bits(const QuantScheme& s) {
  return s.format == QuantFormat::kQ8_0 || s.format == QuantFormat::kIQ4_NL ||
         s.format == QuantFormat::kIQ4_XS || (s.is_int() && s.bits == 8);
}

// Decoded rows, reused by each thread across calls (no allocation once warm).
struct DecodedPanel {
  std::vector<uint8_t> codes;
  std::vector<float> scale16, offset16;
  void reserve(int64_t rows, int64_t K) {
    const auto n = static_cast<size_t>(rows * K);
    if (codes.size() < n) {
      codes.resize(n);
      scale16.resize(n / 16);
      offset16.resize(n / 16);
    }
  }
  qk::DecodedRow row(int64_t i, int64_t K) {
    return {codes.data() + i * K, scale16.data() + i * K / 16, offset16.data() + i * K / 16};
  }
};

void add_bias(float* y, const float* bias, int64_t T, int64_t N) {
  if (!bias) return;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) y[t * N + n] += bias[n];
}

// One token: the integer, 16-bit or generic row path.
void matvec(float* y, const float* x, const QTensor& w) {
  const int64_t N = w.rows, K = w.cols;
  IntRows ir;
  HalfRows hr;
  if (int_layout(w, &ir)) {
    // The calling thread's buffer; the worker threads read it through this reference (a lambda
    // naming the thread_local itself would see each worker's own, empty one).
    thread_local ActivationQ8 buffer;
    const ActivationQ8& act = buffer;
    quantize_activation_q8(x, K, ir.layout == CodeLayout::kU4EvenOdd, &buffer);
    parallel_rows(N, K, [&](int64_t r0, int64_t r1) { int_rows(ir, act, y, r0, r1); });
  } else if (qk::decodable(w)) {
    // The other integer and block formats: each row decoded to codes in L1, then integer dots.
    thread_local ActivationQ8 buffer;
    const ActivationQ8& act = buffer;
    quantize_activation_q8(x, K, false, &buffer, activation_block(w));
    const bool wide = codes_need_8_bits(w.scheme);
    if (g_isa == Isa::kAvx512 && qk::has_fused_avx512(w.scheme.format)) {
      parallel_rows(N, K, [&](int64_t r0, int64_t r1) { qk::fused_rows_avx512(w, &act, 1, y, 1, r0, r1); });
      return;
    }
    if (g_isa == Isa::kAvx512 && qk::has_fused_decode_avx512(w.scheme.format)) {
      parallel_rows(N, K, [&](int64_t r0, int64_t r1) { qk::fused_decode_avx512(w, act, y, r0, r1); });
      return;
    }
    parallel_rows(N, K, [&](int64_t r0, int64_t r1) {
      thread_local DecodedPanel panel;
      panel.reserve(1, K);
      const qk::DecodedRow row = panel.row(0, K);
      for (int64_t r = r0; r < r1; ++r) {
        decode_row(w, r, row);
        coded_dot(row, K, wide, &act, 1, y + r, 1);
      }
    });
  } else if (half_layout(w, &hr)) {
    parallel_rows(N, K, [&](int64_t r0, int64_t r1) { half_rows(hr, x, y, r0, r1); });
  } else if (w.scheme.is_int() && (w.scheme.bits == 4 || w.scheme.bits == 8)) {
    // 4- and 8-bit codes whose groups do not fit activation blocks (e.g. dt_proj's rows of 48
    // at g32): float activations, codes read straight from the stream, one scale per group.
    const QuantScheme& sc = w.scheme;
    const int64_t G = w.group_size(), gpr = w.groups_per_row();
    parallel_rows(N, K, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float acc = 0;
        for (int64_t g = 0; g < gpr; ++g) {
          const int64_t gi = r * gpr + g;
          const float scale = sc.scale_f16 ? f16_to_f32(w.scales_f16[gi]) : w.scales_f32[gi];
          const int z = sc.symmetric ? (1 << (sc.bits - 1)) : w.zero_points[gi];
          const int64_t e0 = r * K + g * G;
          const float* xg = x + g * G;
          float dot = 0;
          if (sc.bits == 8) {
            for (int64_t i = 0; i < G; ++i) dot += static_cast<float>(w.data[e0 + i] - z) * xg[i];
          } else if ((e0 & 1) == 0 && (G & 1) == 0) {
            const uint8_t* bytes = w.data.data() + e0 / 2;  // elements 2j (low), 2j+1 (high)
            for (int64_t j = 0; j < G / 2; ++j)
              dot += static_cast<float>((bytes[j] & 0xF) - z) * xg[2 * j] +
                     static_cast<float>((bytes[j] >> 4) - z) * xg[2 * j + 1];
          } else {
            for (int64_t i = 0; i < G; ++i) {
              const int64_t e = e0 + i;
              dot += static_cast<float>(((w.data[e >> 1] >> ((e & 1) * 4)) & 0xF) - z) * xg[i];
            }
          }
          acc += scale * dot;
        }
        y[r] = acc;
      }
    });
  } else {
    parallel_rows(N, K, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(K));
      for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(w, r, row.data());
        float acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += row[k] * x[k];
        y[r] = acc;
      }
    });
  }
}

// Many tokens: dequantize panels of rows to float32 and multiply with BLAS. Panels are large
// (up to 4 MiB of floats, about one per thread for a layer's projections) because BLAS repacks
// the activations for every call; the buffers persist per thread, so no call page-faults.
void matmul_panels(float* y, const float* x, const QTensor& w, int64_t T) {
  const int64_t N = w.rows, K = w.cols;
  const int threads = omp_in_parallel() ? 1 : num_threads();
  const int64_t cap = std::max<int64_t>(16, (int64_t{1} << 20) / std::max<int64_t>(K, 1) / 16 * 16);
  const int64_t even = ((N + threads - 1) / threads + 15) / 16 * 16;  // one panel per thread
  const int64_t panel = std::min(cap, std::max<int64_t>(even, 16));
  const int64_t panels = (N + panel - 1) / panel;
#pragma omp parallel num_threads(threads)
  {
    thread_local std::vector<float> wbuf, ybuf;
    wbuf.resize(std::max(wbuf.size(), static_cast<size_t>(panel * K)));
    ybuf.resize(std::max(ybuf.size(), static_cast<size_t>(panel * T)));
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = p * panel, n = std::min(panel, N - n0);
      for (int64_t r = 0; r < n; ++r) dequantize_row(w, n0 + r, wbuf.data() + r * K);
      ops::matmul_nt(ybuf.data(), x, wbuf.data(), nullptr, T, n, K);  // 1 thread inside
      for (int64_t t = 0; t < T; ++t) std::memcpy(y + t * N + n0, ybuf.data() + t * n, n * sizeof(float));
    }
  }
}

// Many tokens on integer dot products: every token row quantized to int8 once, then panels of
// weight rows decoded once each and multiplied against tiles of tokens (a tile's activations
// stay in L1 while the panel's rows pass over them).
void matmul_int8(float* y, const float* x, const QTensor& w, int64_t T) {
  const int64_t N = w.rows, K = w.cols;
  thread_local std::vector<ActivationQ8> token_buffer;
  if (token_buffer.size() < static_cast<size_t>(T)) token_buffer.resize(static_cast<size_t>(T));
  ActivationQ8* acts = token_buffer.data();
  const int threads = omp_in_parallel() ? 1 : num_threads();
  const int block = activation_block(w);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) quantize_activation_q8(x + t * K, K, false, &acts[t], block);
  const bool wide = codes_need_8_bits(w.scheme);
  constexpr int64_t kPanelRows = 64;
  // Tokens per tile: their int8 rows and lane scales (2 K bytes each) within about 32 KiB.
  const int64_t tile = std::clamp<int64_t>((int64_t{32} << 10) / (2 * K) / 4 * 4, 4, 64);
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
  const bool fused = g_isa == Isa::kAvx512 && qk::has_fused_avx512(w.scheme.format);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t p = 0; p < panels; ++p) {
    if (fused) {
      const int64_t r0 = p * kPanelRows, r1 = std::min(N, r0 + kPanelRows);
      for (int64_t t0 = 0; t0 < T; t0 += tile)
        qk::fused_rows_avx512(w, acts + t0, std::min(tile, T - t0), y + t0 * N, N, r0, r1);
      continue;
    }
    thread_local DecodedPanel panel;
    const int64_t r0 = p * kPanelRows, rows = std::min(kPanelRows, N - r0);
    panel.reserve(kPanelRows, K);
    for (int64_t i = 0; i < rows; ++i) decode_row(w, r0 + i, panel.row(i, K));
    for (int64_t t0 = 0; t0 < T; t0 += tile) {
      const int64_t nt = std::min(tile, T - t0);
      for (int64_t i = 0; i < rows; ++i)
        coded_dot(panel.row(i, K), K, wide, acts + t0, nt, y + t0 * N + r0 + i, N);
    }
  }
}

PrefillPath g_prefill = PrefillPath::kAuto;

bool cpu_has_avx512_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

// Many tokens on a bf16 matrix with the machine's bf16 dot products: the token rows rounded to
// bf16 once, then rows of W in dynamic chunks against tiles of four tokens.
void matmul_bf16(float* y, const float* x, const QTensor& w, int64_t T) {
  const int64_t N = w.rows, K = w.cols;
  const int64_t stride = (K + 31) / 32 * 32;
  thread_local std::vector<uint16_t> xb;
  xb.resize(std::max(xb.size(), static_cast<size_t>(T * stride)));
  uint16_t* xs = xb.data();
  const int threads = omp_in_parallel() ? 1 : num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) qk::activations_to_bf16_avx512bf16(x + t * K, K, xs + t * stride);
  const auto* rows = reinterpret_cast<const uint16_t*>(w.data.data());
  // Panels of rows that fit in L2 (at most 256 KiB of bf16), one at a time per thread.
  const int64_t panel = std::clamp<int64_t>((int64_t{256} << 10) / (2 * K) / 16 * 16, 16, 256);
  const int64_t panels = (N + panel - 1) / panel;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t p = 0; p < panels; ++p)
    qk::bf16_rows_avx512bf16(rows, K, xs, stride, T, y, N, p * panel, std::min(N, (p + 1) * panel));
}

}  // namespace

Isa qmatmul_isa() { return g_isa; }

void set_prefill_path(PrefillPath path) { g_prefill = path; }
PrefillPath prefill_path() { return g_prefill; }

bool uses_int8_prefill(const QTensor& w) {
  if (!qk::decodable(w)) return false;
  return g_prefill != PrefillPath::kFloatPanels;
}

bool uses_bf16_prefill(const QTensor& w) {
  return w.scheme.format == QuantFormat::kBF16 && g_prefill != PrefillPath::kFloatPanels &&
         g_isa == Isa::kAvx512 && cpu_has_avx512_bf16();
}

Isa set_qmatmul_isa(Isa isa) {
  g_isa = std::min(isa, best_supported_isa());
  return g_isa;
}

bool uses_int8_activations(const QTensor& w) { return int_layout(w, nullptr); }

void quantize_activation_q8(const float* x, int64_t K, bool even_odd, ActivationQ8* out, int block) {
  KLLENS_CHECK(block == 32 || block == 256, "activation block {} is not 32 or 256", block);
  KLLENS_CHECK(K % block == 0, "activation length {} is not a multiple of {}", K, block);
  KLLENS_CHECK(block == 32 || !even_odd, "even/odd order is for blocks of 32");
  const int64_t nb = K / 32;
  out->block = block;
  out->q.resize(static_cast<size_t>(K));
  out->d.resize(static_cast<size_t>(K / block));
  out->sum.resize(static_cast<size_t>(nb));
  out->neg_lane_sum.resize(static_cast<size_t>(K / 4));
  out->d_lane.resize(even_odd ? 0 : static_cast<size_t>(K / 4));
  out->dsum16.resize(even_odd ? 0 : static_cast<size_t>(K / 16));
  out->sum16.resize(even_odd ? 0 : static_cast<size_t>(K / 16));
  out->even_odd = even_odd;
  for (int64_t s0 = 0; s0 < K; s0 += block) {
    float amax = 0;
    for (int j = 0; j < block; ++j) amax = std::max(amax, std::fabs(x[s0 + j]));
    out->d[s0 / block] = amax / 127.0f;
  }
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + 32 * b;
    const float d = out->d[32 * b / block];
    const float inv = d > 0 ? 1.0f / d : 0.0f;
    int8_t* qb = out->q.data() + 32 * b;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      // Element j goes to slot j (natural order) or, even_odd, evens to 0..15, odds to 16..31.
      const int slot = even_odd ? (j % 2) * 16 + j / 2 : j;
      const int v = static_cast<int>(round_half_away(xb[j] * inv));
      qb[slot] = static_cast<int8_t>(v);
      sum += v;
    }
    out->sum[b] = sum;
    for (int l = 0; l < 8; ++l)
      out->neg_lane_sum[8 * b + l] = -(qb[4 * l] + qb[4 * l + 1] + qb[4 * l + 2] + qb[4 * l + 3]);
    if (!even_odd) {
      for (int l = 0; l < 8; ++l) out->d_lane[8 * b + l] = d;
      for (int h = 0; h < 2; ++h) {
        int32_t s16 = 0;
        for (int j = 0; j < 16; ++j) s16 += qb[16 * h + j];
        out->sum16[2 * b + h] = static_cast<int16_t>(s16);
        out->dsum16[2 * b + h] = d * static_cast<float>(s16);
      }
    }
  }
}

int activation_block(const QTensor& w) {
  const BlockFormatTraits* t = block_traits(w.scheme.format);
  return t && t->block_elems == 256 ? 256 : 32;
}

void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T) {
  const int64_t N = w.rows, K = w.cols;
  if (T <= 0 || N <= 0) return;
  if (w.scheme.format == QuantFormat::kF32) {
    ops::matmul_nt(y, x, reinterpret_cast<const float*>(w.data.data()), bias, T, N, K);
    return;
  }
  if (T == 1) {
    matvec(y, x, w);
  } else if (uses_int8_prefill(w)) {
    matmul_int8(y, x, w, T);
  } else if (uses_bf16_prefill(w)) {
    matmul_bf16(y, x, w, T);
  } else {
    matmul_panels(y, x, w, T);
  }
  add_bias(y, bias, T, N);
}

namespace qk {

bool decodable(const QTensor& w) {
  const QuantScheme& s = w.scheme;
  if (w.cols % 32 != 0 || w.cols == 0 || s.is_keep()) return false;
  if (s.is_int()) return w.group_size() % 16 == 0;
  return w.cols % s.group_size == 0;
}

void decode_row_scalar(const QTensor& w, int64_t r, DecodedRow out) { decode_row_any(w, r, out); }

void coded_dot_scalar(const DecodedRow& w, int64_t K, bool, const ActivationQ8* acts, int64_t T,
                      float* y, int64_t y_stride) {
  for (int64_t t = 0; t < T; ++t) {
    const ActivationQ8& a = acts[t];
    float acc = 0;
    for (int64_t j = 0; j < K / 16; ++j) {
      int32_t dot = 0;
      for (int k = 0; k < 16; ++k) dot += static_cast<int32_t>(w.codes[16 * j + k]) * a.q[16 * j + k];
      acc += w.scale16[j] * a.d_lane[4 * j] * static_cast<float>(dot) + w.offset16[j] * a.dsum16[j];
    }
    y[t * y_stride] = acc;
  }
}

void block_scale_offset(const IntRows& w, int64_t r, int64_t b, float* s, float* o) {
  switch (w.layout) {
    case CodeLayout::kQ8_0: {
      uint16_t d;
      std::memcpy(&d, w.data + (r * w.blocks_per_row() + b) * sizeof(BlockQ8_0), 2);
      *s = f16_to_f32(d);
      *o = -128.0f * *s;
      return;
    }
    case CodeLayout::kQ4_0: {
      uint16_t d;
      std::memcpy(&d, w.data + (r * w.blocks_per_row() + b) * sizeof(BlockQ4_0), 2);
      *s = f16_to_f32(d);
      *o = -8.0f * *s;
      return;
    }
    case CodeLayout::kU8:
    case CodeLayout::kU4EvenOdd: {
      const int64_t g = w.group_of_block(r, b);
      *s = w.scales_f16 ? f16_to_f32(w.scales_f16[g]) : w.scales_f32[g];
      const int z = w.zeros ? w.zeros[g] : w.default_zero;
      *o = -static_cast<float>(z) * *s;
      return;
    }
  }
}

void block_codes(const IntRows& w, int64_t r, int64_t b, uint8_t* u) {
  switch (w.layout) {
    case CodeLayout::kQ8_0: {
      const uint8_t* qs = w.data + (r * w.blocks_per_row() + b) * sizeof(BlockQ8_0) + 2;
      for (int j = 0; j < 32; ++j) u[j] = static_cast<uint8_t>(qs[j] ^ 0x80);
      return;
    }
    case CodeLayout::kQ4_0:
    case CodeLayout::kU4EvenOdd: {
      const uint8_t* qs = w.layout == CodeLayout::kQ4_0
                              ? w.data + (r * w.blocks_per_row() + b) * sizeof(BlockQ4_0) + 2
                              : w.data + (r * w.cols + 32 * b) / 2;
      for (int j = 0; j < 16; ++j) {
        u[j] = qs[j] & 0x0F;
        u[j + 16] = qs[j] >> 4;
      }
      return;
    }
    case CodeLayout::kU8:
      std::memcpy(u, w.data + r * w.cols + 32 * b, 32);
      return;
  }
}

void int_rows_scalar(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  const int64_t nb = w.blocks_per_row();
  uint8_t u[32];
  for (int64_t r = r0; r < r1; ++r) {
    float acc = 0;
    for (int64_t b = 0; b < nb; ++b) {
      block_codes(w, r, b, u);
      const int8_t* q = a.q.data() + 32 * b;
      int32_t dot = 0;
      for (int j = 0; j < 32; ++j) dot += static_cast<int32_t>(u[j]) * q[j];
      float s, o;
      block_scale_offset(w, r, b, &s, &o);
      acc += a.d[b] * (s * static_cast<float>(dot) + o * static_cast<float>(a.sum[b]));
    }
    y[r] = acc;
  }
}

void half_rows_scalar(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* row = w.data + r * w.cols;
    float acc = 0;
    for (int64_t k = 0; k < w.cols; ++k)
      acc += (w.bf16 ? bf16_to_f32(row[k]) : f16_to_f32(row[k])) * x[k];
    y[r] = acc;
  }
}

}  // namespace qk

namespace ref {

void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T) {
  const int64_t N = w.rows, K = w.cols;
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    dequantize_row(w, n, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double acc = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(row[k]) * x[t * K + k];
      y[t * N + n] = static_cast<float>(acc);
    }
  }
}

void qmatmul_decoded(float* y, const float* x, const QTensor& w, const float* bias, int64_t T) {
  KLLENS_CHECK(qk::decodable(w), "{} does not decode to integer rows", w.scheme.to_string());
  const int64_t K = w.cols;
  std::vector<uint8_t> codes(static_cast<size_t>(K));
  std::vector<float> s16(static_cast<size_t>(K / 16)), o16(s16.size());
  std::vector<ActivationQ8> acts(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) quantize_activation_q8(x + t * K, K, false, &acts[t], activation_block(w));
  for (int64_t r = 0; r < w.rows; ++r) {
    qk::decode_row_scalar(w, r, {codes.data(), s16.data(), o16.data()});
    for (int64_t t = 0; t < T; ++t) {
      const ActivationQ8& a = acts[t];
      double acc = bias ? bias[r] : 0.0;
      for (int64_t j = 0; j < K / 16; ++j) {
        int64_t dot = 0, qsum = 0;
        for (int k = 0; k < 16; ++k) {
          dot += static_cast<int64_t>(codes[16 * j + k]) * a.q[16 * j + k];
          qsum += a.q[16 * j + k];
        }
        acc += static_cast<double>(a.d_lane[4 * j]) * (static_cast<double>(s16[j]) * static_cast<double>(dot) +
                                                       static_cast<double>(o16[j]) * static_cast<double>(qsum));
      }
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

void qmatvec_int8(float* y, const float* x, const QTensor& w, const float* bias) {
  IntRows ir;
  KLLENS_CHECK(int_layout(w, &ir), "{} does not run on int8 activations", w.scheme.to_string());
  ActivationQ8 act;
  quantize_activation_q8(x, w.cols, ir.layout == CodeLayout::kU4EvenOdd, &act);
  uint8_t u[32];
  for (int64_t r = 0; r < w.rows; ++r) {
    double acc = bias ? bias[r] : 0.0;
    for (int64_t b = 0; b < ir.blocks_per_row(); ++b) {
      qk::block_codes(ir, r, b, u);
      int64_t dot = 0;
      for (int j = 0; j < 32; ++j) dot += static_cast<int64_t>(u[j]) * act.q[32 * b + j];
      float s, o;
      qk::block_scale_offset(ir, r, b, &s, &o);
      acc += static_cast<double>(act.d[b]) *
             (static_cast<double>(s) * static_cast<double>(dot) +
              static_cast<double>(o) * static_cast<double>(act.sum[b]));
    }
    y[r] = static_cast<float>(acc);
  }
}

}  // namespace ref

}  // namespace kllens
