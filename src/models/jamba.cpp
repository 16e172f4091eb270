// Jamba (HF JambaForCausalLM, model_type "jamba"). Reference: transformers
// models/jamba/modular_jamba.py (5.x; same math as modeling_jamba.py of 4.4x): JambaMambaMixer
// .slow_forward, JambaAttention (LlamaAttention without RoPE), JambaSparseMoeBlock +
// MixtralExperts, JambaMLP (MistralMLP), JambaAttentionDecoderLayer / JambaMambaDecoderLayer,
// JambaConfig.layers_block_type / layers_num_experts.
//
// Every layer: h += mixer(input_layernorm(h)); h += feed_forward(pre_ff_layernorm(h)), where the
// mixer is Mamba-1 or attention and the feed-forward is an MLP or a top-k mixture of MLP experts.
#include "models/families.h"
#include "models/llama_layout.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/attention.h"
#include "kernels/ops.h"
#include "models/attention_block.h"
#include "models/mamba1_ssm.h"

namespace kllens {
namespace {

enum class MixerKind : uint8_t { kMamba, kAttention };

struct JambaLayerConfig {
  MixerKind mixer = MixerKind::kMamba;
  bool moe = false;  // HF: layers_num_experts[l] > 1
};

struct JambaConfig {
  int64_t hidden = 0, layers = 0, vocab = 0, ffn = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;                 // attention
  int64_t inner = 0, state = 0, conv = 0, dt_rank = 0;           // Mamba
  int64_t n_experts = 1, top_k = 1;                              // MoE
  bool conv_bias = true, proj_bias = false, tied = false;
  bool layers_from_list = false;                                 // layers_block_type was given
  int64_t attn_period = 8, attn_offset = 4, expert_period = 2, expert_offset = 1;
  float eps = 1e-6f;
  std::vector<JambaLayerConfig> per_layer;
};

// A period / offset pair as JambaConfig._check_supported_offset accepts it.
void check_period(const HfConfig& c, const char* period_key, int64_t period,
                  const char* offset_key, int64_t offset) {
  if (period <= 0) c.invalid(period_key, fmt::format("must be a positive integer, got {}", period));
  if (offset < 0 || offset >= period)
    c.invalid(offset_key, fmt::format("({}) must be in [0, {}) ({} = {})", offset, period,
                                      period_key, period));
}

JambaConfig parse_config(const HfConfig& c) {
  JambaConfig m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.ffn = c.get_positive("intermediate_size");
  m.eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  if (!(m.eps >= 0) || !std::isfinite(m.eps)) c.invalid("rms_norm_eps", "must be a non-negative number");
  m.tied = c.get_bool("tie_word_embeddings", false);
  // Both the MLPs and the Mamba gate use hidden_act.
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu") c.invalid("hidden_act", "is '" + act + "'; only \"silu\" is supported");

  // Attention (LlamaAttention: head_dim from config when given, else hidden / heads).
  m.heads = c.get_positive("num_attention_heads");
  m.kv_heads = c.has("num_key_value_heads") && !c.json()["num_key_value_heads"].is_null()
                   ? c.get_positive("num_key_value_heads")
                   : m.heads;
  if (m.heads % m.kv_heads != 0)
    c.invalid("num_key_value_heads", fmt::format("({}) must divide num_attention_heads ({})",
                                                 m.kv_heads, m.heads));
  if (c.has("head_dim") && !c.json()["head_dim"].is_null()) {
    m.head_dim = c.get_positive("head_dim");
  } else {
    if (m.hidden % m.heads != 0)
      c.invalid("num_attention_heads",
                fmt::format("({}) must divide hidden_size ({}) when head_dim is not given", m.heads,
                            m.hidden));
    m.head_dim = m.hidden / m.heads;
  }

  // Mamba: intermediate = mamba_expand * hidden; mamba_dt_rank an integer or "auto".
  const int64_t expand = c.has("mamba_expand") ? c.get_positive("mamba_expand") : 2;
  m.inner = expand * m.hidden;
  m.state = c.has("mamba_d_state") ? c.get_positive("mamba_d_state") : 16;
  m.conv = c.has("mamba_d_conv") ? c.get_positive("mamba_d_conv") : 4;
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

  // Experts.
  // At most 256 experts (DeepSeek-V3's count; Jamba has 16): 1024 layers of 1024 experts would be
  // a table of 3 million tensors.
  m.n_experts = c.has("num_experts") ? c.get_positive("num_experts", 256) : 16;
  m.top_k = c.has("num_experts_per_tok") ? c.get_positive("num_experts_per_tok") : 2;
  if (m.n_experts > 1 && m.top_k > m.n_experts)
    c.invalid("num_experts_per_tok", fmt::format("({}) must not exceed num_experts ({})", m.top_k,
                                                 m.n_experts));

  // Layer schedule: JambaConfig.layers_block_type / layers_num_experts.
  m.attn_period = c.get_int("attn_layer_period", 8);
  m.attn_offset = c.get_int("attn_layer_offset", 4);
  m.expert_period = c.get_int("expert_layer_period", 2);
  m.expert_offset = c.get_int("expert_layer_offset", 1);
  check_period(c, "expert_layer_period", m.expert_period, "expert_layer_offset", m.expert_offset);
  m.per_layer.resize(static_cast<size_t>(m.layers));
  if (c.has("layers_block_type") && !c.json()["layers_block_type"].is_null()) {
    const auto& list = c.json()["layers_block_type"];
    if (!list.is_array() || static_cast<int64_t>(list.size()) != m.layers)
      c.invalid("layers_block_type",
                fmt::format("must be a list of num_hidden_layers ({}) entries, got {}", m.layers,
                            list.dump()));
    for (size_t l = 0; l < list.size(); ++l) {
      const auto& e = list[l];
      if (e == "mamba") {
        m.per_layer[l].mixer = MixerKind::kMamba;
      } else if (e == "attention") {
        m.per_layer[l].mixer = MixerKind::kAttention;
      } else {
        c.invalid("layers_block_type", fmt::format("entry {} is {}; expected \"mamba\" or \"attention\"",
                                                   l, e.dump()));
      }
    }
    m.layers_from_list = true;
  } else {
    check_period(c, "attn_layer_period", m.attn_period, "attn_layer_offset", m.attn_offset);
    for (int64_t l = 0; l < m.layers; ++l)
      m.per_layer[static_cast<size_t>(l)].mixer =
          l % m.attn_period == m.attn_offset ? MixerKind::kAttention : MixerKind::kMamba;
  }
  for (int64_t l = 0; l < m.layers; ++l)
    m.per_layer[static_cast<size_t>(l)].moe = l % m.expert_period == m.expert_offset && m.n_experts > 1;
  return m;
}

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }
std::string expert_prefix(int l, int64_t e) {
  return layer_prefix(l) + "feed_forward.experts." + std::to_string(e) + ".";
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const JambaConfig& c) {
  const int64_t H = c.hidden, I = c.inner, N = c.state, K = c.conv, R = c.dt_rank;
  const int64_t Q = c.heads * c.head_dim, KV = c.kv_heads * c.head_dim;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = layer_prefix(l);
    const JambaLayerConfig& lc = c.per_layer[static_cast<size_t>(l)];
    specs.push_back({p + "input_layernorm.weight", Role::kNorm, l, {H}});
    if (lc.mixer == MixerKind::kMamba) {
      const std::string m = p + "mamba.";
      specs.push_back({m + "in_proj.weight", Role::kInProj, l, {2 * I, H}});
      if (c.proj_bias) specs.push_back({m + "in_proj.bias", Role::kBias, l, {2 * I}});
      specs.push_back({m + "conv1d.weight", Role::kConv1d, l, {I, 1, K}});
      if (c.conv_bias) specs.push_back({m + "conv1d.bias", Role::kBias, l, {I}});
      specs.push_back({m + "x_proj.weight", Role::kXProj, l, {R + 2 * N, I}});
      specs.push_back({m + "dt_layernorm.weight", Role::kNorm, l, {R}});
      specs.push_back({m + "b_layernorm.weight", Role::kNorm, l, {N}});
      specs.push_back({m + "c_layernorm.weight", Role::kNorm, l, {N}});
      specs.push_back({m + "dt_proj.weight", Role::kDtProj, l, {I, R}});
      specs.push_back({m + "dt_proj.bias", Role::kDtBias, l, {I}});
      specs.push_back({m + "A_log", Role::kSsmA, l, {I, N}});
      specs.push_back({m + "D", Role::kSsmD, l, {I}});
      specs.push_back({m + "out_proj.weight", Role::kOutProj, l, {H, I}});
      if (c.proj_bias) specs.push_back({m + "out_proj.bias", Role::kBias, l, {H}});
    } else {
      const std::string a = p + "self_attn.";
      specs.push_back({a + "q_proj.weight", Role::kQ, l, {Q, H}});
      specs.push_back({a + "k_proj.weight", Role::kK, l, {KV, H}});
      specs.push_back({a + "v_proj.weight", Role::kV, l, {KV, H}});
      specs.push_back({a + "o_proj.weight", Role::kO, l, {H, Q}});
    }
    specs.push_back({p + "pre_ff_layernorm.weight", Role::kNorm, l, {H}});
    if (lc.moe) {
      specs.push_back({p + "feed_forward.router.weight", Role::kRouter, l, {c.n_experts, H}});
      for (int64_t e = 0; e < c.n_experts; ++e)
        SwiGluMlp::add_specs(specs, expert_prefix(l, e), l, H, c.ffn, false);
    } else {
      SwiGluMlp::add_specs(specs, p + "feed_forward.", l, H, c.ffn, false);
    }
  }
  specs.push_back({"model.final_layernorm.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

struct JambaLayer {
  MixerKind mixer = MixerKind::kMamba;
  const Param* input_norm = nullptr;
  const Param* ff_norm = nullptr;
  // Mamba
  const Param *in_proj = nullptr, *in_proj_bias = nullptr, *out_proj = nullptr,
              *out_proj_bias = nullptr;
  Mamba1Ssm ssm;
  // Attention
  const Param *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  // Feed-forward: one MLP, or a router over experts.
  const Param* router = nullptr;     // {n_experts, H} or null (plain MLP)
  std::vector<SwiGluMlp> experts;    // the MLP when router is null
};

class JambaForwardState : public ForwardState {
 public:
  std::unique_ptr<ForwardState> clone() const override {
    return std::make_unique<JambaForwardState>(*this);
  }
};

// Per layer: conv {inner, K-1} + ssm {inner, state} for Mamba layers (empty otherwise), an
// unbounded KV cache for attention layers (uninitialized otherwise).
class JambaDecodeState : public DecodeState {
 public:
  std::vector<std::vector<float>> conv, ssm;
  std::vector<KvCache> kv;
  size_t bytes() const override {
    size_t n = 0;
    for (size_t l = 0; l < conv.size(); ++l) n += (conv[l].size() + ssm[l].size()) * sizeof(float);
    for (const auto& c : kv) n += c.bytes();
    return n;
  }
};

const float* data_or_null(const Param* p) { return p ? p->data() : nullptr; }

class JambaModel : public Model {
 public:
  JambaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden;
    // transformers 5 keeps experts fused in memory (experts.gate_up_proj {E, 2F, H}) but saves
    // them per expert; a file with the fused layout is not one save_pretrained writes.
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string fused = layer_prefix(l) + "feed_forward.experts.gate_up_proj";
      if (store.find(fused) != nullptr)
        fail("{}: tensor '{}' holds fused experts; kllens reads the per-expert layout "
             "(feed_forward.experts.<e>.gate_proj.weight, ...) that save_pretrained writes",
             folder, fused);
    }
    weights_ = Weights::load(store, tensor_table(cfg_), folder);

    embed_ = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    head_ = cfg_.tied ? embed_ : &weights_.get("lm_head.weight");
    norm_f_ = &weights_.get("model.final_layernorm.weight");
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = layer_prefix(l);
      const JambaLayerConfig& lc = cfg_.per_layer[static_cast<size_t>(l)];
      JambaLayer L;
      L.mixer = lc.mixer;
      L.input_norm = &weights_.get(p + "input_layernorm.weight");
      L.ff_norm = &weights_.get(p + "pre_ff_layernorm.weight");
      if (lc.mixer == MixerKind::kMamba) {
        const std::string m = p + "mamba.";
        L.in_proj = &weights_.get(m + "in_proj.weight");
        L.in_proj_bias = weights_.find(m + "in_proj.bias");
        L.out_proj = &weights_.get(m + "out_proj.weight");
        L.out_proj_bias = weights_.find(m + "out_proj.bias");
        L.ssm.inner = cfg_.inner;
        L.ssm.state = cfg_.state;
        L.ssm.dt_rank = cfg_.dt_rank;
        L.ssm.conv_kernel = cfg_.conv;
        L.ssm.conv = &weights_.get(m + "conv1d.weight");
        L.ssm.conv_bias = weights_.find(m + "conv1d.bias");
        L.ssm.x_proj = &weights_.get(m + "x_proj.weight");
        L.ssm.dt_proj = &weights_.get(m + "dt_proj.weight");
        L.ssm.dt_bias = &weights_.get(m + "dt_proj.bias");
        L.ssm.D = &weights_.get(m + "D");
        L.ssm.dt_norm = &weights_.get(m + "dt_layernorm.weight");
        L.ssm.b_norm = &weights_.get(m + "b_layernorm.weight");
        L.ssm.c_norm = &weights_.get(m + "c_layernorm.weight");
        L.ssm.norm_eps = cfg_.eps;  // JambaRMSNorm(..., eps=config.rms_norm_eps)
        L.ssm.set_A(weights_.get(m + "A_log"));
      } else {
        const std::string a = p + "self_attn.";
        L.q = &weights_.get(a + "q_proj.weight");
        L.k = &weights_.get(a + "k_proj.weight");
        L.v = &weights_.get(a + "v_proj.weight");
        L.o = &weights_.get(a + "o_proj.weight");
      }
      if (lc.moe) {
        L.router = &weights_.get(p + "feed_forward.router.weight");
        for (int64_t e = 0; e < cfg_.n_experts; ++e)
          L.experts.push_back(SwiGluMlp::bind(weights_, expert_prefix(l, e), H, cfg_.ffn));
      } else {
        L.experts.push_back(SwiGluMlp::bind(weights_, p + "feed_forward.", H, cfg_.ffn));
      }
      layers_.push_back(std::move(L));
    }

    info_.arch = "jamba";
    info_.folder = folder;
    info_.n_layers = cfg_.layers;
    info_.d_model = H;
    info_.vocab = cfg_.vocab;
    const std::string moe = fmt::format("moe({} experts, top-{})", cfg_.n_experts, cfg_.top_k);
    int64_t n_attn = 0, n_moe = 0;
    for (const auto& lc : cfg_.per_layer) {
      n_attn += lc.mixer == MixerKind::kAttention;
      n_moe += lc.moe;
      info_.layer_kinds.push_back(
          std::string(lc.mixer == MixerKind::kAttention ? "attention" : "mamba") + "+" +
          (lc.moe ? moe : "mlp"));
    }
    info_.details = {
        {"attention_layers", fmt::format("{} of {}", n_attn, cfg_.layers)},
        {"layer_schedule", cfg_.layers_from_list
                               ? "layers_block_type"
                               : fmt::format("attention every {} from {}", cfg_.attn_period,
                                             cfg_.attn_offset)},
        {"moe_layers", fmt::format("{} of {} (every {} from {})", n_moe, cfg_.layers,
                                   cfg_.expert_period, cfg_.expert_offset)},
        {"num_experts", std::to_string(cfg_.n_experts)},
        {"num_experts_per_tok", std::to_string(cfg_.top_k)},
        {"intermediate_size", std::to_string(cfg_.ffn)},
        {"heads", std::to_string(cfg_.heads)},
        {"kv_heads", std::to_string(cfg_.kv_heads)},
        {"head_dim", std::to_string(cfg_.head_dim)},
        {"d_inner", std::to_string(cfg_.inner)},
        {"d_state", std::to_string(cfg_.state)},
        {"d_conv", std::to_string(cfg_.conv)},
        {"dt_rank", std::to_string(cfg_.dt_rank)},
        {"conv_bias", cfg_.conv_bias ? "yes" : "no"},
        {"proj_bias", cfg_.proj_bias ? "yes" : "no"},
        {"tied_embeddings", cfg_.tied ? "yes" : "no"},
        {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

  std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const override {
    check_ids(ids);
    auto s = std::make_unique<JambaForwardState>();
    embed(ids, *s);
    return s;
  }

  void run_layer(int l, ForwardState& s) const override {
    KLLENS_CHECK(l >= 0 && l < cfg_.layers, "layer {} out of range", l);
    const JambaLayer& L = layers_[static_cast<size_t>(l)];
    if (L.mixer == MixerKind::kMamba) {
      // A fresh sequence starts from zero states.
      thread_local ScratchVec conv_buf, ssm_buf;
      layer(L, s.hidden.data(), s.rows, nullptr, conv_buf.zeroed(L.ssm.conv_state_size()),
            ssm_buf.zeroed(L.ssm.ssm_state_size()), nullptr);
    } else {
      thread_local Scratch<int64_t> pos_buf;
      int64_t* pos = pos_buf.get(static_cast<size_t>(s.rows));
      for (int64_t t = 0; t < s.rows; ++t) pos[t] = t;
      layer(L, s.hidden.data(), s.rows, pos, nullptr, nullptr, nullptr);
    }
    s.next_layer = l + 1;
  }

  void finish(const ForwardState& s, float* logits) const override {
    head(s.hidden.data(), s.rows, logits);
  }

  std::unique_ptr<DecodeState> new_decode_state() const override {
    auto s = std::make_unique<JambaDecodeState>();
    s->conv.resize(static_cast<size_t>(cfg_.layers));
    s->ssm.resize(static_cast<size_t>(cfg_.layers));
    s->kv.resize(static_cast<size_t>(cfg_.layers));
    for (int l = 0; l < cfg_.layers; ++l) {
      const JambaLayer& L = layers_[static_cast<size_t>(l)];
      if (L.mixer == MixerKind::kMamba) {
        s->conv[static_cast<size_t>(l)].assign(L.ssm.conv_state_size(), 0.0f);
        s->ssm[static_cast<size_t>(l)].assign(L.ssm.ssm_state_size(), 0.0f);
      } else {
        const int64_t KV = cfg_.kv_heads * cfg_.head_dim;
        s->kv[static_cast<size_t>(l)].init(KV, KV, 0, 0);
      }
    }
    return s;
  }

  void decode_step(DecodeState& base, int32_t token, float* logits) const override {
    auto* s = dynamic_cast<JambaDecodeState*>(&base);
    KLLENS_CHECK(s != nullptr, "decode_step was given a decode state of another model");
    check_ids(std::span<const int32_t>(&token, 1));
    // Kept across steps so that its row is allocated once; embed() overwrites it.
    thread_local JambaForwardState fs;
    embed(std::span<const int32_t>(&token, 1), fs);
    const int64_t pos = s->position;
    for (int l = 0; l < cfg_.layers; ++l) {
      const auto i = static_cast<size_t>(l);
      const JambaLayer& L = layers_[i];
      if (L.mixer == MixerKind::kMamba)
        layer(L, fs.hidden.data(), 1, nullptr, s->conv[i].data(), s->ssm[i].data(), nullptr);
      else
        layer(L, fs.hidden.data(), 1, &pos, nullptr, nullptr, &s->kv[i]);
    }
    head(fs.hidden.data(), 1, logits);
    ++s->position;
  }

 private:
  void embed(std::span<const int32_t> ids, ForwardState& s) const {
    embed_tokens(*embed_, ids, s);
  }

  // JambaModel: final_layernorm, then lm_head.
  void head(const float* hidden, int64_t T, float* logits) const {
    thread_local ScratchVec normed_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * cfg_.hidden));
    ops::rmsnorm(normed, hidden, norm_f_->data(), T, cfg_.hidden, cfg_.eps);
    linear(logits, normed, *head_, nullptr, T, cfg_.vocab, cfg_.hidden);
  }

  // One decoder layer on hidden {T, H}: h += mixer(input_layernorm(h)); h += ff(pre_ff_layernorm(h)).
  // Mamba: conv_state / ssm_state carried in and out. Attention: rows at positions pos {T};
  // cache == null: the T rows attend to each other (prefill), else they are appended to the
  // cache first and attend to everything in it (decode).
  void layer(const JambaLayer& L, float* hidden, int64_t T, const int64_t* pos, float* conv_state,
             float* ssm_state, KvCache* cache) const {
    const int64_t H = cfg_.hidden;
    // Each written whole before it is read (moe() zeroes out itself before accumulating).
    thread_local ScratchVec normed_buf, out_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * H));
    float* out = out_buf.get(static_cast<size_t>(T * H));
    ops::rmsnorm(normed, hidden, L.input_norm->data(), T, H, cfg_.eps);
    if (L.mixer == MixerKind::kMamba)
      mamba(L, out, normed, T, conv_state, ssm_state);
    else
      attention(L, out, normed, T, pos, cache);
    for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i];
    ops::rmsnorm(normed, hidden, L.ff_norm->data(), T, H, cfg_.eps);
    if (L.router)
      moe(L, out, normed, T);
    else
      L.experts[0].forward(out, normed, T);
    for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i];
  }

  // JambaMambaMixer.slow_forward: out {T, H} = out_proj(ssm(in_proj(x))).
  void mamba(const JambaLayer& L, float* out, const float* x, int64_t T, float* conv_state,
             float* ssm_state) const {
    const int64_t H = cfg_.hidden, I = cfg_.inner;
    // xz {T, 2I} = in_proj(x): hidden_states = columns [0, I), gate = columns [I, 2I)
    thread_local ScratchVec xz_buf, y_buf;  // each written whole before it is read
    float* xz = xz_buf.get(static_cast<size_t>(T * 2 * I));
    linear(xz, x, *L.in_proj, data_or_null(L.in_proj_bias), T, 2 * I, H);
    // conv → silu → x_proj → dt/B/C RMSNorm → softplus(dt_proj(dt) + bias) → scan → * silu(gate)
    float* y = y_buf.get(static_cast<size_t>(T * I));
    L.ssm.forward(y, xz, 2 * I, xz + I, 2 * I, T, conv_state, ssm_state);
    linear(out, y, *L.out_proj, data_or_null(L.out_proj_bias), T, H, I);
  }

  // JambaAttention: q, k, v projections (no bias), no positional encoding, causal softmax
  // attention with GQA and scaling head_dim^-0.5, o_proj.   out {T, H}
  void attention(const JambaLayer& L, float* out, const float* x, int64_t T, const int64_t* pos,
                 KvCache* cache) const {
    const int64_t H = cfg_.hidden, D = cfg_.head_dim, Hq = cfg_.heads, Hkv = cfg_.kv_heads;
    const int64_t Q = Hq * D, KV = Hkv * D;
    thread_local ScratchVec q_buf, k_buf, v_buf, attn_buf;  // each written whole before it is read
    float* q = q_buf.get(static_cast<size_t>(T * Q));
    float* k = k_buf.get(static_cast<size_t>(T * KV));
    float* v = v_buf.get(static_cast<size_t>(T * KV));
    linear(q, x, *L.q, nullptr, T, Q, H);
    linear(k, x, *L.k, nullptr, T, KV, H);
    linear(v, x, *L.v, nullptr, T, KV, H);
    float* attn = attn_buf.get(static_cast<size_t>(T * Q));
    ops::AttentionShape shape;
    shape.T = T;
    shape.Hq = Hq;
    shape.Hkv = Hkv;
    shape.Dk = D;
    shape.Dv = D;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    if (cache) {
      cache->append(k, KV, v, KV, pos, T);
      KLLENS_CHECK(cache->evicted() == 0, "an unbounded KV cache evicted rows");
      shape.S = cache->rows();
      ops::attention(attn, q, cache->k.data(), cache->v.data(), pos, cache->pos.data(), shape, 0,
                     0, scale);
    } else {
      shape.S = T;
      ops::attention(attn, q, k, v, pos, pos, shape, 0, 0, scale);
    }
    linear(out, attn, *L.o, nullptr, T, H, Q);
  }

  // JambaSparseMoeBlock: router logits {T, E}; p = softmax over all experts (float32);
  // the top-k probabilities are used as they are (no renormalization); out = sum over the
  // selected experts of p_e * expert_e(x), accumulated in expert order like MixtralExperts'
  // index_add_.   out {T, H}
  void moe(const JambaLayer& L, float* out, const float* x, int64_t T) const {
    const int64_t H = cfg_.hidden, E = cfg_.n_experts, K = cfg_.top_k;
    thread_local ScratchVec probs_buf, weight_buf, xin_buf, yout_buf;
    thread_local Scratch<uint8_t> selected_buf;
    thread_local Scratch<int64_t> order_buf;
    thread_local std::vector<int64_t> rows;
    const auto TE = static_cast<size_t>(T * E);
    float* probs = probs_buf.get(TE);
    linear(probs, x, *L.router, nullptr, T, E, H);
    // weight {T, E}: the routing weight of expert e for token t where selected[t, e]. Both are
    // set only where an expert is selected, so they start from zeros.
    float* weight = weight_buf.zeroed(TE);
    uint8_t* selected = selected_buf.zeroed(TE);
    int64_t* order = order_buf.get(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      float* p = probs + t * E;
      float mx = p[0];
      for (int64_t e = 1; e < E; ++e) mx = std::max(mx, p[e]);
      float sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) {
        p[e] = std::exp(p[e] - mx);
        sum += p[e];
      }
      for (int64_t e = 0; e < E; ++e) p[e] /= sum;
      // torch.topk: largest first; ties go to the lower index here.
      for (int64_t e = 0; e < E; ++e) order[e] = e;
      std::partial_sort(order, order + K, order + E, [p](int64_t a, int64_t b) {
        return p[a] > p[b] || (p[a] == p[b] && a < b);
      });
      for (int64_t j = 0; j < K; ++j) {
        const int64_t e = order[j];
        weight[t * E + e] = p[e];
        selected[t * E + e] = 1;
      }
    }
    std::fill(out, out + T * H, 0.0f);
    for (int64_t e = 0; e < E; ++e) {
      rows.clear();
      for (int64_t t = 0; t < T; ++t)
        if (selected[t * E + e]) rows.push_back(t);
      if (rows.empty()) continue;
      const auto n = static_cast<int64_t>(rows.size());
      float* xin = xin_buf.get(static_cast<size_t>(n * H));
      float* yout = yout_buf.get(static_cast<size_t>(n * H));
      for (int64_t r = 0; r < n; ++r) std::copy_n(x + rows[r] * H, H, xin + r * H);
      L.experts[static_cast<size_t>(e)].forward(yout, xin, n);
      for (int64_t r = 0; r < n; ++r) {
        const float w = weight[rows[r] * E + e];
        float* o = out + rows[r] * H;
        const float* yr = yout + r * H;
        for (int64_t i = 0; i < H; ++i) o[i] += yr[i] * w;
      }
    }
  }

  JambaConfig cfg_;
  const Param *embed_ = nullptr, *head_ = nullptr, *norm_f_ = nullptr;
  std::vector<JambaLayer> layers_;
};

}  // namespace

// llama.cpp's jamba (src/models/jamba.cpp; converter conversion/jamba.py): a layer is a Mamba
// layer where head_count_kv is 0, and each MoE layer's experts are stacked into one tensor per
// projection (ffn_{gate,up,down}_exps).
std::string jamba_llama_layout(const HfConfig& config, const std::vector<TensorSpec>&,
                               LlamaLayout* out) {
  const JambaConfig c = parse_config(config);
  if (c.inner != 2 * c.hidden)
    return fmt::format("llama.cpp's jamba supports only mamba_expand = 2 (here d_inner {} for "
                       "hidden_size {})",
                       c.inner, c.hidden);
  if (c.proj_bias) return "llama.cpp's jamba has no in_proj/out_proj biases (mamba_proj_bias = true)";
  if (!c.conv_bias) return "llama.cpp's jamba requires a conv1d bias (mamba_conv_bias = false)";
  if (c.heads * c.head_dim != c.hidden)
    return fmt::format("llama.cpp's jamba needs head_dim = hidden_size / num_attention_heads "
                       "(here {} * {} != {})",
                       c.heads, c.head_dim, c.hidden);
  out->arch = "jamba";
  add_llama_embedding_and_head(out, "model.embed_tokens.weight", "model.final_layernorm.weight",
                               "lm_head.weight");
  std::vector<int32_t> kv_heads;
  bool any_moe = false;
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = layer_prefix(l), blk = llama_blk(l);
    const JambaLayerConfig& lc = c.per_layer[static_cast<size_t>(l)];
    out->tensors[p + "input_layernorm.weight"] = {blk + "attn_norm.weight"};
    if (lc.mixer == MixerKind::kMamba) {
      const std::string m = p + "mamba.";
      out->tensors[m + "in_proj.weight"] = {blk + "ssm_in.weight"};
      out->tensors[m + "conv1d.weight"] = {blk + "ssm_conv1d.weight", LlamaTransform::kSqueezeConv};
      out->tensors[m + "conv1d.bias"] = {blk + "ssm_conv1d.bias"};
      out->tensors[m + "x_proj.weight"] = {blk + "ssm_x.weight"};
      out->tensors[m + "dt_layernorm.weight"] = {blk + "ssm_dt_norm.weight"};
      out->tensors[m + "b_layernorm.weight"] = {blk + "ssm_b_norm.weight"};
      out->tensors[m + "c_layernorm.weight"] = {blk + "ssm_c_norm.weight"};
      out->tensors[m + "dt_proj.weight"] = {blk + "ssm_dt.weight"};
      out->tensors[m + "dt_proj.bias"] = {blk + "ssm_dt.bias"};
      out->tensors[m + "A_log"] = {blk + "ssm_a", LlamaTransform::kNegExp};
      out->tensors[m + "D"] = {blk + "ssm_d"};
      out->tensors[m + "out_proj.weight"] = {blk + "ssm_out.weight"};
      kv_heads.push_back(0);
    } else {
      add_llama_attention(out, p + "self_attn.", l);  // no RoPE: nothing to permute
      kv_heads.push_back(static_cast<int32_t>(c.kv_heads));
    }
    out->tensors[p + "pre_ff_layernorm.weight"] = {blk + "ffn_norm.weight"};
    if (lc.moe) {
      any_moe = true;
      out->tensors[p + "feed_forward.router.weight"] = {blk + "ffn_gate_inp.weight"};
      for (int64_t e = 0; e < c.n_experts; ++e)
        for (const char* proj : {"gate", "up", "down"}) {
          LlamaTensor t{blk + "ffn_" + proj + "_exps.weight"};
          t.expert = static_cast<int>(e);
          t.n_expert = static_cast<int>(c.n_experts);
          out->tensors[expert_prefix(l, e) + proj + "_proj.weight"] = t;
        }
    } else {
      add_llama_swiglu(out, p + "feed_forward.", l);
    }
  }
  add_llama_size_keys(out,
                      config.has("max_position_embeddings")
                          ? config.get_positive("max_position_embeddings")
                          : 262144,
                      c.hidden, c.layers, c.ffn);
  add_llama_key(out, "attention.head_count", c.heads);
  add_llama_key(out, "attention.head_count_kv", gguf::Value(kv_heads));  // INT32, as the converter
  add_llama_ssm_keys(out, c.conv, c.inner, c.state, c.dt_rank, 0);
  add_llama_key(out, "attention.layer_norm_rms_epsilon", gguf::Value(c.eps));
  if (any_moe) {
    add_llama_key(out, "expert_count", c.n_experts);
    add_llama_key(out, "expert_used_count", c.top_k);
  }
  return "";
}

// The inverse of jamba_llama_layout's keys, for a file llama.cpp wrote: attention layers are those
// with a non-zero attention.head_count_kv (given per layer), MoE layers those with a router
// (ffn_gate_inp), which must follow one expert_layer_period / offset as HF's JambaConfig has.
nlohmann::json jamba_config_from_llama_keys(const LlamaKeys& k) {
  const gguf::File& file = k.file();
  const int64_t hidden = k.positive("embedding_length");
  const int64_t layers = k.layers("attn_norm.weight");
  const int64_t heads = k.positive("attention.head_count");
  const int64_t inner = k.positive("ssm.inner_size");
  if (inner % hidden != 0)
    k.invalid("ssm.inner_size", fmt::format("({}) is not a multiple of embedding_length ({})", inner, hidden));
  const std::vector<int64_t> kv = k.per_layer("attention.head_count_kv", layers);
  const std::vector<int64_t> ffn = k.per_layer("feed_forward_length", layers);
  nlohmann::json types = nlohmann::json::array();
  int64_t kv_heads = 0;
  for (int64_t l = 0; l < layers; ++l) {
    types.push_back(kv[static_cast<size_t>(l)] > 0 ? "attention" : "mamba");
    if (kv[static_cast<size_t>(l)] > 0) {
      if (kv_heads && kv[static_cast<size_t>(l)] != kv_heads)
        k.invalid("attention.head_count_kv", "differs between attention layers; HF Jamba has one count");
      kv_heads = kv[static_cast<size_t>(l)];
    }
    if (ffn[static_cast<size_t>(l)] != ffn[0])
      k.invalid("feed_forward_length", "differs between layers; HF Jamba has one intermediate_size");
  }
  std::vector<int64_t> moe;
  for (int64_t l = 0; l < layers; ++l)
    if (file.find_tensor(llama_blk(static_cast<int>(l)) + "ffn_gate_inp.weight")) moe.push_back(l);
  int64_t n_experts = 1, top_k = 1, period = 1, offset = 0;
  if (!moe.empty()) {
    n_experts = k.positive("expert_count");
    top_k = k.positive("expert_used_count");
    const auto matches = [&](int64_t p, int64_t o) {
      for (int64_t l = 0; l < layers; ++l)
        if ((l % p == o) != std::binary_search(moe.begin(), moe.end(), l)) return false;
      return true;
    };
    bool found = false;
    for (int64_t p = 1; p <= layers && !found; ++p)
      for (int64_t o = 0; o < p && !found; ++o)
        if (matches(p, o)) {
          period = p;
          offset = o;
          found = true;
        }
    if (!found)
      fail("{}: the layers with experts (ffn_gate_inp) follow no period and offset, which HF "
           "Jamba's config cannot express",
           k.path());
  }
  const int64_t vocab = k.vocab(hidden);
  nlohmann::json c;
  c["architectures"] = nlohmann::json::array({"JambaForCausalLM"});
  c["model_type"] = "jamba";
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = layers;
  c["intermediate_size"] = ffn[0];
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = kv_heads ? kv_heads : heads;
  c["layers_block_type"] = types;
  c["mamba_expand"] = inner / hidden;
  c["mamba_d_state"] = k.positive("ssm.state_size");
  c["mamba_d_conv"] = k.positive("ssm.conv_kernel");
  c["mamba_dt_rank"] = k.positive("ssm.time_step_rank");
  c["mamba_conv_bias"] = true;   // llama.cpp's jamba has the conv1d bias and no projection biases
  c["mamba_proj_bias"] = false;
  c["num_experts"] = n_experts;
  c["num_experts_per_tok"] = top_k;
  c["expert_layer_period"] = period;
  c["expert_layer_offset"] = offset;
  k.add_common_attention_keys(c, vocab);
  return c;
}

std::vector<TensorSpec> jamba_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

std::unique_ptr<Model> make_jamba(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder, const LoadOptions&) {
  return std::make_unique<JambaModel>(config, store, folder);
}

}  // namespace kllens
