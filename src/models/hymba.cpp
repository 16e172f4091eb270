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
#include "models/attention_block.h"
#include "models/families.h"
#include "models/mamba1_ssm.h"

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

struct HymbaLayer {
  const Param *norm, *in_proj, *in_proj_bias, *out_proj, *out_proj_bias, *pre_avg1, *pre_avg2;
  const Param* mlp_norm = nullptr;  // null when intermediate_size == 0
  Mamba1Ssm ssm;
  SwiGluMlp mlp;
};

class HymbaForwardState : public ForwardState {
 public:
  // Per layer: the post-RoPE K {rows, kv_heads * head_dim} and V {rows, kv_heads * v_head_dim}
  // of layers whose K/V a later layer reuses (empty for the others), so that a pass restarted
  // from a copy of this state before any layer sees the same K/V.
  std::vector<std::vector<float>> k, v;

  std::unique_ptr<ForwardState> clone() const override {
    return std::make_unique<HymbaForwardState>(*this);
  }
  size_t bytes() const override {
    size_t n = hidden.size();
    for (size_t l = 0; l < k.size(); ++l) n += k[l].size() + v[l].size();
    return n * sizeof(float);
  }
};

class HymbaDecodeState : public DecodeState {
 public:
  // Per layer; only layers computing their own K/V have one (a reuse group shares its producer's).
  // SWA-only groups keep the meta tokens plus a ring of the last W+1 rows.
  std::vector<KvCache> kv;
  std::vector<std::vector<float>> conv, ssm;  // per layer {inner, K-1}, {inner, state}
  size_t bytes() const override {
    size_t n = 0;
    for (const auto& c : kv) n += c.bytes();
    for (size_t l = 0; l < conv.size(); ++l) n += (conv[l].size() + ssm[l].size()) * sizeof(float);
    return n;
  }
};

const float* data_or_null(const Param* p) { return p ? p->data() : nullptr; }

class HymbaModel : public Model {
 public:
  HymbaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden, I = cfg_.inner, N = cfg_.state, K = cfg_.conv, R = cfg_.dt_rank;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);

    embed_ = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    head_ = cfg_.tied ? embed_ : &weights_.get("lm_head.weight");
    norm_f_ = &weights_.get("model.final_layernorm.weight");
    meta_ = weights_.find("model.memory_tokens");
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string b = p + "mamba.";
      HymbaLayer L{};
      L.norm = &weights_.get(p + "input_layernorm.weight");
      L.in_proj = &weights_.get(b + "in_proj.weight");
      L.in_proj_bias = weights_.find(b + "in_proj.bias");
      L.out_proj = &weights_.get(b + "out_proj.weight");
      L.out_proj_bias = weights_.find(b + "out_proj.bias");
      L.pre_avg1 = &weights_.get(b + "pre_avg_layernorm1.weight");
      L.pre_avg2 = &weights_.get(b + "pre_avg_layernorm2.weight");
      L.ssm.inner = I;
      L.ssm.state = N;
      L.ssm.dt_rank = R;
      L.ssm.conv_kernel = K;
      L.ssm.conv = &weights_.get(b + "conv1d.weight");
      L.ssm.conv_bias = weights_.find(b + "conv1d.bias");
      L.ssm.x_proj = &weights_.get(b + "x_proj.0.weight");
      L.ssm.dt_proj = &weights_.get(b + "dt_proj.0.weight");
      L.ssm.dt_bias = &weights_.get(b + "dt_proj.0.bias");
      L.ssm.D = &weights_.get(b + "D.0");
      L.ssm.dt_norm = weights_.find(b + "dt_layernorm.weight");
      L.ssm.b_norm = weights_.find(b + "B_layernorm.weight");
      L.ssm.c_norm = weights_.find(b + "C_layernorm.weight");
      L.ssm.norm_eps = cfg_.eps;
      L.ssm.set_A(weights_.get(b + "A_log.0"));
      if (cfg_.ffn > 0) {
        L.mlp_norm = &weights_.get(p + "pre_moe_layernorm.weight");
        L.mlp = SwiGluMlp::bind(weights_, p + "moe.experts.0.", H, cfg_.ffn);
      }
      layers_.push_back(std::move(L));
    }
    if (cfg_.rope) {
      inv_freq_ = rope_inv_freq(cfg_.rope_base, cfg_.head_dim);
      // Run like the model card's model.to(torch.bfloat16): the inv_freq buffer is rounded to
      // the checkpoint's half precision too (the demo references were made that way).
      round_like_half_precision_buffer(inv_freq_, embed_->source_dtype);
    }

    info_.arch = "hymba";
    info_.folder = folder;
    info_.n_layers = cfg_.layers;
    info_.d_model = H;
    info_.vocab = cfg_.vocab;
    info_.n_prefix_tokens = cfg_.meta;
    std::string globals, groups;
    for (int l = 0; l < cfg_.layers; ++l) {
      const auto& lc = cfg_.layer[static_cast<size_t>(l)];
      std::string kind = lc.window > 0 ? fmt::format("attn(swa={}", lc.window) : "attn(global";
      if (lc.kv_source >= 0) kind += fmt::format(", kv from layer {}", lc.kv_source);
      kind += ")+ssm";
      info_.layer_kinds.push_back(kind);
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
                                         cfg_.rope_base, dtype_name(embed_->source_dtype))
                           : "none"},
        {"d_inner", std::to_string(I)},
        {"d_state", std::to_string(N)},
        {"d_conv", std::to_string(K)},
        {"dt_rank", std::to_string(R)},
        {"intermediate_size", std::to_string(cfg_.ffn)},
        {"tied_embeddings", cfg_.tied ? "yes" : "no"},
        {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

  std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const override {
    check_ids(ids);
    auto s = std::make_unique<HymbaForwardState>();
    // HymbaModel.forward (L2122–2207): the meta tokens are prepended; positions run over both.
    const int64_t H = cfg_.hidden, M = cfg_.meta;
    s->rows = M + static_cast<int64_t>(ids.size());
    s->hidden.resize(static_cast<size_t>(s->rows * H));
    if (M > 0) std::copy_n(meta_->data(), M * H, s->hidden.data());
    for (size_t t = 0; t < ids.size(); ++t)
      embedding_row(*embed_, ids[t], s->hidden.data() + (M + static_cast<int64_t>(t)) * H);
    s->k.resize(static_cast<size_t>(cfg_.layers));
    s->v.resize(static_cast<size_t>(cfg_.layers));
    s->next_layer = 0;
    return s;
  }

  void run_layer(int l, ForwardState& base) const override {
    auto* s = dynamic_cast<HymbaForwardState*>(&base);
    KLLENS_CHECK(s != nullptr, "run_layer was given a forward state of another model");
    thread_local Scratch<int64_t> pos_buf;
    int64_t* pos = pos_buf.get(static_cast<size_t>(s->rows));
    for (int64_t t = 0; t < s->rows; ++t) pos[t] = t;
    // A fresh sequence starts from zero states.
    thread_local ScratchVec conv_buf, ssm_buf;
    float* conv_state = conv_buf.zeroed(layers_[static_cast<size_t>(l)].ssm.conv_state_size());
    float* ssm_state = ssm_buf.zeroed(layers_[static_cast<size_t>(l)].ssm.ssm_state_size());
    layer(l, s->hidden.data(), s->rows, pos, conv_state, ssm_state, s, nullptr);
    // Once the last layer of a reuse group has run, its shared K/V is no longer needed: drop it so
    // that copies of later states stay small.
    const int src = cfg_.layer[static_cast<size_t>(l)].kv_source;
    if (src >= 0 && cfg_.layer[static_cast<size_t>(src)].kv_last_user == l) {
      s->k[static_cast<size_t>(src)] = {};
      s->v[static_cast<size_t>(src)] = {};
    }
    s->next_layer = l + 1;
  }

  void finish(const ForwardState& s, float* logits) const override {
    // final_layernorm, then the meta-token rows are dropped before the head (L2340–2355).
    const int64_t M = cfg_.meta;
    KLLENS_CHECK(s.rows >= M, "forward state has {} rows, fewer than the {} meta tokens", s.rows, M);
    head(s.hidden.data() + M * cfg_.hidden, s.rows - M, logits);
  }

  std::unique_ptr<DecodeState> new_decode_state() const override {
    auto d = std::make_unique<HymbaDecodeState>();
    const auto L = static_cast<size_t>(cfg_.layers);
    d->kv.resize(L);
    d->conv.resize(L);
    d->ssm.resize(L);
    for (int l = 0; l < cfg_.layers; ++l) {
      const auto& lc = cfg_.layer[static_cast<size_t>(l)];
      d->conv[static_cast<size_t>(l)].assign(layers_[static_cast<size_t>(l)].ssm.conv_state_size(), 0.0f);
      d->ssm[static_cast<size_t>(l)].assign(layers_[static_cast<size_t>(l)].ssm.ssm_state_size(), 0.0f);
      if (lc.kv_source >= 0) continue;
      // A ring suffices when every layer reading this K/V is a SWA layer: a query at position p
      // sees the meta tokens and positions p-W..p, i.e. W+1 rows after the kept prefix.
      bool all_swa = lc.window > 0;
      for (int c = l + 1; c < cfg_.layers; ++c)
        if (cfg_.layer[static_cast<size_t>(c)].kv_source == l && cfg_.layer[static_cast<size_t>(c)].window == 0)
          all_swa = false;
      d->kv[static_cast<size_t>(l)].init(cfg_.k_width(), cfg_.v_width(), cfg_.meta,
                                         all_swa ? cfg_.window + 1 : 0);
    }
    // Decoding starts by running the meta tokens through the model (a prefill of the prefix):
    // their K/V fill the kept prefix of every cache, and the SSM states start after them.
    if (cfg_.meta > 0) {
      HymbaForwardState fs;
      fs.rows = cfg_.meta;
      fs.hidden.assign(meta_->data(), meta_->data() + cfg_.meta * cfg_.hidden);
      fs.k.resize(L);
      fs.v.resize(L);
      std::vector<int64_t> pos(static_cast<size_t>(cfg_.meta));
      for (int64_t t = 0; t < cfg_.meta; ++t) pos[static_cast<size_t>(t)] = t;
      for (int l = 0; l < cfg_.layers; ++l)
        layer(l, fs.hidden.data(), fs.rows, pos.data(), d->conv[static_cast<size_t>(l)].data(),
              d->ssm[static_cast<size_t>(l)].data(), &fs, &d->kv[static_cast<size_t>(owner(l))]);
    }
    return d;
  }

  void decode_step(DecodeState& base, int32_t token, float* logits) const override {
    auto* d = dynamic_cast<HymbaDecodeState*>(&base);
    KLLENS_CHECK(d != nullptr, "decode_step was given a decode state of another model");
    check_ids(std::span<const int32_t>(&token, 1));
    const int64_t H = cfg_.hidden;
    thread_local ScratchVec hidden_buf;
    float* hidden = hidden_buf.get(static_cast<size_t>(H));
    embedding_row(*embed_, token, hidden);
    const int64_t pos = cfg_.meta + d->position;
    for (int l = 0; l < cfg_.layers; ++l)
      layer(l, hidden, 1, &pos, d->conv[static_cast<size_t>(l)].data(),
            d->ssm[static_cast<size_t>(l)].data(), nullptr, &d->kv[static_cast<size_t>(owner(l))]);
    head(hidden, 1, logits);
    ++d->position;
  }

 private:
  int owner(int l) const {
    const int src = cfg_.layer[static_cast<size_t>(l)].kv_source;
    return src >= 0 ? src : l;
  }

  void head(const float* hidden, int64_t T, float* logits) const {
    thread_local ScratchVec normed_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * cfg_.hidden));
    ops::rmsnorm(normed, hidden, norm_f_->data(), T, cfg_.hidden, cfg_.eps);
    linear(logits, normed, *head_, nullptr, T, cfg_.vocab, cfg_.hidden);
  }

  // One decoder layer on hidden {T, H} at positions pos {T}; conv/ssm states carried in and out.
  //  fs != null (prefill): the T rows attend to each other; a K/V consumer reads the producer's
  //    K/V from fs, and a producer stores its K/V there.
  //  cache != null: the cache of this layer's K/V owner. An owner appends its new rows. Without
  //    fs (decode), attention reads the cache.
  void layer(int l, float* hidden, int64_t T, const int64_t* pos, float* conv_state,
             float* ssm_state, HymbaForwardState* fs, KvCache* cache) const {
    const HymbaLayer& L = layers_[static_cast<size_t>(l)];
    const HymbaLayerConfig& lc = cfg_.layer[static_cast<size_t>(l)];
    const int64_t H = cfg_.hidden, I = cfg_.inner, Hq = cfg_.heads, Hkv = cfg_.kv_heads;
    const int64_t Dk = cfg_.head_dim, Dv = cfg_.v_head_dim, Kw = cfg_.k_width(), Vw = cfg_.v_width();
    const bool own_kv = lc.kv_source < 0;
    const int64_t P = cfg_.in_proj_rows(l);
    // Every buffer below is written whole before it is read. new_decode_state's prefix prefill
    // and decode_step call layer() one after another, never from inside it.
    thread_local ScratchVec u_buf, proj_buf, k_buf, v_buf, attn_buf, y_buf, out_buf;

    // input_layernorm, then in_proj (L1601–1622)   proj {T, P} = [q | k | v | x | z]
    float* u = u_buf.get(static_cast<size_t>(T * H));
    ops::rmsnorm(u, hidden, L.norm->data(), T, H, cfg_.eps);
    float* proj = proj_buf.get(static_cast<size_t>(T * P));
    linear(proj, u, *L.in_proj, data_or_null(L.in_proj_bias), T, P, H);
    float* q = proj;                                      // {T, Hq, Dk}, row stride P
    const float* x = proj + H + (own_kv ? Kw + Vw : 0);  // {T, I} pre-conv SSM input
    const float* z = proj + P - I;                        // {T, I} gate

    // Attention branch (HymbaFlexAttention with attn_only_wo_proj): RoPE on q, and on k when the
    // layer computes its own K/V; consumers take the producer's post-RoPE K and V.
    if (cfg_.rope) ops::apply_rope(q, P, T, Hq, Dk, pos, inv_freq_.data(), Dk);
    float *kbuf = nullptr, *vbuf = nullptr;
    if (own_kv) {
      kbuf = k_buf.get(static_cast<size_t>(T * Kw));
      vbuf = v_buf.get(static_cast<size_t>(T * Vw));
      for (int64_t t = 0; t < T; ++t) {
        std::copy_n(proj + t * P + H, Kw, kbuf + t * Kw);
        std::copy_n(proj + t * P + H + Kw, Vw, vbuf + t * Vw);
      }
      if (cfg_.rope) ops::apply_rope(kbuf, Kw, T, Hkv, Dk, pos, inv_freq_.data(), Dk);
      if (cache) {
        cache->append(kbuf, Kw, vbuf, Vw, pos, T);
        KLLENS_CHECK(T == 1 || cache->evicted() == 0, "a multi-row append overflowed the KV ring");
      }
      // The consumers run later, after this buffer has been reused: they get a copy.
      if (fs && lc.kv_shared) {
        fs->k[static_cast<size_t>(l)].assign(kbuf, kbuf + T * Kw);
        fs->v[static_cast<size_t>(l)].assign(vbuf, vbuf + T * Vw);
      }
    }
    const float *kp = nullptr, *vp = nullptr;
    const int64_t* kpos = nullptr;
    int64_t S = 0;
    if (fs) {
      if (own_kv) {
        kp = kbuf;
        vp = vbuf;
      } else {
        const auto src = static_cast<size_t>(lc.kv_source);
        if (fs->k.size() <= src || fs->k[src].size() != static_cast<size_t>(T * Kw))
          fail("hymba: layer {} reuses the K/V of layer {}, which has not run on this forward state",
               l, lc.kv_source);
        kp = fs->k[src].data();
        vp = fs->v[src].data();
      }
      kpos = pos;
      S = T;
    } else {
      KLLENS_CHECK(cache != nullptr, "hymba layer needs a forward state or a KV cache");
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
    ops::attention(attn, q, kp, vp, pos, kpos, shape, lc.window > 0 ? lc.window + 1 : 0,
                   lc.window > 0 ? cfg_.meta : 0, 1.0f / std::sqrt(static_cast<float>(Dk)));

    // SSM branch (L1623–1718)   y {T, I}
    float* y = y_buf.get(static_cast<size_t>(T * I));
    L.ssm.forward(y, x, P, z, P, T, conv_state, ssm_state);

    // Fusion (L1719–1720): out_proj((pre_avg_layernorm1(attn) + pre_avg_layernorm2(ssm)) / 2)
    ops::rmsnorm(attn, attn, L.pre_avg1->data(), T, I, cfg_.eps);
    ops::rmsnorm(y, y, L.pre_avg2->data(), T, I, cfg_.eps);
    for (int64_t i = 0; i < T * I; ++i) y[i] = (attn[i] + y[i]) / 2.0f;
    float* out = out_buf.get(static_cast<size_t>(T * H));
    linear(out, y, *L.out_proj, data_or_null(L.out_proj_bias), T, H, I);
    for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i];

    // MLP (HymbaSparseMoeBlock with one expert → HymbaMLP, L1750–1825)
    if (L.mlp_norm) {
      ops::rmsnorm(u, hidden, L.mlp_norm->data(), T, H, cfg_.eps);
      L.mlp.forward(out, u, T);
      for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i];
    }
  }

  HymbaConfig cfg_;
  const Param *embed_ = nullptr, *head_ = nullptr, *norm_f_ = nullptr, *meta_ = nullptr;
  std::vector<HymbaLayer> layers_;
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
