// Matrix products with a packed weight (QTensor): y {T, N} = x {T, K} · Wᵀ (+ bias), where W is
// the dequantized QTensor {N, K}. This is what makes a quantized model run at its stored size.
//
// Which arithmetic runs (docs/quantization.md, "Runtime"):
//  * decode (T == 1), integer schemes with 32-aligned groups (q8_0, q4_0, int8 and int4 with
//    G a multiple of 32 or G = 0, sym or asym): the activation row is quantized to int8 in blocks
//    of 32 (scale max|x|/127, round half away from zero: ggml's q8_0 activations, with a float32
//    scale) and the block dot products are integer (AVX-512 VNNI vpdpbusd, or AVX2 pmaddubsw);
//    the weight's scale and zero point are applied per group in float32. This is how llama.cpp
//    runs q8_0/q4_0, and it reads the fewest bytes per token.
//  * decode, bf16/f16 and the other integer schemes (B not 4 or 8, groups not 32-aligned):
//    float activations; each weight row is widened to float32 in registers (bf16/f16) or
//    dequantized row by row (generic) and multiplied in float32.
//  * prefill (T > 1), every scheme: panels of rows are dequantized to float32 (bit for bit the
//    fake-quantized weights) and multiplied by BLAS, so a quantized model's prefill logits equal
//    fake-quantized evaluation up to summation order.
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

// Whether the packed runtime has kernels of its own for this scheme: intB, q8_0, q4_0 and the keep
// schemes. The other ggml block formats (q4_1, q5_x, K-quants, iq4_x) would only run through
// the row-by-row dequantizing fallback, so models hold them dequantized to float32 instead
// (GGUF import, pack_model) until their kernels exist.
bool has_packed_kernel(const QuantScheme& scheme);

// Whether decode runs the int8-activation path for this tensor (see above).
bool uses_int8_activations(const QTensor& w);

// An activation row quantized in blocks of 32 (the int8 path's other operand).
struct ActivationQ8 {
  std::vector<int8_t> q;      // K values; for int4 tensors each block's even elements come first
  std::vector<float> d;       // K / 32 scales
  std::vector<int32_t> sum;   // K / 32 sums of q per block
  // K / 4: minus the sum of each 4 consecutive q (the lanes of one vpdpbusd), so a block's
  // Σ (u - z) q starts from z · neg_lane_sum without a scalar correction when z is a power of 2.
  std::vector<int32_t> neg_lane_sum;
  bool even_odd = false;
};
// K must be a multiple of 32. even_odd: order each block as elements 0,2,..,30,1,3,..,31 (the
// order of kllens' int4 bit stream, whose byte j holds elements 2j and 2j+1).
void quantize_activation_q8(const float* x, int64_t K, bool even_odd, ActivationQ8* out);

// y {T, N} = x {T, K} · Wᵀ (+ bias {N}); N = w.rows, K = w.cols. Keep schemes f32 go to
// ops::matmul_nt. Parallel over rows of W (OpenMP).
void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T);

namespace ref {
// Float activations: dequantize_row, double accumulation.
void qmatmul_nt(float* y, const float* x, const QTensor& w, const float* bias, int64_t T);
// The int8-activation path in plain scalar code (same quantized activations, exact integer block
// sums, double accumulation of the scaled sums). w must satisfy uses_int8_activations.
void qmatvec_int8(float* y, const float* x, const QTensor& w, const float* bias);
}  // namespace ref

}  // namespace kllens
