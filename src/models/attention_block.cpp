#include "models/attention_block.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "kernels/ops.h"

namespace kllens {

void SwiGluMlp::add_specs(std::vector<TensorSpec>& specs, const std::string& prefix, int layer,
                          int64_t hidden, int64_t ffn, bool bias) {
  specs.push_back({prefix + "gate_proj.weight", Role::kGate, layer, {ffn, hidden}});
  specs.push_back({prefix + "up_proj.weight", Role::kUp, layer, {ffn, hidden}});
  specs.push_back({prefix + "down_proj.weight", Role::kDown, layer, {hidden, ffn}});
  if (bias) {
    specs.push_back({prefix + "gate_proj.bias", Role::kBias, layer, {ffn}});
    specs.push_back({prefix + "up_proj.bias", Role::kBias, layer, {ffn}});
    specs.push_back({prefix + "down_proj.bias", Role::kBias, layer, {hidden}});
  }
}

SwiGluMlp SwiGluMlp::bind(const Weights& weights, const std::string& prefix, int64_t hidden,
                          int64_t ffn) {
  SwiGluMlp m;
  m.hidden = hidden;
  m.ffn = ffn;
  m.gate = &weights.get(prefix + "gate_proj.weight");
  m.up = &weights.get(prefix + "up_proj.weight");
  m.down = &weights.get(prefix + "down_proj.weight");
  m.gate_bias = weights.find(prefix + "gate_proj.bias");
  m.up_bias = weights.find(prefix + "up_proj.bias");
  m.down_bias = weights.find(prefix + "down_proj.bias");
  return m;
}

void SwiGluMlp::forward(float* out, const float* x, int64_t T) const {
  // HF LlamaMLP.forward: down_proj(act_fn(gate_proj(x)) * up_proj(x))   {T, ffn} -> {T, hidden}
  thread_local ScratchVec g_buf, u_buf;  // each written whole before it is read
  const int64_t n = T * ffn;
  float* g = g_buf.get(static_cast<size_t>(n));
  float* u = u_buf.get(static_cast<size_t>(n));
  linear(g, x, *gate, gate_bias ? gate_bias->data() : nullptr, T, ffn, hidden);
  linear(u, x, *up, up_bias ? up_bias->data() : nullptr, T, ffn, hidden);
  if (gate_scale == 1.0f) {
    for (int64_t i = 0; i < n; ++i) g[i] = ops::silu(g[i]) * u[i];
  } else {
    for (int64_t i = 0; i < n; ++i) g[i] = ops::silu(g[i] * gate_scale) * u[i];
  }
  linear(out, g, *down, down_bias ? down_bias->data() : nullptr, T, hidden, ffn);
}

namespace {

// The scaling type named by a rope_scaling / rope_parameters object ("rope_type", legacy "type").
std::string rope_type_of(const HfConfig& c) {
  if (c.has("rope_type")) return c.get_string("rope_type", "default");
  return c.get_string("type", "default");
}

void check_rope_type(const HfConfig& c, const std::string& type) {
  if (type != "default")
    c.invalid("rope_type", "is '" + type +
                               "': only unscaled RoPE (rope_type \"default\") is supported for this "
                               "model family");
}

}  // namespace

AttentionHeads read_attention_heads(const HfConfig& c, int64_t hidden) {
  AttentionHeads a;
  a.heads = c.get_positive("num_attention_heads");
  a.kv_heads = c.has("num_key_value_heads") && !c.json()["num_key_value_heads"].is_null()
                   ? c.get_positive("num_key_value_heads")
                   : a.heads;
  if (a.heads % a.kv_heads != 0)
    c.invalid("num_key_value_heads", fmt::format("({}) must divide num_attention_heads ({})",
                                                 a.kv_heads, a.heads));
  if (c.has("head_dim") && !c.json()["head_dim"].is_null()) {
    a.head_dim = c.get_positive("head_dim");
  } else {
    if (hidden % a.heads != 0)
      c.invalid("num_attention_heads",
                fmt::format("({}) must divide hidden_size ({}) when head_dim is not given", a.heads,
                            hidden));
    a.head_dim = hidden / a.heads;
  }
  return a;
}

RopeSettings read_default_rope(const HfConfig& config, double default_theta) {
  RopeSettings r;
  r.theta = config.get_float("rope_theta", default_theta);
  r.partial_rotary_factor = config.get_float("partial_rotary_factor", 1.0);
  if (config.has("rope_parameters")) {
    // transformers 5: {"rope_theta": ..., "rope_type": "default", ...}
    const auto& j = config.json()["rope_parameters"];
    if (!j.is_object()) config.invalid("rope_parameters", "must be an object, got " + j.dump());
    const HfConfig sub = HfConfig::from_json(j, config.path() + " (rope_parameters)");
    if (!sub.has("rope_theta") && !sub.has("rope_type"))
      config.invalid("rope_parameters",
                     "has neither rope_theta nor rope_type (per-layer-type RoPE settings are not "
                     "supported for this model family)");
    check_rope_type(sub, rope_type_of(sub));
    r.theta = sub.get_float("rope_theta", r.theta);
    r.partial_rotary_factor = sub.get_float("partial_rotary_factor", r.partial_rotary_factor);
  }
  if (config.has("rope_scaling")) {
    const auto& j = config.json()["rope_scaling"];
    if (!j.is_object()) config.invalid("rope_scaling", "must be an object or null, got " + j.dump());
    const HfConfig sub = HfConfig::from_json(j, config.path() + " (rope_scaling)");
    check_rope_type(sub, rope_type_of(sub));
  }
  if (!(r.theta > 0) || !std::isfinite(r.theta))
    config.invalid("rope_theta", "must be a positive number, got " + std::to_string(r.theta));
  if (!(r.partial_rotary_factor > 0 && r.partial_rotary_factor <= 1))
    config.invalid("partial_rotary_factor", "must be in (0, 1]");
  return r;
}

std::vector<float> rope_inv_freq(double base, int64_t dim) {
  // HF: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), float32 tensors.
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  const auto fbase = static_cast<float>(base);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    const auto p = static_cast<float>(std::pow(static_cast<double>(fbase), static_cast<double>(e)));
    inv[static_cast<size_t>(i)] = 1.0f / p;
  }
  return inv;
}

void round_like_half_precision_buffer(std::vector<float>& inv_freq, DType checkpoint_dtype) {
  if (checkpoint_dtype == DType::kBF16) {
    for (auto& f : inv_freq) f = bf16_to_f32(f32_to_bf16(f));
  } else if (checkpoint_dtype == DType::kF16) {
    for (auto& f : inv_freq) f = f16_to_f32(f32_to_f16(f));
  }
}

void KvCache::init(int64_t kw, int64_t vw, int64_t keep_rows, int64_t window_rows) {
  KLLENS_CHECK(kw > 0 && vw > 0 && keep_rows >= 0 && window_rows >= 0, "bad KvCache sizes {} {} {} {}",
               kw, vw, keep_rows, window_rows);
  k_width = kw;
  v_width = vw;
  keep = keep_rows;
  window = window_rows;
  appended = 0;
  k.clear();
  v.clear();
  pos.clear();
  if (window > 0) {
    const auto cap = static_cast<size_t>(keep + window);
    k.assign(cap * static_cast<size_t>(k_width), 0.0f);
    v.assign(cap * static_cast<size_t>(v_width), 0.0f);
    pos.assign(cap, -1);
  }
}

int64_t KvCache::rows() const {
  if (window == 0) return appended;
  return std::min(appended, keep) + std::min(std::max<int64_t>(appended - keep, 0), window);
}

void KvCache::append(const float* k_rows, int64_t ldk, const float* v_rows, int64_t ldv,
                     const int64_t* positions, int64_t n) {
  for (int64_t r = 0; r < n; ++r) {
    const float* kr = k_rows + r * ldk;
    const float* vr = v_rows + r * ldv;
    if (window == 0) {
      k.insert(k.end(), kr, kr + k_width);
      v.insert(v.end(), vr, vr + v_width);
      pos.push_back(positions[r]);
    } else {
      // Prefix rows first, then the ring slot of the oldest row.
      const int64_t slot = appended < keep ? appended : keep + (appended - keep) % window;
      std::copy_n(kr, k_width, k.data() + slot * k_width);
      std::copy_n(vr, v_width, v.data() + slot * v_width);
      pos[static_cast<size_t>(slot)] = positions[r];
    }
    ++appended;
  }
}

size_t KvCache::bytes() const {
  return (k.size() + v.size()) * sizeof(float) + pos.size() * sizeof(int64_t);
}

}  // namespace kllens
