// Falcon-H1 (HF FalconH1ForCausalLM, model_type "falcon_h1"). Reference: transformers
// models/falcon_h1/modeling_falcon_h1.py (FalconH1DecoderLayer, FalconH1Mixer.torch_forward,
// FalconH1Attention, FalconH1MLP, compute_mup_vector) and configuration_falcon_h1.py (defaults).
// Every layer (HF FalconH1DecoderLayer):
//   n  = rmsnorm(h, input_layernorm)
//   h += ssm_out_multiplier * Mamba2Mixer(n) + attention_out_multiplier * Attn(attention_in_multiplier * n)
//   h += down_multiplier * down(up(m) * silu(gate_multiplier * gate(m))),  m = rmsnorm(h, pre_ff_layernorm)
// with embeddings scaled by embedding_multiplier and logits by lm_head_multiplier. The mixer
// scales its input by ssm_in_multiplier and its projection by the muP vector built from
// ssm_multipliers [z, x, B, C, dt]; its gated norm is per group (mamba_n_groups), applied before
// or after the gate (mamba_norm_before_gate), or absent (mamba_rms_norm = false → y * silu(z)).
// Attention: GQA, RoPE (rotate-half, default rope type only), causal, keys scaled by key_multiplier.
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/llama_layout.h"
#include "models/layer_stack.h"

namespace kllens {
namespace {

struct FalconH1Config {
  int64_t hidden = 0, layers = 0, vocab = 0, ffn = 0;
  int64_t attn_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t ssm_inner = 0, ssm_heads = 0, ssm_head_dim = 0, ssm_groups = 0, ssm_state = 0,
          ssm_conv = 0, chunk = 0;
  bool ssm_conv_bias = true, ssm_proj_bias = false, norm_before_gate = true, ssm_rms_norm = false;
  bool projectors_bias = false, attention_bias = false, mlp_bias = false, tied = false;
  float eps = 1e-5f;
  double rope_theta = 10000.0;
  TimeStepLimit dt_limit;
  // muP multipliers
  double embedding_mult = 1, lm_head_mult = 1, key_mult = 1, attn_in_mult = 1, attn_out_mult = 1;
  double ssm_in_mult = 1, ssm_out_mult = 1;
  std::vector<double> mlp_mults{1.0, 1.0}, ssm_mults{1.0, 1.0, 1.0, 1.0, 1.0};
};

std::vector<double> float_list(const HfConfig& c, const std::string& key, size_t n,
                               std::vector<double> fallback) {
  if (!c.has(key)) return fallback;
  const auto& v = c.json()[key];
  std::vector<double> out;
  if (v.is_array())
    for (const auto& e : v) {
      if (!e.is_number()) break;
      out.push_back(e.get<double>());
    }
  if (!v.is_array() || out.size() != v.size() || out.size() != n)
    c.invalid(key, fmt::format("must be a list of {} numbers, got {}", n, v.dump()));
  return out;
}

// The key exists in the file with a null value (distinct from absent: HF defaults differ).
bool is_null(const HfConfig& c, const std::string& key) {
  return c.json().contains(key) && c.json()[key].is_null();
}

// Defaults are HF FalconH1Config's (transformers 5); the dimensions are required.
FalconH1Config parse_config(const HfConfig& c) {
  FalconH1Config m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.ffn = c.get_positive("intermediate_size");
  m.attn_heads = c.get_positive("num_attention_heads");
  // HF: num_key_value_heads defaults to 8, and null means "= num_attention_heads".
  m.kv_heads = is_null(c, "num_key_value_heads") ? m.attn_heads
               : c.has("num_key_value_heads")    ? c.get_positive("num_key_value_heads")
                                                 : 8;
  if (m.attn_heads % m.kv_heads != 0)
    fail("{}: num_key_value_heads = {} must divide num_attention_heads = {}", c.path(), m.kv_heads,
         m.attn_heads);
  if (c.has("head_dim")) {
    m.head_dim = c.get_positive("head_dim");
  } else {
    if (m.hidden % m.attn_heads != 0)
      fail("{}: num_attention_heads = {} must divide hidden_size = {} (or set head_dim)", c.path(),
           m.attn_heads, m.hidden);
    m.head_dim = m.hidden / m.attn_heads;
  }
  if (m.head_dim % 2 != 0)
    fail("{}: the attention head size {} must be even for RoPE", c.path(), m.head_dim);
  m.eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-5));
  if (!(m.eps >= 0)) c.invalid("rms_norm_eps", "must be a non-negative number");
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    c.invalid("hidden_act", "is '" + act + "'; kllens supports only silu for Falcon-H1");

  // Mamba-2 branch. HF: mamba_d_ssm defaults to 1024; null means int(mamba_expand * hidden).
  const int64_t expand = c.has("mamba_expand") ? c.get_positive("mamba_expand") : 2;
  m.ssm_inner = is_null(c, "mamba_d_ssm") ? expand * m.hidden
                : c.has("mamba_d_ssm")    ? c.get_positive("mamba_d_ssm")
                                          : 1024;
  m.ssm_heads = c.has("mamba_n_heads") ? c.get_positive("mamba_n_heads") : 128;
  if (m.ssm_inner % m.ssm_heads != 0)
    fail("{}: mamba_n_heads = {} must divide the Mamba inner size {} (mamba_d_ssm or "
         "mamba_expand * hidden_size)",
         c.path(), m.ssm_heads, m.ssm_inner);
  if (c.has("mamba_d_head") && c.json()["mamba_d_head"].is_string()) {
    if (c.json()["mamba_d_head"] != "auto") c.invalid("mamba_d_head", "must be an integer or \"auto\"");
    m.ssm_head_dim = m.ssm_inner / m.ssm_heads;
  } else {
    m.ssm_head_dim = c.has("mamba_d_head") ? c.get_positive("mamba_d_head") : m.ssm_inner / m.ssm_heads;
  }
  if (m.ssm_head_dim * m.ssm_heads != m.ssm_inner)
    fail("{}: mamba_d_head * mamba_n_heads = {} * {} = {} must equal the Mamba inner size {}",
         c.path(), m.ssm_head_dim, m.ssm_heads, m.ssm_head_dim * m.ssm_heads, m.ssm_inner);
  m.ssm_groups = c.has("mamba_n_groups") ? c.get_positive("mamba_n_groups") : 1;
  if (m.ssm_heads % m.ssm_groups != 0)
    fail("{}: mamba_n_groups = {} must divide mamba_n_heads = {}", c.path(), m.ssm_groups,
         m.ssm_heads);
  m.ssm_state = c.has("mamba_d_state") ? c.get_positive("mamba_d_state") : 256;
  m.ssm_conv = c.has("mamba_d_conv") ? c.get_positive("mamba_d_conv") : 4;
  m.chunk = c.has("mamba_chunk_size") ? c.get_positive("mamba_chunk_size") : 256;
  m.ssm_conv_bias = c.get_bool("mamba_conv_bias", true);
  m.ssm_proj_bias = c.get_bool("mamba_proj_bias", false);
  m.norm_before_gate = c.get_bool("mamba_norm_before_gate", true);
  m.ssm_rms_norm = c.get_bool("mamba_rms_norm", false);
  m.dt_limit = parse_time_step_limit(c);
  m.projectors_bias = c.get_bool("projectors_bias", false);
  m.attention_bias = c.get_bool("attention_bias", false);
  m.mlp_bias = c.get_bool("mlp_bias", false);
  m.tied = c.get_bool("tie_word_embeddings", false);

  // RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta}; older files have a
  // top-level rope_theta and an optional rope_scaling.
  std::string rope_type = "default";
  const char* rope_key = "rope_scaling";
  if (c.has("rope_parameters")) {
    const auto& rp = c.json()["rope_parameters"];
    if (!rp.is_object()) c.invalid("rope_parameters", "must be an object, got " + rp.dump());
    rope_key = "rope_parameters";
    if (rp.contains("rope_theta") && !rp["rope_theta"].is_null()) {
      if (!rp["rope_theta"].is_number())
        c.invalid("rope_parameters", "has a non-numeric rope_theta: " + rp.dump());
      m.rope_theta = rp["rope_theta"].get<double>();
    } else {
      m.rope_theta = c.get_float("rope_theta", 10000.0);
    }
    for (const char* k : {"rope_type", "type"})
      if (rp.contains(k) && rp[k].is_string()) {
        rope_type = rp[k].get<std::string>();
        break;
      }
  } else {
    m.rope_theta = c.get_float("rope_theta", 10000.0);
    if (c.has("rope_scaling")) {
      const auto& rs = c.json()["rope_scaling"];
      if (!rs.is_object()) c.invalid("rope_scaling", "must be an object or null, got " + rs.dump());
      for (const char* k : {"rope_type", "type"})
        if (rs.contains(k) && rs[k].is_string()) {
          rope_type = rs[k].get<std::string>();
          break;
        }
    }
  }
  if (rope_type != "default")
    c.invalid(rope_key, "has rope_type '" + rope_type +
                            "'; kllens supports only the default RoPE for Falcon-H1");
  if (!(m.rope_theta > 0)) c.invalid("rope_theta", "must be positive");

  m.embedding_mult = c.get_float("embedding_multiplier", 1.0);
  m.lm_head_mult = c.get_float("lm_head_multiplier", 1.0);
  m.key_mult = c.get_float("key_multiplier", 1.0);
  m.attn_in_mult = c.get_float("attention_in_multiplier", 1.0);
  m.attn_out_mult = c.get_float("attention_out_multiplier", 1.0);
  m.ssm_in_mult = c.get_float("ssm_in_multiplier", 1.0);
  m.ssm_out_mult = c.get_float("ssm_out_multiplier", 1.0);
  m.mlp_mults = float_list(c, "mlp_multipliers", 2, {1.0, 1.0});
  m.ssm_mults = float_list(c, "ssm_multipliers", 5, {1.0, 1.0, 1.0, 1.0, 1.0});
  return m;
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const FalconH1Config& c) {
  const int64_t H = c.hidden, F = c.ffn, Dh = c.head_dim;
  const int64_t QD = c.attn_heads * Dh, KD = c.kv_heads * Dh;
  const int64_t I = c.ssm_inner, GN = c.ssm_groups * c.ssm_state, NH = c.ssm_heads;
  const int64_t CD = I + 2 * GN, W = I + CD + NH, K = c.ssm_conv;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", Role::kNorm, l, {H}});
    // attention
    specs.push_back({p + "self_attn.q_proj.weight", Role::kQ, l, {QD, H}});
    specs.push_back({p + "self_attn.k_proj.weight", Role::kK, l, {KD, H}});
    specs.push_back({p + "self_attn.v_proj.weight", Role::kV, l, {KD, H}});
    specs.push_back({p + "self_attn.o_proj.weight", Role::kO, l, {H, QD}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", Role::kBias, l, {QD}});
      specs.push_back({p + "self_attn.k_proj.bias", Role::kBias, l, {KD}});
      specs.push_back({p + "self_attn.v_proj.bias", Role::kBias, l, {KD}});
      specs.push_back({p + "self_attn.o_proj.bias", Role::kBias, l, {H}});
    }
    // Mamba-2 mixer
    specs.push_back({p + "mamba.in_proj.weight", Role::kInProj, l, {W, H}});
    if (c.ssm_proj_bias) specs.push_back({p + "mamba.in_proj.bias", Role::kBias, l, {W}});
    specs.push_back({p + "mamba.conv1d.weight", Role::kConv1d, l, {CD, 1, K}});
    if (c.ssm_conv_bias) specs.push_back({p + "mamba.conv1d.bias", Role::kBias, l, {CD}});
    specs.push_back({p + "mamba.dt_bias", Role::kDtBias, l, {NH}});
    specs.push_back({p + "mamba.A_log", Role::kSsmA, l, {NH}});
    specs.push_back({p + "mamba.D", Role::kSsmD, l, {NH}});
    if (c.ssm_rms_norm) specs.push_back({p + "mamba.norm.weight", Role::kNorm, l, {I}});
    specs.push_back({p + "mamba.out_proj.weight", Role::kOutProj, l, {H, I}});
    if (c.projectors_bias) specs.push_back({p + "mamba.out_proj.bias", Role::kBias, l, {H}});
    // MLP
    specs.push_back({p + "pre_ff_layernorm.weight", Role::kNorm, l, {H}});
    specs.push_back({p + "feed_forward.gate_proj.weight", Role::kGate, l, {F, H}});
    specs.push_back({p + "feed_forward.up_proj.weight", Role::kUp, l, {F, H}});
    specs.push_back({p + "feed_forward.down_proj.weight", Role::kDown, l, {H, F}});
    if (c.mlp_bias) {
      specs.push_back({p + "feed_forward.gate_proj.bias", Role::kBias, l, {F}});
      specs.push_back({p + "feed_forward.up_proj.bias", Role::kBias, l, {F}});
      specs.push_back({p + "feed_forward.down_proj.bias", Role::kBias, l, {H}});
    }
  }
  specs.push_back({"model.final_layernorm.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

class FalconH1Model : public LayerStackModel {
 public:
  FalconH1Model(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden, F = cfg_.ffn, Dh = cfg_.head_dim;
    const int64_t I = cfg_.ssm_inner, NH = cfg_.ssm_heads, K = cfg_.ssm_conv;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);

    const Param* embed = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    ends_.embed = embed;
    ends_.head = cfg_.tied ? embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("model.final_layernorm.weight");
    ends_.norm_eps = cfg_.eps;
    // hidden = embedding_multiplier * embed_tokens[ids]; logits = lm_head(...) * lm_head_multiplier
    ends_.embedding_scale = static_cast<float>(cfg_.embedding_mult);
    ends_.logits_multiplier = static_cast<float>(cfg_.lm_head_mult);

    // HF FalconH1RotaryEmbedding.compute_default_rope_parameters, in float32 like torch:
    // inv_freq[i] = 1 / theta ** (float(2i) / dim).
    std::vector<float> inv_freq = rope_inv_freq(cfg_.rope_theta, Dh);
    // The same rule as Hymba (see round_like_half_precision_buffer): a BF16 / F16 checkpoint is run
    // like HF's model.to(<its dtype>), which also rounds the non-persistent inv_freq buffer to that
    // dtype, and the RoPE angles come from the rounded frequencies. The demo-model references were
    // made that way; with float32 frequencies the angles differ by up to 2^-9 relative, which grows
    // with the position (~0.02 on the demo logits at token ~120). The checkpoint dtype is taken
    // from the embedding; an F32 checkpoint keeps float32 frequencies.
    round_like_half_precision_buffer(inv_freq, embed->source_dtype);

    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // FalconH1DecoderLayer: n = input_layernorm(h);
      // h += ssm_out_multiplier * mamba(n) + attention_out_multiplier * attn(attention_in_multiplier * n);
      // h += down_multiplier * mlp(pre_ff_layernorm(h)).
      auto mamba = std::make_unique<Mamba2MixerBlock>();
      Mamba2Mixer& m = mamba->mixer;
      m.hidden = H;
      m.inner = I;
      m.heads = NH;
      m.head_dim = cfg_.ssm_head_dim;
      m.groups = cfg_.ssm_groups;
      m.state = cfg_.ssm_state;
      m.conv_kernel = K;
      m.norm_kind = !cfg_.ssm_rms_norm       ? GatedNorm::kNone
                    : cfg_.norm_before_gate ? GatedNorm::kNormThenGateGroup
                                            : GatedNorm::kGateThenNormGroup;
      m.norm_eps = cfg_.eps;
      m.dt_limit = cfg_.dt_limit;
      m.bind(weights_, p + "mamba.");
      m.in_multiplier = static_cast<float>(cfg_.ssm_in_mult);
      m.set_proj_multipliers(cfg_.ssm_mults);
      // HF FalconH1Attention: o_proj(attn(rope(q), rope(k * key_multiplier), v)), scale Dh^-0.5
      auto attn = AttentionMixer::bound(weights_, p + "self_attn.", H, cfg_.attn_heads,
                                        cfg_.kv_heads, Dh);
      attn->inv_freq = inv_freq;
      attn->key_scale = static_cast<float>(cfg_.key_mult);
      auto both = std::make_unique<ParallelMixer>();
      both->hidden = H;
      both->branches.push_back({std::move(mamba), 1.0f, static_cast<float>(cfg_.ssm_out_mult)});
      both->branches.push_back({std::move(attn), static_cast<float>(cfg_.attn_in_mult),
                                static_cast<float>(cfg_.attn_out_mult)});
      // SwiGLU: down(up(m) * silu(gate(m) * gate_multiplier)), then * down_multiplier
      auto mlp = std::make_unique<SwiGluMixer>();
      mlp->mlp = SwiGluMlp::bind(weights_, p + "feed_forward.", H, F);
      mlp->mlp.gate_scale = static_cast<float>(cfg_.mlp_mults[0]);
      StackLayer& layer = layers_.emplace_back();
      layer.kind = "attention+mamba2";
      layer.blocks.push_back({&weights_.get(p + "input_layernorm.weight"), cfg_.eps, 1.0f, std::move(both)});
      layer.blocks.push_back({&weights_.get(p + "pre_ff_layernorm.weight"), cfg_.eps,
                              static_cast<float>(cfg_.mlp_mults[1]), std::move(mlp)});
    }
    finish_stack("falcon_h1", folder);
    auto list = [](const std::vector<double>& v) {
      std::string s;
      for (double x : v) s += (s.empty() ? "" : ", ") + fmt::format("{:g}", x);
      return "[" + s + "]";
    };
    info_.details = {
        {"attention_heads", fmt::format("{} (kv {}, head_dim {})", cfg_.attn_heads, cfg_.kv_heads, Dh)},
        {"rope_theta", fmt::format("{:g} (inv_freq in {})", cfg_.rope_theta,
                                   dtype_name(embed->source_dtype))},
        {"mamba_d_ssm", std::to_string(I)},
        {"mamba_heads", fmt::format("{} (head_dim {}, groups {})", NH, cfg_.ssm_head_dim, cfg_.ssm_groups)},
        {"mamba_d_state", std::to_string(cfg_.ssm_state)},
        {"mamba_d_conv", std::to_string(K)},
        {"mamba_gated_norm", !cfg_.ssm_rms_norm ? "none"
                             : cfg_.norm_before_gate ? "per-group, norm before gate"
                                                     : "per-group, gate before norm"},
        {"ffn", std::to_string(F)},
        {"tied_embeddings", cfg_.tied ? "yes" : "no"},
        {"multipliers",
         fmt::format("embedding {:g}, lm_head {:g}, key {:g}, attention_in {:g}, attention_out {:g}, "
                     "ssm_in {:g}, ssm_out {:g}, ssm {}, mlp {}",
                     cfg_.embedding_mult, cfg_.lm_head_mult, cfg_.key_mult, cfg_.attn_in_mult,
                     cfg_.attn_out_mult, cfg_.ssm_in_mult, cfg_.ssm_out_mult, list(cfg_.ssm_mults),
                     list(cfg_.mlp_mults))},
        {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

 private:
  FalconH1Config cfg_;
};

}  // namespace

// llama.cpp's falcon-h1 (src/models/falcon-h1.cpp; converter conversion/falcon_h1.py): the muP
// multipliers are folded into the weights as the converter folds them (a multiplier on a layer's
// output scales its bias too), and the stored config has them at 1.
std::string falcon_h1_llama_layout(const HfConfig& config, const std::vector<TensorSpec>&,
                                   LlamaLayout* out) {
  const FalconH1Config c = parse_config(config);
  if (c.ssm_proj_bias) return "llama.cpp's falcon-h1 has no in_proj bias (mamba_proj_bias = true)";
  if (c.projectors_bias) return "llama.cpp's falcon-h1 has no out_proj bias (projectors_bias = true)";
  if (c.ssm_rms_norm && c.norm_before_gate)
    return "llama.cpp's falcon-h1 applies the gate before the norm (here mamba_norm_before_gate = "
           "true)";
  if (c.tied && c.embedding_mult != c.lm_head_mult)
    return fmt::format("the embedding is tied but embedding_multiplier {} != lm_head_multiplier {}: "
                       "no single folded matrix serves both",
                       c.embedding_mult, c.lm_head_mult);
  out->arch = "falcon-h1";
  const auto all = [](double f) { return std::vector<std::pair<int64_t, double>>{{INT64_MAX, f}}; };
  const auto folded = [&](std::string name, double f) {
    LlamaTensor t{std::move(name)};
    if (f != 1.0) t.row_scales = all(f);
    return t;
  };
  out->tensors["model.embed_tokens.weight"] = folded("token_embd.weight", c.embedding_mult);
  out->tensors["model.final_layernorm.weight"] = {"output_norm.weight"};
  out->tensors["lm_head.weight"] = folded("output.weight", c.lm_head_mult);
  const int64_t I = c.ssm_inner, GN = c.ssm_groups * c.ssm_state;
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", blk = llama_blk(l);
    const std::string a = p + "self_attn.", m = p + "mamba.", f = p + "feed_forward.";
    out->tensors[p + "input_layernorm.weight"] = {blk + "attn_norm.weight"};
    // q, k, v see attention_in_multiplier * n; the keys are then scaled by key_multiplier (bias
    // included), the output by attention_out_multiplier.
    out->tensors[a + "q_proj.weight"] = folded(blk + "attn_q.weight", c.attn_in_mult);
    out->tensors[a + "k_proj.weight"] = folded(blk + "attn_k.weight", c.attn_in_mult * c.key_mult);
    out->tensors[a + "v_proj.weight"] = folded(blk + "attn_v.weight", c.attn_in_mult);
    out->tensors[a + "o_proj.weight"] = folded(blk + "attn_output.weight", c.attn_out_mult);
    out->tensors[a + "q_proj.bias"] = {blk + "attn_q.bias"};
    out->tensors[a + "k_proj.bias"] = folded(blk + "attn_k.bias", c.key_mult);
    out->tensors[a + "v_proj.bias"] = {blk + "attn_v.bias"};
    out->tensors[a + "o_proj.bias"] = folded(blk + "attn_output.bias", c.attn_out_mult);
    // in_proj sees ssm_in_multiplier * n and its output rows [z, x, B, C, dt] are scaled by
    // ssm_multipliers.
    LlamaTensor in{blk + "ssm_in.weight"};
    const double s = c.ssm_in_mult;
    const auto& mu = c.ssm_mults;
    in.row_scales = {{I, s * mu[0]}, {I, s * mu[1]}, {GN, s * mu[2]}, {GN, s * mu[3]},
                     {c.ssm_heads, s * mu[4]}};
    bool all_one = true;
    for (const auto& [n, factor] : in.row_scales) all_one = all_one && factor == 1.0;
    if (all_one) in.row_scales.clear();
    out->tensors[m + "in_proj.weight"] = in;
    out->tensors[m + "conv1d.weight"] = {blk + "ssm_conv1d.weight", LlamaTransform::kSqueezeConv};
    out->tensors[m + "conv1d.bias"] = {blk + "ssm_conv1d.bias"};
    out->tensors[m + "dt_bias"] = {blk + "ssm_dt.bias"};
    LlamaTensor a_log{blk + "ssm_a", LlamaTransform::kNegExp};
    a_log.mamba2_a = true;
    out->tensors[m + "A_log"] = a_log;
    out->tensors[m + "D"] = {blk + "ssm_d", LlamaTransform::kColumn};
    LlamaTensor norm{blk + "ssm_norm.weight", LlamaTransform::kGroupNorm};
    norm.n_group = c.ssm_groups;
    out->tensors[m + "norm.weight"] = norm;
    out->tensors[m + "out_proj.weight"] = folded(blk + "ssm_out.weight", c.ssm_out_mult);
    // The converter matches pre_ff_layernorm.weight as a whole key: no ".weight" suffix.
    out->tensors[p + "pre_ff_layernorm.weight"] = {blk + "ffn_norm"};
    out->tensors[f + "gate_proj.weight"] = folded(blk + "ffn_gate.weight", c.mlp_mults[0]);
    out->tensors[f + "gate_proj.bias"] = folded(blk + "ffn_gate.bias", c.mlp_mults[0]);
    out->tensors[f + "up_proj.weight"] = {blk + "ffn_up.weight"};
    out->tensors[f + "up_proj.bias"] = {blk + "ffn_up.bias"};
    out->tensors[f + "down_proj.weight"] = folded(blk + "ffn_down.weight", c.mlp_mults[1]);
    out->tensors[f + "down_proj.bias"] = folded(blk + "ffn_down.bias", c.mlp_mults[1]);
  }
  add_llama_size_keys(out,
                      config.has("max_position_embeddings")
                          ? config.get_positive("max_position_embeddings")
                          : 8192,
                      c.hidden, c.layers, c.ffn);
  add_llama_head_keys(out, c.attn_heads, c.kv_heads, c.head_dim);
  add_llama_key(out, "rope.freq_base", gguf::Value(static_cast<float>(c.rope_theta)));
  add_llama_key(out, "attention.layer_norm_rms_epsilon", gguf::Value(c.eps));
  add_llama_ssm_keys(out, c.ssm_conv, I, c.ssm_state, c.ssm_heads, c.ssm_groups);
  add_llama_key(out, "vocab_size", c.vocab);
  nlohmann::json stored = config.json();
  for (const char* k : {"embedding_multiplier", "lm_head_multiplier", "key_multiplier",
                        "attention_in_multiplier", "attention_out_multiplier", "ssm_in_multiplier",
                        "ssm_out_multiplier"})
    stored[k] = 1.0;
  stored["mlp_multipliers"] = {1.0, 1.0};
  stored["ssm_multipliers"] = {1.0, 1.0, 1.0, 1.0, 1.0};
  out->stored_config = std::move(stored);
  if (c.dt_limit.lo != 0.0f || !std::isinf(c.dt_limit.hi))
    out->notes.push_back("time_step_limit is not (0, inf): llama.cpp does not clamp dt");
  return "";
}

// The inverse of falcon_h1_llama_layout's keys, for a file llama.cpp wrote: its weights already
// hold the muP multipliers (the converter folds them), so every multiplier is 1; the gate comes
// before the norm (the only order llama.cpp computes); biases and the gated norm are there when
// their tensors are.
nlohmann::json falcon_h1_config_from_llama_keys(const LlamaKeys& k) {
  const gguf::File& file = k.file();
  const int64_t hidden = k.positive("embedding_length");
  const int64_t inner = k.positive("ssm.inner_size");
  const int64_t ssm_heads = k.positive("ssm.time_step_rank");
  if (inner % ssm_heads != 0)
    k.invalid("ssm.time_step_rank", fmt::format("({} heads) does not divide ssm.inner_size ({})", ssm_heads, inner));
  const int64_t vocab = k.vocab(hidden);
  const auto has = [&](const std::string& t) { return file.find_tensor("blk.0." + t) != nullptr; };
  nlohmann::json c;
  k.add_attention_head_keys(c, hidden);
  c["architectures"] = nlohmann::json::array({"FalconH1ForCausalLM"});
  c["model_type"] = "falcon_h1";
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = k.layers("attn_norm.weight");
  c["intermediate_size"] = k.positive("feed_forward_length");
  c["mamba_d_ssm"] = inner;
  c["mamba_n_heads"] = ssm_heads;
  c["mamba_d_head"] = inner / ssm_heads;
  c["mamba_n_groups"] = k.positive("ssm.group_count");
  c["mamba_d_state"] = k.positive("ssm.state_size");
  c["mamba_d_conv"] = k.positive("ssm.conv_kernel");
  c["mamba_conv_bias"] = has("ssm_conv1d.bias");
  c["mamba_proj_bias"] = false;
  c["mamba_rms_norm"] = has("ssm_norm.weight");
  c["mamba_norm_before_gate"] = false;
  c["projectors_bias"] = false;
  c["attention_bias"] = has("attn_q.bias");
  c["mlp_bias"] = has("ffn_gate.bias");
  for (const char* m : {"embedding_multiplier", "lm_head_multiplier", "key_multiplier",
                        "attention_in_multiplier", "attention_out_multiplier", "ssm_in_multiplier",
                        "ssm_out_multiplier"})
    c[m] = 1.0;
  c["mlp_multipliers"] = {1.0, 1.0};
  c["ssm_multipliers"] = {1.0, 1.0, 1.0, 1.0, 1.0};
  k.add_common_attention_keys(c, vocab);
  return c;
}

std::vector<TensorSpec> falcon_h1_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

std::unique_ptr<Model> make_falcon_h1(const HfConfig& config, const TensorStore& store,
                                      const std::string& folder, const LoadOptions&) {
  return std::make_unique<FalconH1Model>(config, store, folder);
}

}  // namespace kllens
