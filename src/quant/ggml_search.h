// ggml's scale-search helpers (static in ggml/src/ggml-quants.c at llama.cpp 3f545becc), which
// decide the bytes of every format quantized with an importance vector and of the K-quants.
// Semantics: ../shared/docs/llamacpp-formats-and-hybrids.md §1.4. Internal to src/quant/ggml_*.cpp.
//
// In each, "max" is the signed element with the largest |x| (strict comparison: the first wins);
// sums run sequentially in float over index 0..n-1 and the translation units are compiled with
// -ffp-contract=off (CMakeLists.txt), as ggml-base is on x86-64.
#pragma once

#include <cstdint>

namespace kllens::ggml {

// Returns the scale; L[i] in [0, 2*nmax-1] (code + nmax). qw may be nullptr (weights by
// rmse_type: 1 -> x², 2 -> 1, 3 -> |x|, else sqrt|x|).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw);

// Returns the scale; L[i] in [0, 2*nmax-1].
float make_q3_quants(int n, int nmax, const float* x, int8_t* L, bool do_rmse);

// Returns the scale; *the_min is the positive offset (-min). Laux: n bytes of scratch.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad);

// As make_qkx2_quants; weights may be nullptr (then x²).
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad);

// x >= 0 (scales or mins of sub-blocks); returns the scale, L[i] in [0, nmax].
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);

// Index of the nearest table value (clamped outside; ties go to the higher index).
int best_index_int8(int n, const int8_t* val, float x);

}  // namespace kllens::ggml
