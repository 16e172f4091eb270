// kllens' refined quantizers for ggml's Q4_K, Q5_K and Q6_K layouts (schemes "q4_K:refined", ...):
// ggml's bytes layout, chosen to minimise the importance-weighted squared error; never worse than
// ggml's own block under that error. Algorithm and objective: src/quant/ggml_refined.cpp.
// Same signature and row contract as the quantizers in quant/ggml_quants.h.
#pragma once

#include <cstdint>

namespace kllens::ggml {

void quantize_row_q4_K_refined(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q5_K_refined(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q6_K_refined(const float* x, void* dst, int64_t n, const float* qw);

}  // namespace kllens::ggml
