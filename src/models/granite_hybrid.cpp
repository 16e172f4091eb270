// Granite-4.0-H (HF GraniteMoeHybridForCausalLM, model_type "granitemoehybrid"; transformers
// models/granitemoehybrid/modeling_granitemoehybrid.py). Each layer is two pre-norm residual
// blocks, both scaled by residual_multiplier: a Mamba-2 mixer or attention (layer_types), then
// the shared SwiGLU MLP, whose fused input_linear holds the gate (first half) and up (second half)
// projections. The embedding is multiplied by embedding_multiplier, attention's softmax scale is
// attention_multiplier (not 1/sqrt(head_dim)), RoPE applies only with position_embedding_type
// "rope", and the logits are divided by logits_scaling. With routed experts (num_local_experts >
// 0: granite-4.0-h-tiny / -small) the MLP block is the top-k experts (softmax over the top-k
// logits) plus the shared MLP, on the same normed input; their fused input_linear {E, 2F, H} and
// output_linear {E, H, F} load as per-expert gate/up/down. llama.cpp's layout is granitehybrid
// (../shared/docs/llamacpp-formats-and-hybrids.md §3.4, §4.1).
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/layer_stack.h"
#include "models/llama_layout.h"

namespace kllens {
namespace {

struct GraniteConfig {
  int64_t hidden = 0, vocab = 0, ffn = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t experts = 0, top_k = 0, expert_ffn = 0;  // routed experts (0: dense)
  int64_t ssm_heads = 0, ssm_head_dim = 0, ssm_inner = 0, groups = 0, state = 0, conv = 0,
          chunk = 0, max_positions = 0;
  std::vector<bool> attention;  // per layer: attention (true) or Mamba-2
  bool attn_bias = false, proj_bias = false, conv_bias = true, tied = false, rope = false;
  float eps = 1e-6f;
  double theta = 10000.0;
  float embedding_multiplier = 1, residual_multiplier = 1, attention_multiplier = 1,
        logits_scaling = 1;
  TimeStepLimit dt_limit;
  int64_t attention_layers() const {
    int64_t n = 0;
    for (bool a : attention) n += a;
    return n;
  }
};

float multiplier(const HfConfig& c, const char* key, bool positive) {
  const double v = c.get_float(key, 1.0);
  if (!std::isfinite(v) || (positive ? !(v > 0) : v == 0))
    c.invalid(key, positive ? "must be a positive number" : "must be a non-zero number");
  return static_cast<float>(v);
}

GraniteConfig parse_config(const HfConfig& c) {
  GraniteConfig m;
  m.hidden = c.get_positive("hidden_size");
  m.vocab = c.get_positive("vocab_size");
  const int64_t layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  // layer_types (alias layers_block_type): "mamba" / "attention"; HF's default is all Mamba.
  const char* key = c.has("layer_types") ? "layer_types" : "layers_block_type";
  if (c.has(key) && !c.json()[key].is_null()) {
    const auto& list = c.json()[key];
    if (!list.is_array()) c.invalid(key, "must be a list of \"mamba\" / \"attention\"");
    if (static_cast<int64_t>(list.size()) != layers)
      c.invalid(key, fmt::format("has {} entries but num_hidden_layers is {}", list.size(), layers));
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string t = list[i].is_string() ? list[i].get<std::string>() : list[i].dump();
      if (t != "mamba" && t != "attention")
        c.invalid(key, fmt::format("has '{}' at index {}; a layer is \"mamba\" or \"attention\"", t, i));
      m.attention.push_back(t == "attention");
    }
  } else {
    m.attention.assign(static_cast<size_t>(layers), false);
  }
  // HF's defaults: 8 experts, top-2, intermediate_size 11008.
  m.experts = c.has("num_local_experts") ? c.get_int("num_local_experts") : 8;
  if (m.experts < 0 || m.experts > 256) c.invalid("num_local_experts", "must be 0..256");
  if (m.experts > 0) {
    m.top_k = c.has("num_experts_per_tok") ? c.get_positive("num_experts_per_tok") : 2;
    if (m.top_k > m.experts)
      c.invalid("num_experts_per_tok", fmt::format("({}) is more than num_local_experts ({})",
                                                   m.top_k, m.experts));
    m.expert_ffn = c.has("intermediate_size") ? c.get_positive("intermediate_size") : 11008;
  }
  m.ffn = c.has("shared_intermediate_size") ? c.get_positive("shared_intermediate_size") : 1024;
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu") c.invalid("hidden_act", "is '" + act + "'; kllens supports only silu");
  m.eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  if (!(m.eps >= 0)) c.invalid("rms_norm_eps", "must be a non-negative number");
  m.tied = c.get_bool("tie_word_embeddings", false);
  m.embedding_multiplier = multiplier(c, "embedding_multiplier", false);
  m.residual_multiplier = multiplier(c, "residual_multiplier", false);
  m.attention_multiplier = multiplier(c, "attention_multiplier", true);
  m.logits_scaling = multiplier(c, "logits_scaling", false);
  m.max_positions = c.has("max_position_embeddings") ? c.get_positive("max_position_embeddings") : 2048;
  if (m.attention_layers() > 0) {
    const AttentionHeads heads = read_attention_heads(c, m.hidden);
    m.heads = heads.heads;
    m.kv_heads = heads.kv_heads;
    m.head_dim = heads.head_dim;
    m.attn_bias = c.get_bool("attention_bias", false);
    // Anything but "rope" (null, "nope") is no positional encoding.
    m.rope = c.get_string("position_embedding_type", "nope") == "rope";
    if (m.rope) {
      if (m.head_dim % 2 != 0) c.invalid("head_dim", "must be even for RoPE");
      const RopeSettings rope = read_default_rope(c, 10000.0);
      if (rope.partial_rotary_factor != 1.0)
        c.invalid("partial_rotary_factor", "must be 1 (RoPE over the whole head)");
      m.theta = rope.theta;
    }
  }
  if (m.attention_layers() < layers) {
    m.ssm_heads = c.has("mamba_n_heads") ? c.get_positive("mamba_n_heads") : 128;
    m.groups = c.has("mamba_n_groups") ? c.get_positive("mamba_n_groups") : 1;
    m.state = c.has("mamba_d_state") ? c.get_positive("mamba_d_state") : 256;
    m.conv = c.has("mamba_d_conv") ? c.get_positive("mamba_d_conv") : 4;
    if (m.conv > 16) c.invalid("mamba_d_conv", "is larger than 16, which kllens does not support");
    m.chunk = c.has("mamba_chunk_size") ? c.get_positive("mamba_chunk_size") : 256;  // unused
    const double expand = c.get_float("mamba_expand", 2.0);
    if (!(expand > 0)) c.invalid("mamba_expand", "must be positive");
    m.ssm_inner = c.int_dimension("mamba_expand", expand * static_cast<double>(m.hidden));
    if (c.has("mamba_d_head") && !c.json()["mamba_d_head"].is_string()) {
      m.ssm_head_dim = c.get_positive("mamba_d_head");
    } else {
      if (c.has("mamba_d_head") && c.json()["mamba_d_head"] != "auto")
        c.invalid("mamba_d_head", "must be an integer or \"auto\"");
      if (m.ssm_inner % m.ssm_heads != 0)
        c.invalid("mamba_n_heads", fmt::format("({}) must divide mamba_expand * hidden_size = {}",
                                               m.ssm_heads, m.ssm_inner));
      m.ssm_head_dim = m.ssm_inner / m.ssm_heads;
    }
    if (m.ssm_head_dim * m.ssm_heads != m.ssm_inner)
      c.invalid("mamba_d_head", fmt::format("{} x mamba_n_heads {} is not mamba_expand * "
                                            "hidden_size = {}",
                                            m.ssm_head_dim, m.ssm_heads, m.ssm_inner));
    if (m.ssm_heads % m.groups != 0)
      c.invalid("mamba_n_groups",
                fmt::format("({}) must divide mamba_n_heads ({})", m.groups, m.ssm_heads));
    m.conv_bias = c.get_bool("mamba_conv_bias", true);
    m.proj_bias = c.get_bool("mamba_proj_bias", false);
    m.dt_limit = parse_time_step_limit(c);
  }
  return m;
}

// GraniteMoeHybridRMSNormGated: the gate first, then the norm (over all of d_inner on
// transformers' CPU path; per group in mamba_ssm and llama.cpp, the default as for Mamba-2).
Mamba2Mixer mixer_shape(const GraniteConfig& c, Mamba2GatedNorm norm) {
  return gate_then_norm_mixer(c.hidden, c.ssm_heads, c.ssm_head_dim, c.groups, c.state, c.conv,
                              norm, c.eps, c.dt_limit);
}

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

std::string expert_prefix(int l, int64_t e) {
  return layer_prefix(l) + "block_sparse_moe.experts." + std::to_string(e) + ".";
}

// The router and the experts, each expert's gate/up/down a component of its own: rows of the
// fused block_sparse_moe.input_linear {E, 2F, H} (expert e's gate, then its up) and
// output_linear {E, H, F}. Consecutive specs of one source, in its row order (synth writes them so).
void add_expert_specs(std::vector<TensorSpec>& specs, const GraniteConfig& c, int l) {
  const int64_t H = c.hidden, F = c.expert_ffn, E = c.experts;
  const std::string p = layer_prefix(l) + "block_sparse_moe.";
  specs.push_back({p + "router.layer.weight", Role::kRouter, l, {E, H}});
  const auto part = [&](int64_t e, const char* proj, Role role, std::vector<int64_t> shape,
                        const char* source, std::vector<int64_t> source_shape, int64_t row) {
    TensorSpec t{expert_prefix(l, e) + proj + ".weight", role, l, std::move(shape)};
    t.source = p + source;
    t.source_shape = std::move(source_shape);
    t.source_row = row;
    specs.push_back(std::move(t));
  };
  for (int64_t e = 0; e < E; ++e) {
    part(e, "gate_proj", Role::kGate, {F, H}, "input_linear.weight", {E, 2 * F, H}, e * 2 * F);
    part(e, "up_proj", Role::kUp, {F, H}, "input_linear.weight", {E, 2 * F, H}, e * 2 * F + F);
  }
  for (int64_t e = 0; e < E; ++e)
    part(e, "down_proj", Role::kDown, {H, F}, "output_linear.weight", {E, H, F}, e * H);
}

std::vector<TensorSpec> tensor_table(const GraniteConfig& c) {
  const int64_t H = c.hidden, F = c.ffn;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < static_cast<int>(c.attention.size()); ++l) {
    const std::string p = layer_prefix(l);
    specs.push_back({p + "input_layernorm.weight", Role::kNorm, l, {H}});
    if (c.attention[static_cast<size_t>(l)])
      AttentionMixer::add_specs(specs, p + "self_attn.", l, H, c.heads, c.kv_heads, c.head_dim,
                                c.attn_bias);
    else
      mixer_shape(c, Mamba2GatedNorm::kPerGroup).add_specs(specs, p + "mamba.", l, c.proj_bias,
                                                            c.conv_bias);
    specs.push_back({p + "post_attention_layernorm.weight", Role::kNorm, l, {H}});
    if (c.experts > 0) add_expert_specs(specs, c, l);
    // The fused input_linear [2F, H] is loaded as its two halves, each a component of its own
    // (llama.cpp's converter writes them as ffn_gate and ffn_up).
    const std::string fused = p + "shared_mlp.input_linear.weight";
    TensorSpec gate{p + "shared_mlp.gate_proj.weight", Role::kGate, l, {F, H}};
    gate.source = fused;
    gate.source_shape = {2 * F, H};
    TensorSpec up{p + "shared_mlp.up_proj.weight", Role::kUp, l, {F, H}};
    up.source = fused;
    up.source_shape = {2 * F, H};
    up.source_row = F;
    specs.push_back(gate);
    specs.push_back(up);
    specs.push_back({p + "shared_mlp.output_linear.weight", Role::kDown, l, {H, F}});
  }
  specs.push_back({"model.norm.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

class GraniteHybridModel : public LayerStackModel {
 public:
  GraniteHybridModel(const HfConfig& config, const TensorStore& store, const std::string& folder,
                     Mamba2GatedNorm norm)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);
    ends_.embed = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("model.norm.weight");
    ends_.norm_eps = cfg_.eps;
    ends_.embedding_scale = cfg_.embedding_multiplier;
    ends_.logits_divisor = cfg_.logits_scaling;
    const std::vector<float> inv_freq = cfg_.rope ? rope_inv_freq(cfg_.theta, cfg_.head_dim)
                                                  : std::vector<float>{};
    const float r = cfg_.residual_multiplier;
    for (int l = 0; l < static_cast<int>(cfg_.attention.size()); ++l) {
      const std::string p = layer_prefix(l);
      std::unique_ptr<Mixer> mixer;
      if (cfg_.attention[static_cast<size_t>(l)]) {
        auto a = AttentionMixer::bound(weights_, p + "self_attn.", H, cfg_.heads, cfg_.kv_heads,
                                       cfg_.head_dim);
        a->inv_freq = inv_freq;
        a->scale = cfg_.attention_multiplier;
        mixer = std::move(a);
      } else {
        auto m = std::make_unique<Mamba2MixerBlock>();
        m->mixer = mixer_shape(cfg_, norm);
        m->mixer.bind(weights_, p + "mamba.");
        mixer = std::move(m);
      }
      auto shared = std::make_unique<SwiGluMixer>();
      shared->mlp.hidden = H;
      shared->mlp.ffn = cfg_.ffn;
      shared->mlp.gate = &weights_.get(p + "shared_mlp.gate_proj.weight");
      shared->mlp.up = &weights_.get(p + "shared_mlp.up_proj.weight");
      shared->mlp.down = &weights_.get(p + "shared_mlp.output_linear.weight");
      std::unique_ptr<Mixer> mlp = std::move(shared);
      if (cfg_.experts > 0) {  // block_sparse_moe(h) + shared_mlp(h)
        auto moe = std::make_unique<MoeMixer>();
        moe->hidden = H;
        moe->top_k = cfg_.top_k;
        moe->renormalize = true;
        moe->router = &weights_.get(p + "block_sparse_moe.router.layer.weight");
        for (int64_t e = 0; e < cfg_.experts; ++e) {
          SwiGluMlp x;
          x.hidden = H;
          x.ffn = cfg_.expert_ffn;
          x.gate = &weights_.get(expert_prefix(l, e) + "gate_proj.weight");
          x.up = &weights_.get(expert_prefix(l, e) + "up_proj.weight");
          x.down = &weights_.get(expert_prefix(l, e) + "down_proj.weight");
          moe->experts.push_back(x);
        }
        auto both = std::make_unique<ParallelMixer>();
        both->hidden = H;
        both->branches.push_back({std::move(moe), 1.0f, 1.0f});
        both->branches.push_back({std::move(mlp), 1.0f, 1.0f});
        mlp = std::move(both);
      }
      StackLayer& layer = layers_.emplace_back();
      layer.blocks.push_back({&weights_.get(p + "input_layernorm.weight"), cfg_.eps, r, std::move(mixer)});
      layer.blocks.push_back(
          {&weights_.get(p + "post_attention_layernorm.weight"), cfg_.eps, r, std::move(mlp)});
    }
    finish_stack("granitemoehybrid", folder);
    const int64_t n_attn = cfg_.attention_layers();
    info_.details = {{"attention_layers", std::to_string(n_attn)},
                     {"mamba_layers", std::to_string(static_cast<int64_t>(cfg_.attention.size()) - n_attn)},
                     {"shared_intermediate_size", std::to_string(cfg_.ffn)},
                     {"experts", cfg_.experts > 0 ? fmt::format("{} (top-{}, intermediate_size {})",
                                                                cfg_.experts, cfg_.top_k, cfg_.expert_ffn)
                                                    : "none (dense)"},
                     {"embedding_multiplier", fmt::format("{:g}", cfg_.embedding_multiplier)},
                     {"residual_multiplier", fmt::format("{:g}", cfg_.residual_multiplier)},
                     {"logits_scaling", fmt::format("{:g} (a divisor)", cfg_.logits_scaling)}};
    if (n_attn > 0) {
      add_detail("heads", std::to_string(cfg_.heads));
      add_detail("kv_heads", std::to_string(cfg_.kv_heads));
      add_detail("head_dim", std::to_string(cfg_.head_dim));
      add_detail("attention_multiplier", fmt::format("{:g} (the softmax scale)", cfg_.attention_multiplier));
      add_detail("rope", cfg_.rope ? fmt::format("theta {:g}", cfg_.theta) : "none");
    }
    if (n_attn < static_cast<int64_t>(cfg_.attention.size()))
      add_mamba2_details(mixer_shape(cfg_, norm));
    add_detail("tied_embeddings", cfg_.tied ? "yes" : "no");
    add_detail("norm_eps", fmt::format("{:g}", cfg_.eps));
  }

 private:
  GraniteConfig cfg_;
};

}  // namespace

std::vector<TensorSpec> granite_hybrid_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

// llama.cpp's granitehybrid (src/models/granite-hybrid.cpp; converter conversion/granite.py):
// the multipliers travel as keys (embedding_scale, residual_scale, attention.scale, logit_scale),
// an SSM layer is one whose head_count_kv is 0, and rope.scaling.finetuned switches RoPE on.
std::string granite_hybrid_llama_layout(const HfConfig& config, const std::vector<TensorSpec>&,
                                        LlamaLayout* out) {
  const GraniteConfig c = parse_config(config);
  const bool any_mamba = c.attention_layers() < static_cast<int64_t>(c.attention.size());
  if (!any_mamba) return "no Mamba layer (llama.cpp runs that as granite, which kllens does not write)";
  if (c.ssm_inner != 2 * c.hidden)
    return fmt::format("llama.cpp's granitehybrid supports only d_inner = 2 * hidden (here {} and {})",
                       c.ssm_inner, c.hidden);
  if (c.proj_bias) return "llama.cpp's granitehybrid has no Mamba in_proj/out_proj biases";
  if (c.dt_limit.lo != 0.0f || !std::isinf(c.dt_limit.hi))
    return "time_step_limit is not (0, inf): llama.cpp does not clamp dt";
  out->arch = "granitehybrid";
  add_llama_embedding_and_head(out, "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight");
  std::vector<int32_t> kv;
  for (int l = 0; l < static_cast<int>(c.attention.size()); ++l) {
    const std::string p = layer_prefix(l), blk = llama_blk(l);
    const bool attention = c.attention[static_cast<size_t>(l)];
    out->tensors[p + "input_layernorm.weight"] = {blk + "attn_norm.weight"};
    kv.push_back(attention ? static_cast<int32_t>(c.kv_heads) : 0);
    if (attention)  // q/k permuted for llama.cpp's interleaved RoPE, as the converter does
      add_llama_attention(out, p + "self_attn.", l, c.rope ? c.heads : 0, c.rope ? c.kv_heads : 0);
    else
      add_llama_mamba2_mixer(out, p + "mamba.", l, c.groups);
    out->tensors[p + "post_attention_layernorm.weight"] = {blk + "ffn_norm.weight"};
    // Without experts the shared MLP is the plain ffn; with them, the shared expert (shexp)
    // beside the stacked routed ones (ffn_*_exps {E, rows, cols}).
    const std::string shared = c.experts > 0 ? "_shexp.weight" : ".weight";
    out->tensors[p + "shared_mlp.gate_proj.weight"] = {blk + "ffn_gate" + shared};
    out->tensors[p + "shared_mlp.up_proj.weight"] = {blk + "ffn_up" + shared};
    out->tensors[p + "shared_mlp.output_linear.weight"] = {blk + "ffn_down" + shared};
    if (c.experts > 0) {
      out->tensors[p + "block_sparse_moe.router.layer.weight"] = {blk + "ffn_gate_inp.weight"};
      for (int64_t e = 0; e < c.experts; ++e)
        for (const char* proj : {"gate", "up", "down"}) {
          LlamaTensor t{blk + "ffn_" + proj + "_exps.weight"};
          t.expert = static_cast<int>(e);
          t.n_expert = static_cast<int>(c.experts);
          out->tensors[expert_prefix(l, e) + proj + "_proj.weight"] = t;
        }
    }
  }
  // Without RoPE the converter sets the context to 2^20 (no position limit).
  add_llama_size_keys(out, c.rope ? c.max_positions : int64_t{1} << 20, c.hidden,
                      static_cast<int64_t>(c.attention.size()), c.experts > 0 ? c.expert_ffn : c.ffn);
  if (c.experts > 0) {
    add_llama_key(out, "expert_count", c.experts);
    add_llama_key(out, "expert_used_count", c.top_k);
    add_llama_key(out, "expert_shared_feed_forward_length", c.ffn);
  }
  add_llama_hybrid_head_keys(out, c.heads, kv, c.head_dim);
  add_llama_key(out, "rope.dimension_count", std::max<int64_t>(c.head_dim, 1));
  add_llama_key(out, "rope.freq_base", gguf::Value(static_cast<float>(c.theta)));
  add_llama_key(out, "rope.scaling.finetuned", gguf::Value(c.rope));
  add_llama_ssm_keys(out, c.conv, c.ssm_inner, c.state, c.ssm_heads, c.groups);
  add_llama_key(out, "attention.layer_norm_rms_epsilon", gguf::Value(c.eps));
  add_llama_key(out, "attention.scale", gguf::Value(c.attention_multiplier));
  add_llama_key(out, "embedding_scale", gguf::Value(c.embedding_multiplier));
  add_llama_key(out, "residual_scale", gguf::Value(c.residual_multiplier));
  add_llama_key(out, "logit_scale", gguf::Value(c.logits_scaling));
  add_llama_key(out, "vocab_size", c.vocab);
  return "";
}

// The inverse of granite_hybrid_llama_layout's keys, for a file llama.cpp wrote: SSM layers are
// those with no key/value heads; a multiplier key that is absent or 0 is llama.cpp's default (1,
// or 1/sqrt(head_dim) for the attention scale); RoPE is on unless rope.scaling.finetuned is false.
nlohmann::json granite_hybrid_config_from_llama_keys(const LlamaKeys& k) {
  const gguf::File& file = k.file();
  const int64_t hidden = k.positive("embedding_length");
  const int64_t layers = k.layers("attn_norm.weight");
  const std::vector<int64_t> kv = k.per_layer("attention.head_count_kv", layers);
  const std::vector<int64_t> ff = k.per_layer("feed_forward_length", layers);
  nlohmann::json types = nlohmann::json::array();
  int64_t kv_heads = 0, first_attn = -1, first_mamba = -1;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t h = kv[static_cast<size_t>(l)];
    if (h > 0 && kv_heads && h != kv_heads)
      k.invalid("attention.head_count_kv", "differs between attention layers; HF Granite has one count");
    if (h > 0) kv_heads = h;
    if (ff[static_cast<size_t>(l)] != ff[0])
      k.invalid("feed_forward_length", "differs between layers; HF Granite has one shared_intermediate_size");
    int64_t& first = h > 0 ? first_attn : first_mamba;
    if (first < 0) first = l;
    types.push_back(h > 0 ? "attention" : "mamba");
  }
  const auto scale = [&](const char* key, double fallback) {
    if (!k.has(key)) return fallback;
    const double v = k.real(key, -1e30, 1e30);
    return v == 0 ? fallback : v;  // llama.cpp reads 0 as "not set"
  };
  nlohmann::json c;
  c["architectures"] = nlohmann::json::array({"GraniteMoeHybridForCausalLM"});
  c["model_type"] = "granitemoehybrid";
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = layers;
  c["layer_types"] = types;
  c["vocab_size"] = k.vocab(hidden);
  c["rms_norm_eps"] = k.real("attention.layer_norm_rms_epsilon", 0, 1);
  c["tie_word_embeddings"] = k.tied();
  if (k.has("context_length")) c["max_position_embeddings"] = k.positive("context_length");
  c["hidden_act"] = "silu";
  // expert_count may be 0 (the converter writes num_local_experts as it is): per_layer reads a
  // count of 0 or more.
  const int64_t experts = k.has("expert_count") ? k.per_layer("expert_count", 1).front() : 0;
  if (experts > 0) {
    c["num_local_experts"] = experts;
    c["num_experts_per_tok"] = k.positive("expert_used_count");
    c["intermediate_size"] = ff[0];
    c["shared_intermediate_size"] = k.positive("expert_shared_feed_forward_length");
  } else {
    c["shared_intermediate_size"] = ff[0];
    c["intermediate_size"] = ff[0];
    c["num_local_experts"] = 0;
    c["num_experts_per_tok"] = 0;
  }
  c["embedding_multiplier"] = scale("embedding_scale", 1.0);
  c["residual_multiplier"] = scale("residual_scale", 1.0);
  c["logits_scaling"] = scale("logit_scale", 1.0);
  const int64_t heads = k.positive("attention.head_count");
  c["num_attention_heads"] = heads;
  if (first_attn >= 0) {
    const int64_t head_dim = k.has("attention.key_length") ? k.positive("attention.key_length")
                                                           : hidden / heads;
    c["num_key_value_heads"] = kv_heads;
    c["head_dim"] = head_dim;
    c["attention_multiplier"] =
        scale("attention.scale", 1.0 / std::sqrt(static_cast<double>(head_dim)));
    c["attention_bias"] = file.find_tensor(llama_blk(static_cast<int>(first_attn)) + "attn_q.bias") != nullptr;
    bool rope = true;  // llama.cpp's default for granitehybrid
    if (const gguf::Value* v = file.find(k.key("rope.scaling.finetuned"))) {
      if (!v->get_if<bool>()) k.invalid("rope.scaling.finetuned", "is not a bool");
      rope = *v->get_if<bool>();
    }
    c["position_embedding_type"] = rope ? "rope" : "nope";
    c["rope_theta"] = k.has("rope.freq_base") ? k.real("rope.freq_base", 0, 1e30) : 10000.0;
    if (rope && k.has("rope.dimension_count") && k.positive("rope.dimension_count") != head_dim)
      k.invalid("rope.dimension_count", "is not the head size: partial rotary, which kllens does not compute");
  }
  if (first_mamba >= 0) {
    const int64_t ssm_heads = k.positive("ssm.time_step_rank"), inner = k.positive("ssm.inner_size");
    if (inner != 2 * hidden)
      k.invalid("ssm.inner_size", fmt::format("is {}, not 2 * embedding_length", inner));
    if (inner % ssm_heads != 0)
      k.invalid("ssm.time_step_rank", fmt::format("({} heads) does not divide ssm.inner_size ({})", ssm_heads, inner));
    c["mamba_expand"] = 2;
    c["mamba_n_heads"] = ssm_heads;
    c["mamba_d_head"] = inner / ssm_heads;
    c["mamba_n_groups"] = k.positive("ssm.group_count");
    c["mamba_d_state"] = k.positive("ssm.state_size");
    c["mamba_d_conv"] = k.positive("ssm.conv_kernel");
    c["mamba_conv_bias"] =
        file.find_tensor(llama_blk(static_cast<int>(first_mamba)) + "ssm_conv1d.bias") != nullptr;
    c["mamba_proj_bias"] = false;
  }
  k.add_special_tokens(c, c["vocab_size"]);
  return c;
}

std::unique_ptr<Model> make_granite_hybrid(const HfConfig& config, const TensorStore& store,
                                           const std::string& folder, const LoadOptions& options) {
  return std::make_unique<GraniteHybridModel>(config, store, folder, options.mamba2_norm);
}

}  // namespace kllens
