// Attention kernels shared by every family with attention (Llama, Hymba, Falcon-H1, Jamba).
#pragma once

#include <cstdint>

namespace kllens::ops {

// Rotary embedding, HF "rotate_half" convention: for each head, the first rot_dim features are
// split into halves (x1 = [0, rot_dim/2), x2 = [rot_dim/2, rot_dim)) and rotated:
//   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin,  angle = pos * inv_freq[i].
// x {T, H, D} (row stride ld, heads contiguous)  pos {T}  inv_freq {rot_dim / 2}.
// cos/sin are computed in float32 like HF (angle = float(pos) * inv_freq).
void apply_rope(float* x, int64_t ld, int64_t T, int64_t H, int64_t D, const int64_t* pos,
                const float* inv_freq, int64_t rot_dim);

struct AttentionShape {
  int64_t T = 0;        // queries
  int64_t S = 0;        // keys
  int64_t Hq = 0;       // query heads
  int64_t Hkv = 0;      // key/value heads (Hq % Hkv == 0; query head h uses kv head h / (Hq/Hkv))
  int64_t Dk = 0;       // query/key head size
  int64_t Dv = 0;       // value head size
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // row strides (0 = contiguous heads)
};

// Causal softmax attention with optional sliding window and an always-visible prefix.
// q {T, Hq, Dk}  k {S, Hkv, Dk}  v {S, Hkv, Dv}  out {T, Hq, Dv}
// q_pos {T}, k_pos {S}: absolute positions. Key s is visible to query t iff
//   k_pos[s] <= q_pos[t]  and  (window <= 0 or q_pos[t] - k_pos[s] < window or k_pos[s] < n_sink)
// where n_sink positions at the start (e.g. Hymba's meta tokens) are always visible.
// softmax(scale * q·k) in float32 with max subtraction; a query with no visible key gets zeros.
void attention(float* out, const float* q, const float* k, const float* v, const int64_t* q_pos,
               const int64_t* k_pos, const AttentionShape& shape, int64_t window, int64_t n_sink,
               float scale);

}  // namespace kllens::ops

namespace kllens::ref {
void attention(float* out, const float* q, const float* k, const float* v, const int64_t* q_pos,
               const int64_t* k_pos, const ops::AttentionShape& shape, int64_t window,
               int64_t n_sink, float scale);
}  // namespace kllens::ref
