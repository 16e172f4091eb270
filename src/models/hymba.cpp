// Hymba (HymbaForCausalLM from the official nvidia/Hymba-1.5B-Base remote code, model_type
// "hymba"). Reference: modeling_hymba.py (HymbaModel.forward, HymbaDecoderLayer, HymbaBlock
// .cuda_kernels_forward, HymbaFlexAttention, LlamaRotaryEmbedding with rope_type "ntk") as
// described in ../shared/docs/hymba-architecture.md (the L<n> line numbers below are that file's).
//
// Per layer (T rows = meta tokens + sequence, positions 0..T-1):
//   u = rmsnorm(h)                                  input_layernorm
//   [q | k | v | x | z] = in_proj(u)                (k, v absent on layers that reuse K/V)
//   a = attention(rope(q), rope(k), v)              no projections; SWA: q - kv <= W or kv < M
//   s = mamba1_ssm(x, z)                            conv → x_proj → RMSNorm(dt, B, C) → scan → ·silu(z)
//   h += out_proj((rmsnorm1(a) + rmsnorm2(s)) / 2)
//   h += mlp(rmsnorm(h))                            pre_moe_layernorm, moe.experts.0 (SwiGLU)
#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/layer_stack.h"

namespace kllens {
namespace {

struct HymbaLayerConfig {
  int64_t window = 0;    // sliding_window W; 0 = global (full causal) attention
  int kv_source = -1;    // -1: computes its own K/V; else the layer whose K/V it reuses
  bool kv_shared = false;  // a later layer reuses this layer's K/V
  int kv_last_user = -1;   // on a producer: the last layer reusing its K/V
};

struct HymbaConfig {
  int64_t hidden = 0, layers = 0, vocab = 0, ffn = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0, v_head_dim = 0;  // q/k head size, v head size
  int64_t inner = 0, state = 0, conv = 0, dt_rank = 0;            // SSM branch
  int64_t meta = 0;                                                // num_memory_tokens
  int64_t window = 0;                                              // sliding_window (0: none)
  bool conv_bias = true, proj_bias = false, inner_norms = true, tied = false;
  bool rope = false;
  std::string rope_type;   // "default" or "ntk"
  double rope_base = 0;    // after the NTK adjustment
  float eps = 1e-6f;
  std::vector<HymbaLayerConfig> layer;

  int64_t k_width() const { return kv_heads * head_dim; }
  int64_t v_width() const { return kv_heads * v_head_dim; }
  int64_t in_proj_rows(int l) const {
    const bool own = layer[static_cast<size_t>(l)].kv_source < 0;
    return hidden + (own ? k_width() + v_width() : 0) + 2 * inner;  // q | k | v | x | z
  }
};

std::string list_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// kv_reuse_group: [[producer, consumer, ...], ...]. The first layer of a group computes K/V; the
// others have no k/v rows in their in_proj and attend with the producer's post-RoPE K/V (L2073,
// L2271–2336). Producers must run before their consumers, and a layer belongs to one group.
void parse_kv_reuse(const HfConfig& c, HymbaConfig& m) {
  const int64_t L = m.layers;
  if (c.has("kv_reuse_group")) {
    const auto& j = c.json()["kv_reuse_group"];
    const auto bad = [&](const std::string& why) { c.invalid("kv_reuse_group", why); };
    if (!j.is_array()) bad("must be a list of layer lists, got " + j.dump());
    std::map<int64_t, std::string> seen;  // layer -> the group naming it
    for (const auto& g : j) {
      if (!g.is_array() || g.empty())
        bad("must be a list of non-empty layer lists, got the entry " + g.dump());
      std::vector<int64_t> group;
      for (const auto& e : g) {
        if (!e.is_number_integer()) bad("must hold integer layer indices, got " + g.dump());
        group.push_back(e.get<int64_t>());
      }
      const std::string gs = list_str(group);
      for (size_t i = 0; i < group.size(); ++i) {
        const int64_t layer = group[i];
        if (layer < 0 || layer >= L)
          bad(fmt::format("group {} names layer {}, but the model has {} layers (0..{})", gs, layer,
                          L, L - 1));
        if (seen.count(layer))
          bad(fmt::format("layer {} appears in group {} and in group {}; a layer can belong to one "
                          "group only, once",
                          layer, seen[layer], gs));
        seen[layer] = gs;
        if (i > 0 && layer <= group[0])
          bad(fmt::format("group {}: consumer layer {} comes before its producer layer {} (the first "
                          "layer of a group computes the K/V the later ones reuse)",
                          gs, layer, group[0]));
      }
      for (size_t i = 1; i < group.size(); ++i) {
        auto& producer = m.layer[static_cast<size_t>(group[0])];
        m.layer[static_cast<size_t>(group[i])].kv_source = static_cast<int>(group[0]);
        producer.kv_shared = true;
        producer.kv_last_user = std::max(producer.kv_last_user, static_cast<int>(group[i]));
      }
    }
  } else {
    // kv_reuse_every_i_layer = k > 0: layers i with i % k != 0 reuse the K/V of the layer before.
    const int64_t every = c.get_int("kv_reuse_every_i_layer", -1);
    if (every > 0) {
      for (int64_t i = 0; i < L; ++i) {
        if (i % every == 0) continue;
        auto& producer = m.layer[static_cast<size_t>(i - i % every)];
        m.layer[static_cast<size_t>(i)].kv_source = static_cast<int>(i - i % every);
        producer.kv_shared = true;
        producer.kv_last_user = static_cast<int>(i);
      }
    }
  }
}

HymbaConfig parse_config(const HfConfig& c) {
  HymbaConfig m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.ffn = c.get_int("intermediate_size");
  if (m.ffn < 0) c.invalid("intermediate_size", "must not be negative");
  m.heads = c.get_positive("num_attention_heads");
  m.kv_heads = c.get_positive("num_key_value_heads");
  m.eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  m.tied = c.get_bool("tie_word_embeddings", false);

  // Head sizes (L494–L506, L1487–L1498). HymbaBlock takes the q width from hidden_size and
  // overwrites config.v_head_dim with inner / heads; the attention module views q and k with
  // kq_head_dim (default hidden / heads). The two agree only under these conditions.
  if (m.hidden % m.heads != 0)
    c.invalid("num_attention_heads",
              fmt::format("({}) must divide hidden_size ({})", m.heads, m.hidden));
  m.head_dim = m.hidden / m.heads;
  if (m.heads % m.kv_heads != 0)
    c.invalid("num_key_value_heads",
              fmt::format("({}) must divide num_attention_heads ({})", m.kv_heads, m.heads));
  const int64_t attn_hidden = c.get_int("attn_hidden_size", -1);
  if (attn_hidden > 0 && attn_hidden != m.hidden)
    c.invalid("attn_hidden_size",
              fmt::format("is {}, but the Hymba block sizes q from hidden_size ({}); set it to -1",
                          attn_hidden, m.hidden));
  const int64_t kq = c.get_int("kq_head_dim", -1);
  if (kq > 0 && kq != m.head_dim)
    c.invalid("kq_head_dim",
              fmt::format("is {}, but the q/k slices of in_proj hold hidden_size / heads = {} per "
                          "head; set it to -1",
                          kq, m.head_dim));
  if (m.head_dim % 2 != 0) c.invalid("num_attention_heads", "gives an odd head size; RoPE needs even");
  const std::string kq_norm = c.get_string("kq_norm", "none");
  if (kq_norm != "none")
    c.invalid("kq_norm", "is '" + kq_norm + "'; only \"none\" is supported");

  const double expand = c.get_float("mamba_expand", 2.0);
  m.inner = c.int_dimension("mamba_expand", expand * static_cast<double>(m.hidden));  // int(expand * hidden)
  if (m.inner <= 0) c.invalid("mamba_expand", "gives a non-positive SSM inner size");
  if (m.inner % m.heads != 0)
    c.invalid("mamba_expand",
              fmt::format("gives SSM inner size {}, which num_attention_heads ({}) does not divide "
                          "(the attention output, heads x v_head_dim, must equal it)",
                          m.inner, m.heads));
  m.v_head_dim = m.inner / m.heads;  // config v_head_dim is overwritten by the block (L1495)
  // The block sizes the k / v slices as int(kv/heads * hidden) and int(kv/heads * hidden * expand)
  // (Python floats, L1497–L1498); the attention views them as kv_heads x head size.
  const double ratio = static_cast<double>(m.kv_heads) / static_cast<double>(m.heads);
  const auto k_hidden = static_cast<int64_t>(ratio * static_cast<double>(m.hidden));
  const auto v_hidden = static_cast<int64_t>(ratio * static_cast<double>(m.hidden) * expand);
  if (k_hidden != m.k_width() || v_hidden != m.v_width())
    c.invalid("mamba_expand",
              fmt::format("gives k/v slice widths {} / {} but kv heads need {} / {}", k_hidden,
                          v_hidden, m.k_width(), m.v_width()));

  m.state = c.get_positive("mamba_d_state");
  m.conv = c.get_positive("mamba_d_conv");
  if (m.conv > 16) c.invalid("mamba_d_conv", "is larger than 16, which kllens does not support");
  if (c.has("mamba_dt_rank") && c.json()["mamba_dt_rank"].is_string()) {
    if (c.json()["mamba_dt_rank"] != "auto")
      c.invalid("mamba_dt_rank", "must be an integer or \"auto\"");
    m.dt_rank = (m.hidden + 15) / 16;
  } else {
    m.dt_rank = c.has("mamba_dt_rank") ? c.get_positive("mamba_dt_rank") : (m.hidden + 15) / 16;
  }
  m.conv_bias = c.get_bool("mamba_conv_bias", true);
  m.proj_bias = c.get_bool("mamba_proj_bias", false);
  m.inner_norms = c.get_bool("mamba_inner_layernorms", true);
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    c.invalid("hidden_act", "is '" + act + "'; the SSM conv supports only \"silu\"");
  if (m.ffn > 0) {
    const std::string mlp_act = c.get_string("mlp_hidden_act", "silu");
    if (mlp_act != "silu")
      c.invalid("mlp_hidden_act", "is '" + mlp_act + "'; only \"silu\" (SwiGLU) is supported");
  }

  m.meta = c.get_int("num_memory_tokens", 0);
  if (m.meta < 0) c.invalid("num_memory_tokens", "must not be negative");
  if (c.get_int("memory_tokens_interspersed_every", 0) > 0)
    c.invalid("memory_tokens_interspersed_every",
              "is positive; interleaved meta tokens are not supported (only prepended ones)");

  // Global vs sliding-window layers (L2271–2336): SWA iff sliding_window is set and the layer is
  // not in global_attn_idx.
  m.layer.assign(static_cast<size_t>(m.layers), HymbaLayerConfig{});
  if (c.has("sliding_window")) {
    m.window = c.get_positive("sliding_window");
    if (!c.has("global_attn_idx"))
      c.invalid("global_attn_idx", "is missing but sliding_window is set");
    std::vector<bool> global(static_cast<size_t>(m.layers), false);
    for (int64_t g : c.get_int_list("global_attn_idx")) {
      if (g < 0 || g >= m.layers)
        c.invalid("global_attn_idx",
                  fmt::format("names layer {}, but the model has {} layers", g, m.layers));
      global[static_cast<size_t>(g)] = true;
    }
    for (int64_t l = 0; l < m.layers; ++l)
      m.layer[static_cast<size_t>(l)].window = global[static_cast<size_t>(l)] ? 0 : m.window;
  }
  parse_kv_reuse(c, m);

  // RoPE (LlamaRotaryEmbedding, L231–307) over the q/k head size.
  m.rope = c.get_bool("rope", false);
  if (m.rope) {
    const double theta = c.get_float("rope_theta", 10000.0);
    if (!(theta > 0)) c.invalid("rope_theta", "must be positive");
    m.rope_type = c.get_string("rope_type", "default");
    if (m.rope_type == "default") {
      m.rope_base = theta;
    } else if (m.rope_type == "ntk") {
      // base * (factor * max_pos / orig_max_pos - (factor - 1)) ^ (dim / (dim - 2)), factor = 2
      // hard-coded (L241).
      const double factor = 2.0;
      const double max_pos = static_cast<double>(c.get_positive("max_position_embeddings"));
      const double orig = static_cast<double>(c.get_positive("orig_max_position_embeddings"));
      const double scale = factor * max_pos / orig - (factor - 1.0);
      if (!(scale > 0))
        c.invalid("orig_max_position_embeddings", "gives a non-positive NTK scale");
      if (m.head_dim <= 2) c.invalid("num_attention_heads", "gives a head size too small for NTK RoPE");
      const auto dim = static_cast<double>(m.head_dim);
      m.rope_base = theta * std::pow(scale, dim / (dim - 2.0));
    } else {
      c.invalid("rope_type", "is '" + m.rope_type + "'; Hymba support covers \"default\" and \"ntk\"");
    }
  }
  return m;
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const HymbaConfig& c) {
  const int64_t H = c.hidden, I = c.inner, N = c.state, K = c.conv, R = c.dt_rank;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Role::kEmbed, -1, {c.vocab, H}});
  if (c.meta > 0) specs.push_back({"model.memory_tokens", Role::kMetaTokens, -1, {c.meta, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string b = p + "mamba.";
    const int64_t P = c.in_proj_rows(l);
    specs.push_back({p + "input_layernorm.weight", Role::kNorm, l, {H}});
    specs.push_back({b + "in_proj.weight", Role::kInProj, l, {P, H}});
    if (c.proj_bias) specs.push_back({b + "in_proj.bias", Role::kBias, l, {P}});
    specs.push_back({b + "conv1d.weight", Role::kConv1d, l, {I, 1, K}});
    if (c.conv_bias) specs.push_back({b + "conv1d.bias", Role::kBias, l, {I}});
    specs.push_back({b + "x_proj.0.weight", Role::kXProj, l, {R + 2 * N, I}});
    specs.push_back({b + "dt_proj.0.weight", Role::kDtProj, l, {I, R}});
    specs.push_back({b + "dt_proj.0.bias", Role::kDtBias, l, {I}});
    specs.push_back({b + "A_log.0", Role::kSsmA, l, {I, N}});
    specs.push_back({b + "D.0", Role::kSsmD, l, {I}});
    if (c.inner_norms) {
      specs.push_back({b + "dt_layernorm.weight", Role::kNorm, l, {R}});
      specs.push_back({b + "B_layernorm.weight", Role::kNorm, l, {N}});
      specs.push_back({b + "C_layernorm.weight", Role::kNorm, l, {N}});
    }
    specs.push_back({b + "pre_avg_layernorm1.weight", Role::kNorm, l, {I}});
    specs.push_back({b + "pre_avg_layernorm2.weight", Role::kNorm, l, {I}});
    specs.push_back({b + "out_proj.weight", Role::kOutProj, l, {H, I}});
    if (c.proj_bias) specs.push_back({b + "out_proj.bias", Role::kBias, l, {H}});
    if (c.ffn > 0) {
      specs.push_back({p + "pre_moe_layernorm.weight", Role::kNorm, l, {H}});
      SwiGluMlp::add_specs(specs, p + "moe.experts.0.", l, H, c.ffn, false);
    }
  }
  specs.push_back({"model.final_layernorm.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

// Per layer, the conv and SSM states and, on a layer computing its own K/V, the cache of it
// (a reuse group's consumers read their producer's).
class HymbaState : public MixerState {
 public:
  std::vector<float> conv, ssm;
  KvCache kv;  // initialized only on K/V producers
  bool own_kv = false;
  size_t bytes() const override {
    return (conv.size() + ssm.size()) * sizeof(float) + (own_kv ? kv.bytes() : 0);
  }
};

// One Hymba block's mixer (HymbaBlock, L1601–1720): in_proj of the normed input into
// [q | k | v | x | z] (k, v only on layers computing their own K/V), attention heads (RoPE,
// global or sliding-window with the meta tokens always visible) and Mamba-1 SSM heads side by
// side, each RMS-normed, averaged, out_proj. A reuse group's consumers take the producer's
// post-RoPE K/V: in prefill from the pass's carry slots (2l, 2l+1 for producer l), in decode
// from the producer's cache.
class HymbaMixer : public Mixer {
 public:
  const HymbaConfig* cfg = nullptr;
  int layer = 0;
  const std::vector<float>* inv_freq = nullptr;
  const Param *in_proj = nullptr, *in_proj_bias = nullptr, *out_proj = nullptr,
              *out_proj_bias = nullptr, *pre_avg1 = nullptr, *pre_avg2 = nullptr;
  Mamba1Ssm ssm;
  int64_t ring = 0;  // KvCache window: W + 1 when every reader of this K/V is a SWA layer, else 0

  std::unique_ptr<MixerState> new_state() const override {
    auto s = std::make_unique<HymbaState>();
    s->conv.assign(ssm.conv_state_size(), 0.0f);
    s->ssm.assign(ssm.ssm_state_size(), 0.0f);
    s->own_kv = lc().kv_source < 0;
    if (s->own_kv) s->kv.init(cfg->k_width(), cfg->v_width(), cfg->meta, ring);
    return s;
  }

  std::string kind() const override {
    std::string k = lc().window > 0 ? fmt::format("attn(swa={}", lc().window) : "attn(global";
    if (lc().kv_source >= 0) k += fmt::format(", kv from layer {}", lc().kv_source);
    return k + ")+ssm";
  }

  void forward(float*, const float*, int64_t, const int64_t*, MixerState*) const override {
    KLLENS_CHECK(false, "a Hymba mixer runs only inside its layer stack (forward_carried)");
  }

  void forward_carried(float* out, const float* u, int64_t T, const int64_t* pos,
                       MixerState* state, const StackCarry& carry) const override {
    const HymbaConfig& c = *cfg;
    const int64_t H = c.hidden, I = c.inner, Hq = c.heads, Hkv = c.kv_heads;
    const int64_t Dk = c.head_dim, Dv = c.v_head_dim, Kw = c.k_width(), Vw = c.v_width();
    const bool own_kv = lc().kv_source < 0;
    const int64_t P = c.in_proj_rows(layer);
    auto* hs = state ? dynamic_cast<HymbaState*>(state) : nullptr;
    KLLENS_CHECK(!state || hs, "a Hymba mixer was given another mixer's decode state");
    // Every buffer below is written whole before it is read.
    thread_local ScratchVec proj_buf, k_buf, v_buf, attn_buf, y_buf, conv_buf, ssm_buf;

    // in_proj (L1601–1622)   proj {T, P} = [q | k | v | x | z]
    float* proj = proj_buf.get(static_cast<size_t>(T * P));
    linear(proj, u, *in_proj, in_proj_bias ? in_proj_bias->data() : nullptr, T, P, H);
    float* q = proj;                                      // {T, Hq, Dk}, row stride P
    const float* x = proj + H + (own_kv ? Kw + Vw : 0);  // {T, I} pre-conv SSM input
    const float* z = proj + P - I;                        // {T, I} gate

    // Attention branch (HymbaFlexAttention with attn_only_wo_proj): RoPE on q, and on k when the
    // layer computes its own K/V; consumers take the producer's post-RoPE K and V.
    if (c.rope) ops::apply_rope(q, P, T, Hq, Dk, pos, inv_freq->data(), Dk);
    KvCache* cache = nullptr;
    if (hs) {
      HymbaState* owner = hs;
      if (!own_kv) {
        KLLENS_CHECK(carry.states != nullptr, "a Hymba K/V consumer decodes without the stack's states");
        owner = dynamic_cast<HymbaState*>((*carry.states)[static_cast<size_t>(lc().kv_source)][0].get());
        KLLENS_CHECK(owner && owner->own_kv, "layer {}'s K/V producer has no cache", layer);
      }
      cache = &owner->kv;
    }
    float *kbuf = nullptr, *vbuf = nullptr;
    if (own_kv) {
      kbuf = k_buf.get(static_cast<size_t>(T * Kw));
      vbuf = v_buf.get(static_cast<size_t>(T * Vw));
      for (int64_t t = 0; t < T; ++t) {
        std::copy_n(proj + t * P + H, Kw, kbuf + t * Kw);
        std::copy_n(proj + t * P + H + Kw, Vw, vbuf + t * Vw);
      }
      if (c.rope) ops::apply_rope(kbuf, Kw, T, Hkv, Dk, pos, inv_freq->data(), Dk);
      if (cache) {
        cache->append(kbuf, Kw, vbuf, Vw, pos, T);
        KLLENS_CHECK(T == 1 || cache->evicted() == 0, "a multi-row append overflowed the KV ring");
      }
      // Prefill: the consumers run later, after this buffer has been reused: they get a copy.
      if (!hs && lc().kv_shared) {
        KLLENS_CHECK(carry.slots != nullptr, "a Hymba K/V producer runs without carry slots");
        (*carry.slots)[static_cast<size_t>(2 * layer)].assign(kbuf, kbuf + T * Kw);
        (*carry.slots)[static_cast<size_t>(2 * layer + 1)].assign(vbuf, vbuf + T * Vw);
      }
    }
    const float *kp = nullptr, *vp = nullptr;
    const int64_t* kpos = nullptr;
    int64_t S = 0;
    std::vector<float>*k_slot = nullptr, *v_slot = nullptr;
    if (!hs) {  // prefill: the T rows attend to each other
      if (own_kv) {
        kp = kbuf;
        vp = vbuf;
      } else {
        const auto src = static_cast<size_t>(lc().kv_source);
        KLLENS_CHECK(carry.slots != nullptr, "a Hymba K/V consumer runs without carry slots");
        k_slot = &(*carry.slots)[2 * src];
        v_slot = &(*carry.slots)[2 * src + 1];
        if (k_slot->size() != static_cast<size_t>(T * Kw))
          fail("hymba: layer {} reuses the K/V of layer {}, which has not run on this forward state",
               layer, lc().kv_source);
        kp = k_slot->data();
        vp = v_slot->data();
      }
      kpos = pos;
      S = T;
    } else {  // decode: attend to everything in the cache
      kp = cache->k.data();
      vp = cache->v.data();
      kpos = cache->pos.data();
      S = cache->rows();
    }
    // Mask (L1198–1236): causal; on SWA layers also q - kv <= W (W+1 keys including self) unless
    // kv is a meta token. ops::attention's window is "q - kv < window", hence W + 1.
    ops::AttentionShape shape;
    shape.T = T;
    shape.S = S;
    shape.Hq = Hq;
    shape.Hkv = Hkv;
    shape.Dk = Dk;
    shape.Dv = Dv;
    shape.ldq = P;
    float* attn = attn_buf.get(static_cast<size_t>(T * I));  // {T, Hq, Dv}, Hq * Dv == I
    const int64_t window = lc().window;
    ops::attention(attn, q, kp, vp, pos, kpos, shape, window > 0 ? window + 1 : 0,
                   window > 0 ? c.meta : 0, 1.0f / std::sqrt(static_cast<float>(Dk)));
    // Once the last layer of a reuse group has run, its shared K/V is no longer needed: drop it
    // so that copies of later states stay small.
    if (k_slot && cfg->layer[static_cast<size_t>(lc().kv_source)].kv_last_user == layer) {
      *k_slot = {};
      *v_slot = {};
    }

    // SSM branch (L1623–1718)   y {T, I}; a fresh sequence starts from zero states
    float* y = y_buf.get(static_cast<size_t>(T * I));
    float* conv_state = hs ? hs->conv.data() : conv_buf.zeroed(ssm.conv_state_size());
    float* ssm_state = hs ? hs->ssm.data() : ssm_buf.zeroed(ssm.ssm_state_size());
    ssm.forward(y, x, P, z, P, T, conv_state, ssm_state);

    // Fusion (L1719–1720): out_proj((pre_avg_layernorm1(attn) + pre_avg_layernorm2(ssm)) / 2)
    ops::rmsnorm(attn, attn, pre_avg1->data(), T, I, c.eps);
    ops::rmsnorm(y, y, pre_avg2->data(), T, I, c.eps);
    for (int64_t i = 0; i < T * I; ++i) y[i] = (attn[i] + y[i]) / 2.0f;
    linear(out, y, *out_proj, out_proj_bias ? out_proj_bias->data() : nullptr, T, H, I);
  }

 private:
  const HymbaLayerConfig& lc() const { return cfg->layer[static_cast<size_t>(layer)]; }
};

class HymbaModel : public LayerStackModel {
 public:
  HymbaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden, I = cfg_.inner, N = cfg_.state, K = cfg_.conv, R = cfg_.dt_rank;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);

    ends_.embed = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("model.final_layernorm.weight");
    ends_.norm_eps = cfg_.eps;
    // HymbaModel.forward (L2122–2207): the meta tokens are prepended; positions run over both;
    // final_layernorm, then the meta-token rows are dropped before the head (L2340–2355).
    ends_.prefix = cfg_.meta > 0 ? weights_.find("model.memory_tokens") : nullptr;
    carry_slots_ = static_cast<size_t>(2 * cfg_.layers);  // K, V of each reuse-group producer
    if (cfg_.rope) {
      inv_freq_ = rope_inv_freq(cfg_.rope_base, cfg_.head_dim);
      // Run like the model card's model.to(torch.bfloat16): the inv_freq buffer is rounded to
      // the checkpoint's half precision too (the demo references were made that way).
      round_like_half_precision_buffer(inv_freq_, ends_.embed->source_dtype);
    }
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string b = p + "mamba.";
      const auto& lc = cfg_.layer[static_cast<size_t>(l)];
      auto m = std::make_unique<HymbaMixer>();
      m->cfg = &cfg_;
      m->layer = l;
      m->inv_freq = &inv_freq_;
      m->in_proj = &weights_.get(b + "in_proj.weight");
      m->in_proj_bias = weights_.find(b + "in_proj.bias");
      m->out_proj = &weights_.get(b + "out_proj.weight");
      m->out_proj_bias = weights_.find(b + "out_proj.bias");
      m->pre_avg1 = &weights_.get(b + "pre_avg_layernorm1.weight");
      m->pre_avg2 = &weights_.get(b + "pre_avg_layernorm2.weight");
      Mamba1Ssm& ssm = m->ssm;
      ssm.inner = I;
      ssm.state = N;
      ssm.dt_rank = R;
      ssm.conv_kernel = K;
      ssm.conv = &weights_.get(b + "conv1d.weight");
      ssm.conv_bias = weights_.find(b + "conv1d.bias");
      ssm.x_proj = &weights_.get(b + "x_proj.0.weight");
      ssm.dt_proj = &weights_.get(b + "dt_proj.0.weight");
      ssm.dt_bias = &weights_.get(b + "dt_proj.0.bias");
      ssm.D = &weights_.get(b + "D.0");
      ssm.dt_norm = weights_.find(b + "dt_layernorm.weight");
      ssm.b_norm = weights_.find(b + "B_layernorm.weight");
      ssm.c_norm = weights_.find(b + "C_layernorm.weight");
      ssm.norm_eps = cfg_.eps;
      ssm.set_A(weights_.get(b + "A_log.0"));
      if (lc.kv_source < 0) {
        // A ring suffices when every layer reading this K/V is a SWA layer: a query at position
        // p sees the meta tokens and positions p-W..p, i.e. W+1 rows after the kept prefix.
        bool all_swa = lc.window > 0;
        for (int c = l + 1; c < cfg_.layers; ++c)
          if (cfg_.layer[static_cast<size_t>(c)].kv_source == l && cfg_.layer[static_cast<size_t>(c)].window == 0)
            all_swa = false;
        m->ring = all_swa ? cfg_.window + 1 : 0;
      }
      StackLayer& layer = layers_.emplace_back();
      layer.kind = m->kind();
      layer.blocks.push_back({&weights_.get(p + "input_layernorm.weight"), cfg_.eps, 1.0f, std::move(m)});
      if (cfg_.ffn > 0) {  // HymbaSparseMoeBlock with one expert → HymbaMLP (L1750–1825)
        auto mlp = std::make_unique<SwiGluMixer>();
        mlp->mlp = SwiGluMlp::bind(weights_, p + "moe.experts.0.", H, cfg_.ffn);
        layer.blocks.push_back({&weights_.get(p + "pre_moe_layernorm.weight"), cfg_.eps, 1.0f, std::move(mlp)});
      }
    }

    finish_stack("hymba", folder);
    std::string globals, groups;
    for (int l = 0; l < cfg_.layers; ++l) {
      const auto& lc = cfg_.layer[static_cast<size_t>(l)];
      if (lc.window == 0) globals += (globals.empty() ? "" : ",") + std::to_string(l);
      if (lc.kv_shared) {
        std::string g = std::to_string(l);
        for (int c = l + 1; c < cfg_.layers; ++c)
          if (cfg_.layer[static_cast<size_t>(c)].kv_source == l) g += "," + std::to_string(c);
        groups += (groups.empty() ? "" : " ") + ("[" + g + "]");
      }
    }
    info_.details = {
        {"meta_tokens", std::to_string(cfg_.meta)},
        {"sliding_window", cfg_.window > 0 ? std::to_string(cfg_.window) : "none"},
        {"global_layers", globals.empty() ? "none" : globals},
        {"kv_reuse_groups", groups.empty() ? "none" : groups},
        {"heads", std::to_string(cfg_.heads)},
        {"kv_heads", std::to_string(cfg_.kv_heads)},
        {"qk_head_dim", std::to_string(cfg_.head_dim)},
        {"v_head_dim", std::to_string(cfg_.v_head_dim)},
        {"rope", cfg_.rope ? fmt::format("{} (base {:g}, inv_freq in {})", cfg_.rope_type,
                                         cfg_.rope_base, dtype_name(ends_.embed->source_dtype))
                           : "none"},
        {"d_inner", std::to_string(I)},
        {"d_state", std::to_string(N)},
        {"d_conv", std::to_string(K)},
        {"dt_rank", std::to_string(R)},
        {"intermediate_size", std::to_string(cfg_.ffn)},
        {"tied_embeddings", cfg_.tied ? "yes" : "no"},
        {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

 private:
  HymbaConfig cfg_;
  std::vector<float> inv_freq_;
};

}  // namespace

std::vector<TensorSpec> hymba_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

std::unique_ptr<Model> make_hymba(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder, const LoadOptions&) {
  return std::make_unique<HymbaModel>(config, store, folder);
}

}  // namespace kllens
