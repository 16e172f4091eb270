// The byte packing of the K-quant super-blocks, shared by ggml's quantizers
// (src/quant/ggml_kquants.cpp) and kllens' refined ones (src/quant/ggml_refined.cpp), so both
// write one layout. Internal to src/quant/ggml_*.cpp.
#pragma once

#include <cstdint>

#include "quant/ggml_quants.h"

namespace kllens::ggml {

// Q4_K / Q5_K: 8 6-bit scale codes and 8 6-bit min codes into the 12 scale bytes (zeroed first
// by the caller).
void pack_k4_scales(const uint8_t* ls, const uint8_t* lm, uint8_t* scales);
// Q4_K: 256 codes 0..15 into qs.
void pack_q4_K_codes(const uint8_t* L, uint8_t* qs);
// Q5_K: 256 codes 0..31 into qh (zeroed here) and qs.
void pack_q5_K_codes(const uint8_t* L, uint8_t* qh, uint8_t* qs);
// Q6_K: 256 codes 0..63 (value + 32) into ql and qh.
void pack_q6_K_codes(const int8_t* L, BlockQ6_K* y);

}  // namespace kllens::ggml
