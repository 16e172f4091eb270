// Matrix products with a packed weight (QTensor): y {T, N} = x {T, K} · Wᵀ (+ bias), where W is
// the dequantized QTensor {N, K}. This is what makes a quantized model run at its stored size.
//
// Which arithmetic runs (docs/quantization.md, "Runtime"):
//  * integer weights (intB with groups of a multiple of 16, and every ggml block format): the
//    activation rows are quantized to int8 in blocks of 32 (scale max|x|/127, round half away
//    from zero: ggml's q8_0 activations, with a float32 scale) and the weights multiply them with
//    integer dot products (AVX-512 VNNI vpdpbusd, or AVX2 pmaddubsw); the weights' scales and
//    offsets are applied per 16 or 32 elements in float32.
//     - decode (T == 1), q8_0/q4_0 (held as int8/int4:g32) and int8/int4 with 32-aligned groups:
//       kernels that read the codes straight from the stream (the fewest instructions per byte).
//     - decode, the other formats (K-quants, q4_1, q5_x, iq4_x, other intB): each row is decoded
//       into unsigned codes with a scale and offset per 16 elements (qk::DecodedRow, in L1), then
//       the same integer dot products.
//     - prefill (T > 1): panels of 16 decoded rows against tiles of tokens, so each row is
//       decoded once per call. set_prefill_path can force the float path below (benchmarks).
//  * bf16/f16, and intB whose groups do not fit 16-element steps (e.g. rows of 48 at g32): float
//    activations; each weight row is widened to float32 in registers (bf16/f16) or dequantized
//    row by row (generic) and multiplied in float32. Prefill multiplies dequantized float32
//    panels with BLAS (bit for bit the fake-quantized weights), except bf16 on CPUs with
//    AVX512_BF16: activations rounded to bf16 and vdpbf16ps (relative error 2^-9 per activation).
//
// Every fast path has a scalar reference in namespace ref; tests compare them.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "quant/quantize.h"

namespace kllens {

// Instruction sets the quantized kernels can use. Picked at run time from the CPU
// (__builtin_cpu_supports); KLLENS_ISA=scalar|avx2|avx512 in the environment, or set_qmatmul_isa,
// caps it (tests and benchmarks compare paths).
enum class Isa : uint8_t { kScalar, kAvx2, kAvx512 };
std::string_view isa_name(Isa isa);
Isa best_supported_isa();
Isa qmatmul_isa();
// Clamps to what the CPU supports; returns the path now in use.
Isa set_qmatmul_isa(Isa isa);

// Whether decode runs the streaming int8-activation kernels for this tensor (q8_0/q4_0/int8/int4
// with 32-aligned groups, see above).
bool uses_int8_activations(const QTensor& w);

// Which arithmetic prefill uses for integer weights: kAuto (integer dot products, the measured
// faster one; docs/quantization.md) or float32 panels through BLAS (kFloatPanels).
enum class PrefillPath : uint8_t { kAuto, kFloatPanels };
void set_prefill_path(PrefillPath path);
PrefillPath prefill_path();
// Whether T > 1 products with this tensor run on int8 activations.
bool uses_int8_prefill(const QTensor& w);
// Whether T > 1 products with this bf16 tensor run on bf16-rounded activations with AVX512_BF16
// dot products (quant/qmatmul_avx512bf16.cpp; the AVX-512 path on a CPU that has them).
bool uses_bf16_prefill(const QTensor& w);

// An activation row quantized in blocks of 32 (the int8 path's other operand).
struct ActivationQ8 {
  int block = 32;             // elements per scale: 32, or 256 for the super-block formats
  std::vector<int8_t> q;      // K values; for int4 tensors each block's even elements come first
  std::vector<float> d;       // K / block scales
  std::vector<int32_t> sum;   // K / 32 sums of q per 32 elements
  // K / 4: minus the sum of each 4 consecutive q (the lanes of one vpdpbusd), so a block's
  // Σ (u - z) q starts from z · neg_lane_sum without a scalar correction when z is a power of 2.
  std::vector<int32_t> neg_lane_sum;
  // Natural order only (the decoded-row and fused K-quant paths): K / 4 copies of the scale, one
  // per lane of four elements, and per 16 elements Σq and d · Σq.
  std::vector<float> d_lane;
  std::vector<float> dsum16;
  std::vector<int16_t> sum16;
  bool even_odd = false;
};
// K must be a multiple of block (32 or 256: one scale max|x|/127 per block). even_odd (block 32
// only): order each 32 as elements 0,2,..,30,1,3,..,31 (the order of kllens' int4 bit stream,
// whose byte j holds elements 2j and 2j+1).
void quantize_activation_q8(const float* x, int64_t K, bool even_odd, ActivationQ8* out, int block = 32);
// The activation block the integer path quantizes w's input in: 256 for the super-block formats
// (K-quants, iq4_xs: one scale per super-block, as llama.cpp's q8_K, so the sub-block scales can
// be applied in integer arithmetic), else 32.
int activation_block(const QTensor& w);

// y {T, N} = x {T, K} · Wᵀ (+ bias {N}); N = w.rows, K = w.cols. Keep schemes f32 go to
// ops::matmul_nt. Parallel over rows of W (OpenMP).
void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T);

namespace ref {
// Float activations: dequantize_row, double accumulation.
void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T);
// The decoded-row integer path (every format qk::decodable accepts) in plain scalar code: exact
// integer sums per 16 elements, double accumulation. T rows of x, y {T, N}.
void qmatmul_decoded(float* y, const float* x, const QTensor& w, const float* bias, int64_t T);
// The int8-activation path in plain scalar code (same quantized activations, exact integer block
// sums, double accumulation of the scaled sums). w must satisfy uses_int8_activations.
void qmatvec_int8(float* y, const float* x, const QTensor& w, const float* bias);
}  // namespace ref

}  // namespace kllens
