// Reference quantizers. One per-group routine (int_row) and llama.cpp's block routines serve both
// quantize() and fake_quantize(), and both decode with the same float32 expression
// ((q - z) * s, or ggml's dequantizers), so what a sensitivity sweep measures with fake_quantize
// is exactly what a packed QTensor holds (a test checks bit identity for every scheme).
//
// Numerics (docs/quantization.md): everything is float32 as in the PyTorch reference of the
// fixtures (`torch.round(w / scale)`, a true division, ties to even via std::nearbyint under the
// default rounding mode, which kllens never changes). GCC's default -ffp-contract=fast (gnu++20)
// may fuse a*b+c; the only such expression here is q4_0's `x*id + 8.5f`, whose function is
// compiled with contraction off to keep llama.cpp's unfused C semantics (a test pins a case
// where fusion changes the code).
#include "quant/quantize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/formats.h"

namespace kllens {

namespace {

enum class Status : int { kOk = 0, kNonFinite = 1, kScaleOverflow = 2 };

bool is_finite(float v) { return std::fabs(v) <= FLT_MAX; }  // false for NaN and +-inf

// Fixed per-scheme constants of an intB scheme.
struct IntParams {
  int bits = 0;
  bool symmetric = true;
  bool scale_f16 = true;
  int code_lo = 0, code_hi = 0;  // sym: [-2^(B-1), 2^(B-1)-1]; asym: [0, 2^B-1]
  int code_offset = 0;           // stored unsigned = code + offset (sym: 2^(B-1); asym: 0)
  float levels = 0;              // scale divisor: sym 2^(B-1)-1, asym 2^B-1

  explicit IntParams(const QuantScheme& s)
      : bits(s.bits), symmetric(s.symmetric), scale_f16(s.scale_f16) {
    if (symmetric) {
      code_lo = -(1 << (bits - 1));
      code_hi = (1 << (bits - 1)) - 1;
      code_offset = 1 << (bits - 1);
      levels = static_cast<float>(code_hi);
    } else {
      code_lo = 0;
      code_hi = (1 << bits) - 1;
      code_offset = 0;
      levels = static_cast<float>(code_hi);
    }
  }
};

// The one decoding expression of intB (shared by fake_quantize and dequantize): w' = (q - z) * s
// in float32, where q - z is a small integer and so exact in float.
inline float decode_int(int code, int zero, float scale) {
  return static_cast<float>(code - zero) * scale;
}

// Rounds a positive float32 scale to the stored type. s16: nearest-even float16. A scale that
// underflows to 0 (raw scale <= 2^-25) uses the smallest float16 subnormal 2^-24 instead: the
// group's weights are below levels * 2^-25, so their codes do not clamp and they decode within
// 2^-25 of themselves. A scale that overflows to infinity is an error. s32: unchanged.
Status round_scale(float scale, bool scale_f16, float* rounded, uint16_t* bits) {
  if (!scale_f16) {
    *rounded = scale;
    *bits = 0;
    return Status::kOk;
  }
  uint16_t h = f32_to_f16(scale);
  if ((h & 0x7fffu) == 0) h = 0x0001u;
  const float r = f16_to_f32(h);
  if (!is_finite(r)) return Status::kScaleOverflow;
  *rounded = r;
  *bits = h;
  return Status::kOk;
}

// The range of a group: sym: hi = max|x| (lo = 0); asym: [min(0, min x), max(0, max x)].
// Returns false when a weight is NaN or infinite. max/min are exact and order-independent for
// finite inputs, so the vectorized reduction (`omp simd`) gives the scalar loop's result.
bool group_range(const float* x, int64_t n, bool symmetric, float* lo_out, float* hi_out) {
  float lo = 0, hi = 0;
  int bad = 0;
  if (symmetric) {
#pragma omp simd reduction(max : hi) reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(x[i]);
      bad |= !(a <= FLT_MAX);
      hi = std::max(hi, a);
    }
  } else {
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
      bad |= !(std::fabs(x[i]) <= FLT_MAX);
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
  }
  *lo_out = lo;
  *hi_out = hi;
  return bad == 0;
}

// Quantizes one row of `cols` weights in groups of `group` elements. Outputs (each may be null):
//   codes: the stored unsigned code of each element (one byte each); when given, dq is ignored;
//   scales16 / scales32 / zeros: one entry per group (float16 bits / float32 scale / zero point);
//   dq: the decoded weights (may alias w: each group is scanned before it is written).
Status int_row(const IntParams& p, int64_t group, const float* w, int64_t cols, uint8_t* codes,
               uint16_t* scales16, float* scales32, uint8_t* zeros, float* dq) {
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group, ++gi) {
    const float* x = w + g0;
    float scale = 0, zero_f = 0;
    // The asymmetric range always contains 0 so that 0 is exactly representable and every
    // weight lies in [(0 - z) * s, (2^B - 1 - z) * s] (docs/quantization.md, "asymmetric").
    float lo = 0, hi = 0;
    if (!group_range(x, group, p.symmetric, &lo, &hi)) return Status::kNonFinite;
    if (p.symmetric) {
      // scale = max|w| / (2^(B-1) - 1), a zero scale becomes 1 (the fixtures' definition).
      scale = hi / p.levels;
    } else {
      // scale = (max - min) / (2^B - 1), a zero scale becomes 1.
      scale = (hi - lo) / p.levels;
      if (!is_finite(scale)) return Status::kScaleOverflow;  // hi - lo overflowed float32
    }
    if (scale == 0) scale = 1;
    uint16_t bits16 = 0;
    if (Status st = round_scale(scale, p.scale_f16, &scale, &bits16); st != Status::kOk) return st;
    // z = clamp(round_half_even(-min / s), 0, 2^B - 1), with s the scale as stored.
    if (!p.symmetric)
      zero_f = std::clamp(std::nearbyint(-lo / scale), 0.0f, static_cast<float>(p.code_hi));
    const int zero = static_cast<int>(zero_f);
    if (scales16) scales16[gi] = bits16;
    if (scales32) scales32[gi] = scale;
    if (zeros) zeros[gi] = static_cast<uint8_t>(zero);

    const float lo_code = static_cast<float>(p.code_lo), hi_code = static_cast<float>(p.code_hi);
    // q = clamp(round_half_even(w / s) + z, lo, hi), computed as an integer-valued float (the sum
    // is of small integers, so exact). Two loops so that each vectorizes; dq may alias w.
    // `omp simd` only overrides -O2's cheap vectorizer cost model: the loops are element-wise
    // (no reductions), so vector and scalar code give the same bits.
    if (codes) {
#pragma omp simd
      for (int64_t i = 0; i < group; ++i) {
        const float r = std::min(std::max(std::nearbyint(x[i] / scale) + zero_f, lo_code), hi_code);
        codes[g0 + i] = static_cast<uint8_t>(static_cast<int>(r) + p.code_offset);
      }
    } else if (dq) {
#pragma omp simd
      for (int64_t i = 0; i < group; ++i) {
        const float r = std::min(std::max(std::nearbyint(x[i] / scale) + zero_f, lo_code), hi_code);
        // == decode_int(int(r), zero, scale): r - zero_f is the exact small integer q - z.
        dq[g0 + i] = (r - zero_f) * scale;
      }
    }
  }
  return Status::kOk;
}

// --- bit-packed codes --------------------------------------------------------------------------

// Packs n codes (< 2^bits, one per byte) into the little-endian bit stream. Parallel over chunks
// of 8 codes, which always start on a byte boundary (8 * bits bits), so no byte is shared.
void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  const int64_t chunks = (n + 7) / 8;
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t e0 = c * 8;
    const int64_t m = std::min<int64_t>(8, n - e0);
    uint64_t acc = 0;
    for (int64_t k = 0; k < m; ++k) acc |= static_cast<uint64_t>(codes[e0 + k]) << (k * bits);
    const int64_t nbytes = (m * bits + 7) / 8;
    for (int64_t b = 0; b < nbytes; ++b)
      out[c * bits + b] = static_cast<uint8_t>(acc >> (8 * b));
  }
}

inline unsigned read_code(const uint8_t* data, int64_t e, int bits) {
  const int64_t bit = e * bits;
  const int64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  unsigned v = data[byte];
  if (shift + bits > 8) v |= static_cast<unsigned>(data[byte + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1u);
}

// Unpacks codes of elements [e0, e0 + n) into out (one byte each).
void unpack_codes(const uint8_t* data, int64_t e0, int64_t n, int bits, uint8_t* out) {
  // 8 and 4 bits, the common widths: whole bytes, or two nibbles per byte (element 2j low).
  if (bits == 8) {
    std::memcpy(out, data + e0, static_cast<size_t>(n));
    return;
  }
  if (bits == 4 && (e0 & 1) == 0 && (n & 1) == 0) {
    const uint8_t* bytes = data + e0 / 2;
    for (int64_t j = 0; j < n / 2; ++j) {
      out[2 * j] = bytes[j] & 0x0F;
      out[2 * j + 1] = bytes[j] >> 4;
    }
    return;
  }
  int64_t e = e0;
  const int64_t end = e0 + n;
  for (; e < end && (e & 7) != 0; ++e) out[e - e0] = static_cast<uint8_t>(read_code(data, e, bits));
  const uint64_t mask = (1u << bits) - 1u;
  for (; e + 8 <= end; e += 8) {
    uint64_t acc = 0;
    std::memcpy(&acc, data + (e / 8) * bits, static_cast<size_t>(bits));
    for (int k = 0; k < 8; ++k) out[e - e0 + k] = static_cast<uint8_t>((acc >> (k * bits)) & mask);
  }
  for (; e < end; ++e) out[e - e0] = static_cast<uint8_t>(read_code(data, e, bits));
}

void write_code(uint8_t* data, int64_t e, int bits, unsigned u) {
  const int64_t bit = e * bits;
  const int64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  const unsigned mask = ((1u << bits) - 1u) << shift;
  const unsigned v = (u << shift) & mask;
  data[byte] = static_cast<uint8_t>((data[byte] & ~mask) | v);
  if (shift + bits > 8) {
    data[byte + 1] = static_cast<uint8_t>((data[byte + 1] & ~(mask >> 8)) | (v >> 8));
  }
}

// --- float "keep" schemes ------------------------------------------------------------------------

Status keep_row(QuantFormat format, const float* w, int64_t cols, uint8_t* raw, float* dq) {
  // A NaN input gives a NaN output; a finite input beyond the type's range gives infinity.
  int nonfinite_in = 0, nonfinite_out = 0;
#pragma omp simd reduction(| : nonfinite_in, nonfinite_out)
  for (int64_t i = 0; i < cols; ++i) {
    const float x = w[i];
    const uint16_t h = format == QuantFormat::kF16 ? f32_to_f16(x) : f32_to_bf16(x);
    const float y = format == QuantFormat::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
    nonfinite_in |= !is_finite(x);
    nonfinite_out |= !is_finite(y);
    if (raw) std::memcpy(raw + 2 * i, &h, 2);
    if (dq) dq[i] = y;
  }
  if (nonfinite_in) return Status::kNonFinite;
  return nonfinite_out ? Status::kScaleOverflow : Status::kOk;
}

// --- ggml blocks -------------------------------------------------------------------------------

// One row of any ggml block format through its row of the traits table. `blocks` receives the
// row's blocks (scratch when the caller keeps only the values); dq, when given, the decoded
// values. A finite input whose decoded values are not finite overflowed a float16 scale.
Status block_row(const BlockFormatTraits& t, QuantizeRowFn quantize_row, const float* w,
                 int64_t cols, const float* importance, uint8_t* blocks, float* dq) {
  int nonfinite = 0;
#pragma omp simd reduction(| : nonfinite)
  for (int64_t i = 0; i < cols; ++i) nonfinite |= !is_finite(w[i]);
  if (nonfinite) return Status::kNonFinite;
  quantize_row(w, blocks, cols, importance);
  // In place (dq == w) is fine: the blocks no longer read w.
  thread_local std::vector<float> decoded;
  float* out = dq;
  if (!out) {
    decoded.resize(static_cast<size_t>(cols));
    out = decoded.data();
  }
  t.dequantize_row(blocks, out, cols);
  int overflow = 0;
#pragma omp simd reduction(| : overflow)
  for (int64_t i = 0; i < cols; ++i) overflow |= !is_finite(out[i]);
  return overflow ? Status::kScaleOverflow : Status::kOk;
}

// Collects the first failing row of a parallel loop; throws after the loop.
struct RowFailure {
  Status status = Status::kOk;
  int64_t row = -1;

  void record(Status st, int64_t r) {
    if (st == Status::kOk) return;
#pragma omp critical(kllens_quant_failure)
    if (row < 0 || r < row) {
      status = st;
      row = r;
    }
  }

  void throw_if_failed(const QuantScheme& scheme, int64_t rows, int64_t cols) const {
    if (status == Status::kOk) return;
    if (status == Status::kNonFinite)
      fail("cannot quantize a [{}, {}] matrix to {}: row {} holds a non-finite weight (NaN or "
           "infinity)",
           rows, cols, scheme.to_string(), row);
    if (scheme.is_keep())
      fail("cannot store a [{}, {}] matrix as {}: a weight in row {} is beyond the type's range",
           rows, cols, scheme.to_string(), row);
    fail("cannot quantize a [{}, {}] matrix to {}: a scale in row {} overflows {} (the weights "
         "are too large for it; use an :s32 int scheme or keep the tensor in f32)",
         rows, cols, scheme.to_string(), row, scheme.is_int() && !scheme.scale_f16 ? "float32"
                                                                                     : "float16");
  }
};

constexpr int64_t kParallelMinElems = 1 << 15;

}  // namespace

// --- llama.cpp reference block quantizers ------------------------------------------------------

// ref: ggml/src/ggml-quants.c quantize_row_q8_0_ref (one block):
//   amax = max|x|; d = amax / ((1 << 7) - 1); id = d ? 1.0f/d : 0.0f;
//   y.d = FP32_TO_FP16(d); y.qs[j] = roundf(x[j] * id)   (roundf: half away from zero)
// Note that the codes use the float32 d, not the float16-rounded one.
void quantize_block_q8_0(const float* x, BlockQ8_0* y) {
  float amax = 0.0f;
#pragma omp simd reduction(max : amax)
  for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  float r[kQK8_0];  // staged as float so that the rounding loop vectorizes
#pragma omp simd
  for (int j = 0; j < kQK8_0; ++j) r[j] = round_half_away(x[j] * id);
  for (int j = 0; j < kQK8_0; ++j) y->qs[j] = static_cast<int8_t>(r[j]);
}

// ref: ggml/src/ggml-quants.c quantize_row_q4_0_ref (one block):
//   max = the first x[j] of largest |x[j]| (strict '<' scan, so the earliest wins a tie);
//   d = max / -8; id = d ? 1.0f/d : 0.0f; y.d = FP32_TO_FP16(d);
//   xi = MIN(15, (int8_t)(x[j]*id + 8.5f)), truncation toward zero; qs[j] = xi(j) | xi(j+16) << 4
// Contraction is off here: llama.cpp's C computes x*id and +8.5f as two rounded operations.
__attribute__((optimize("fp-contract=off"))) void quantize_block_q4_0(const float* x,
                                                                      BlockQ4_0* y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK4_0; ++j) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[kQK4_0 / 2 + j] * id;
    const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
    const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
    y->qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
  }
}

// ref: ggml/src/ggml-quants.c dequantize_row_q8_0: y[j] = qs[j] * d.
void dequantize_block_q8_0(const BlockQ8_0& block, float* out) {
  const float d = f16_to_f32(block.d);
  for (int j = 0; j < kQK8_0; ++j) out[j] = static_cast<float>(block.qs[j]) * d;
}

// ref: ggml/src/ggml-quants.c dequantize_row_q4_0: y[j] = ((qs[j] & 0xF) - 8) * d,
// y[j + 16] = ((qs[j] >> 4) - 8) * d.
void dequantize_block_q4_0(const BlockQ4_0& block, float* out) {
  const float d = f16_to_f32(block.d);
  for (int j = 0; j < kQK4_0 / 2; ++j) {
    out[j] = static_cast<float>((block.qs[j] & 0x0F) - 8) * d;
    out[j + kQK4_0 / 2] = static_cast<float>((block.qs[j] >> 4) - 8) * d;
  }
}

// --- QTensor -----------------------------------------------------------------------------------

float QTensor::scale(int64_t row, int64_t group) const {
  KLLENS_CHECK(scheme.is_int(), "QTensor::scale on a {} tensor", scheme.to_string());
  const int64_t gpr = groups_per_row();
  KLLENS_CHECK(row >= 0 && row < rows && group >= 0 && group < gpr, "group ({}, {}) out of range",
               row, group);
  const int64_t i = row * gpr + group;
  return scheme.scale_f16 ? f16_to_f32(scales_f16[i]) : scales_f32[i];
}

int QTensor::code(int64_t row, int64_t col) const {
  KLLENS_CHECK(scheme.is_int(), "QTensor::code on a {} tensor", scheme.to_string());
  KLLENS_CHECK(row >= 0 && row < rows && col >= 0 && col < cols, "element ({}, {}) out of range",
               row, col);
  const int offset = scheme.symmetric ? 1 << (scheme.bits - 1) : 0;
  return static_cast<int>(read_code(data.data(), row * cols + col, scheme.bits)) - offset;
}

void QTensor::set_code(int64_t row, int64_t col, int code) {
  KLLENS_CHECK(scheme.is_int(), "QTensor::set_code on a {} tensor", scheme.to_string());
  KLLENS_CHECK(row >= 0 && row < rows && col >= 0 && col < cols, "element ({}, {}) out of range",
               row, col);
  const IntParams p(scheme);
  KLLENS_CHECK(code >= p.code_lo && code <= p.code_hi, "code {} outside [{}, {}]", code, p.code_lo,
               p.code_hi);
  write_code(data.data(), row * cols + col, scheme.bits, static_cast<unsigned>(code + p.code_offset));
}

int64_t QTensor::storage_bytes() const {
  return static_cast<int64_t>(data.size() + 2 * scales_f16.size() + 4 * scales_f32.size() +
                              zero_points.size());
}

const BlockQ8_0* QTensor::blocks_q8_0() const {
  KLLENS_CHECK(scheme.format == QuantFormat::kQ8_0, "blocks_q8_0 on a {} tensor",
               scheme.to_string());
  return reinterpret_cast<const BlockQ8_0*>(data.data());
}

const BlockQ4_0* QTensor::blocks_q4_0() const {
  KLLENS_CHECK(scheme.format == QuantFormat::kQ4_0, "blocks_q4_0 on a {} tensor",
               scheme.to_string());
  return reinterpret_cast<const BlockQ4_0*>(data.data());
}

// --- quantize / dequantize / fake_quantize -----------------------------------------------------

QTensor quantize(const QuantScheme& scheme, const float* w, int64_t rows, int64_t cols,
                 const float* importance) {
  scheme.check_shape(rows, cols, "matrix");
  QTensor q;
  q.scheme = scheme;
  q.rows = rows;
  q.cols = cols;
  const int64_t n = rows * cols;
  RowFailure failure;

  switch (scheme.format) {
    case QuantFormat::kF32:
      q.data.resize(static_cast<size_t>(n) * 4);
      if (n > 0) std::memcpy(q.data.data(), w, static_cast<size_t>(n) * 4);
      break;
    case QuantFormat::kF16:
    case QuantFormat::kBF16:
      q.data.resize(static_cast<size_t>(n) * 2);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
      for (int64_t r = 0; r < rows; ++r)
        failure.record(keep_row(scheme.format, w + r * cols, cols, q.data.data() + 2 * r * cols,
                                nullptr),
                       r);
      break;
    default: {
      const BlockFormatTraits& t = *block_traits(scheme.format);
      const QuantizeRowFn quantizer = row_quantizer(scheme);
      const int64_t row_bytes = cols / t.block_elems * t.block_bytes;
      q.data.resize(static_cast<size_t>(rows * row_bytes));
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
      for (int64_t r = 0; r < rows; ++r)
        failure.record(block_row(t, quantizer, w + r * cols, cols, importance,
                                 q.data.data() + r * row_bytes, nullptr),
                       r);
      break;
    }
    case QuantFormat::kInt: {
      const IntParams p(scheme);
      const int64_t group = scheme.effective_group(cols);
      const int64_t gpr = scheme.groups_per_row(cols);
      if (scheme.scale_f16) q.scales_f16.resize(static_cast<size_t>(rows * gpr));
      else q.scales_f32.resize(static_cast<size_t>(rows * gpr));
      if (!scheme.symmetric) q.zero_points.resize(static_cast<size_t>(rows * gpr));
      std::vector<uint8_t> codes(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
      for (int64_t r = 0; r < rows; ++r) {
        const Status st = int_row(
            p, group, w + r * cols, cols, codes.data() + r * cols,
            scheme.scale_f16 ? q.scales_f16.data() + r * gpr : nullptr,
            scheme.scale_f16 ? nullptr : q.scales_f32.data() + r * gpr,
            scheme.symmetric ? nullptr : q.zero_points.data() + r * gpr, nullptr);
        failure.record(st, r);
      }
      failure.throw_if_failed(scheme, rows, cols);
      q.data.resize(static_cast<size_t>((n * scheme.bits + 7) / 8));
      pack_codes(codes.data(), n, scheme.bits, q.data.data());
      break;
    }
  }
  failure.throw_if_failed(scheme, rows, cols);
  KLLENS_CHECK(q.storage_bytes() == scheme.storage_bytes(rows, cols),
               "packed {} bytes != storage_bytes {}", q.storage_bytes(),
               scheme.storage_bytes(rows, cols));
  return q;
}

void dequantize_row(const QTensor& q, int64_t row, float* out) {
  KLLENS_CHECK(row >= 0 && row < q.rows, "row {} out of range [0, {})", row, q.rows);
  const int64_t cols = q.cols;
  const QuantScheme& s = q.scheme;
  switch (s.format) {
    case QuantFormat::kF32:
      if (cols > 0) std::memcpy(out, q.data.data() + 4 * row * cols, static_cast<size_t>(cols) * 4);
      return;
    case QuantFormat::kF16:
    case QuantFormat::kBF16: {
      const uint8_t* raw = q.data.data() + 2 * row * cols;
      for (int64_t i = 0; i < cols; ++i) {
        uint16_t h;
        std::memcpy(&h, raw + 2 * i, 2);
        out[i] = s.format == QuantFormat::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    }
    case QuantFormat::kInt: break;
    default: {
      const BlockFormatTraits& t = *block_traits(s.format);
      t.dequantize_row(q.data.data() + row * (cols / t.block_elems) * t.block_bytes, out, cols);
      return;
    }
  }
  const IntParams p(s);
  const int64_t group = q.group_size();
  const int64_t gpr = q.groups_per_row();
  // Decode a row's codes into `out` reinterpreted as bytes would alias; use a small buffer.
  uint8_t buf[256];
  for (int64_t g = 0; g < gpr; ++g) {
    const int64_t i = row * gpr + g;
    const float scale = s.scale_f16 ? f16_to_f32(q.scales_f16[i]) : q.scales_f32[i];
    const int zero = s.symmetric ? 0 : q.zero_points[i];
    for (int64_t c0 = 0; c0 < group; c0 += 256) {
      const int64_t m = std::min<int64_t>(256, group - c0);
      const int64_t col = g * group + c0;
      unpack_codes(q.data.data(), row * cols + col, m, s.bits, buf);
      for (int64_t k = 0; k < m; ++k)
        out[col + k] = decode_int(static_cast<int>(buf[k]) - p.code_offset, zero, scale);
    }
  }
}

void unpack_int_codes(const QTensor& q, int64_t row, uint8_t* out) {
  KLLENS_CHECK(q.scheme.is_int(), "unpack_int_codes on {}", q.scheme.to_string());
  unpack_codes(q.data.data(), row * q.cols, q.cols, q.scheme.bits, out);
}

QTensor blocks_as_int_layout(QTensor q) {
  if (q.scheme.format != QuantFormat::kQ8_0 && q.scheme.format != QuantFormat::kQ4_0) return q;
  const bool q8 = q.scheme.format == QuantFormat::kQ8_0;
  QTensor out;
  out.scheme = QuantScheme::make_int(q8 ? 8 : 4, 32, true, true);
  out.rows = q.rows;
  out.cols = q.cols;
  const int64_t nb = q.cols / 32, blocks = q.rows * nb;
  out.data.assign(static_cast<size_t>(q8 ? q.rows * q.cols : q.rows * q.cols / 2), 0);
  out.scales_f16.resize(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) {
    if (q8) {
      const BlockQ8_0& b = q.blocks_q8_0()[i];
      out.scales_f16[i] = b.d;
      // Stored unsigned: code + 128.
      for (int j = 0; j < 32; ++j) out.data[32 * i + j] = static_cast<uint8_t>(b.qs[j] + 128);
    } else {
      const BlockQ4_0& b = q.blocks_q4_0()[i];
      out.scales_f16[i] = b.d;
      // ggml: element j is the low nibble of qs[j], element j + 16 the high one, each code + 8;
      // kllens: element 2k low and 2k + 1 high nibble of byte k, also code + 8.
      uint8_t* dst = out.data.data() + 16 * i;
      for (int j = 0; j < 32; ++j) {
        const uint8_t nib = j < 16 ? (b.qs[j] & 0x0F) : (b.qs[j - 16] >> 4);
        dst[j / 2] |= static_cast<uint8_t>(j % 2 == 0 ? nib : nib << 4);
      }
    }
  }
  return out;
}

void dequantize(const QTensor& q, float* out) {
#pragma omp parallel for schedule(static) if (q.rows * q.cols >= kParallelMinElems)
  for (int64_t r = 0; r < q.rows; ++r) dequantize_row(q, r, out + r * q.cols);
}

void fake_quantize(const QuantScheme& scheme, float* w, int64_t rows, int64_t cols,
                   const float* importance) {
  scheme.check_shape(rows, cols, "matrix");
  if (scheme.format == QuantFormat::kF32) return;
  const int64_t n = rows * cols;
  RowFailure failure;
  if (scheme.format == QuantFormat::kF16 || scheme.format == QuantFormat::kBF16) {
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
    for (int64_t r = 0; r < rows; ++r)
      failure.record(keep_row(scheme.format, w + r * cols, cols, nullptr, w + r * cols), r);
  } else if (scheme.is_block()) {
    const BlockFormatTraits& t = *block_traits(scheme.format);
    const QuantizeRowFn quantizer = row_quantizer(scheme);
    const int64_t row_bytes = cols / t.block_elems * t.block_bytes;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
    for (int64_t r = 0; r < rows; ++r) {
      thread_local std::vector<uint8_t> blocks;
      blocks.resize(static_cast<size_t>(row_bytes));
      failure.record(
          block_row(t, quantizer, w + r * cols, cols, importance, blocks.data(), w + r * cols), r);
    }
  } else {
    const IntParams p(scheme);
    const int64_t group = scheme.effective_group(cols);
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
    for (int64_t r = 0; r < rows; ++r) {
      // Only the decoded weights are kept (codes, scales and zero points are not stored).
      failure.record(
          int_row(p, group, w + r * cols, cols, nullptr, nullptr, nullptr, nullptr, w + r * cols),
          r);
    }
  }
  failure.throw_if_failed(scheme, rows, cols);
}

}  // namespace kllens
