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
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/layer_stack.h"

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
  const AttentionHeads heads = read_attention_heads(c, m.hidden);
  m.heads = heads.heads;
  m.kv_heads = heads.kv_heads;
  m.head_dim = heads.head_dim;

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

class JambaModel : public LayerStackModel {
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

    ends_.embed = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("model.final_layernorm.weight");  // JambaModel.final_layernorm
    ends_.norm_eps = cfg_.eps;
    const std::string moe_kind = fmt::format("moe({} experts, top-{})", cfg_.n_experts, cfg_.top_k);
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = layer_prefix(l);
      const JambaLayerConfig& lc = cfg_.per_layer[static_cast<size_t>(l)];
      // JambaMambaDecoderLayer / JambaAttentionDecoderLayer: h += mixer(input_layernorm(h));
      // h += feed_forward(pre_ff_layernorm(h)).
      std::unique_ptr<Mixer> mixer;
      if (lc.mixer == MixerKind::kMamba) {
        // JambaMambaMixer.slow_forward: conv → silu → x_proj → dt/B/C RMSNorm →
        // softplus(dt_proj(dt) + bias) → scan → * silu(gate)
        const std::string m = p + "mamba.";
        auto b = std::make_unique<Mamba1MixerBlock>();
        b->hidden = H;
        b->bind(weights_, m);
        Mamba1Ssm& ssm = b->ssm;
        ssm.inner = cfg_.inner;
        ssm.state = cfg_.state;
        ssm.dt_rank = cfg_.dt_rank;
        ssm.conv_kernel = cfg_.conv;
        ssm.dt_norm = &weights_.get(m + "dt_layernorm.weight");
        ssm.b_norm = &weights_.get(m + "b_layernorm.weight");
        ssm.c_norm = &weights_.get(m + "c_layernorm.weight");
        ssm.norm_eps = cfg_.eps;  // JambaRMSNorm(..., eps=config.rms_norm_eps)
        mixer = std::move(b);
      } else {
        // JambaAttention: LlamaAttention without RoPE, scaling head_dim^-0.5, GQA
        mixer = AttentionMixer::bound(weights_, p + "self_attn.", H, cfg_.heads, cfg_.kv_heads,
                                      cfg_.head_dim);
      }
      std::unique_ptr<Mixer> ff;
      if (lc.moe) {
        auto moe = std::make_unique<MoeMixer>();
        moe->hidden = H;
        moe->top_k = cfg_.top_k;
        moe->router = &weights_.get(p + "feed_forward.router.weight");
        for (int64_t e = 0; e < cfg_.n_experts; ++e)
          moe->experts.push_back(SwiGluMlp::bind(weights_, expert_prefix(l, e), H, cfg_.ffn));
        ff = std::move(moe);
      } else {
        auto mlp = std::make_unique<SwiGluMixer>();
        mlp->mlp = SwiGluMlp::bind(weights_, p + "feed_forward.", H, cfg_.ffn);
        ff = std::move(mlp);
      }
      StackLayer& layer = layers_.emplace_back();
      layer.kind = std::string(lc.mixer == MixerKind::kAttention ? "attention" : "mamba") + "+" +
                   (lc.moe ? moe_kind : "mlp");
      layer.blocks.push_back({&weights_.get(p + "input_layernorm.weight"), cfg_.eps, 1.0f, std::move(mixer)});
      layer.blocks.push_back({&weights_.get(p + "pre_ff_layernorm.weight"), cfg_.eps, 1.0f, std::move(ff)});
    }

    finish_stack("jamba", folder);
    int64_t n_attn = 0, n_moe = 0;
    for (const auto& lc : cfg_.per_layer) {
      n_attn += lc.mixer == MixerKind::kAttention;
      n_moe += lc.moe;
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

 private:
  JambaConfig cfg_;
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
