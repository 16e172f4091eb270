// Llama (HF LlamaForCausalLM, model_type "llama"). Reference: transformers
// models/llama/modeling_llama.py (LlamaDecoderLayer, LlamaAttention, LlamaMLP, LlamaRMSNorm,
// LlamaRotaryEmbedding with rope_type "default").
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/layer_stack.h"
#include "models/llama_layout.h"

namespace kllens {
namespace {

struct LlamaConfig {
  int64_t hidden = 0, layers = 0, vocab = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0;
  bool attn_bias = false, mlp_bias = false, tied = false;
  float eps = 1e-6f;
  double theta = 10000.0;
};

LlamaConfig parse_config(const HfConfig& c) {
  LlamaConfig m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.ffn = c.get_positive("intermediate_size");
  m.heads = c.get_positive("num_attention_heads");
  m.kv_heads = c.has("num_key_value_heads") ? c.get_positive("num_key_value_heads") : m.heads;
  if (m.heads % m.kv_heads != 0)
    c.invalid("num_key_value_heads", fmt::format("({}) must divide num_attention_heads ({})",
                                                 m.kv_heads, m.heads));
  if (c.has("head_dim")) {
    m.head_dim = c.get_positive("head_dim");
  } else {
    if (m.hidden % m.heads != 0)
      c.invalid("num_attention_heads",
                fmt::format("({}) must divide hidden_size ({}) when head_dim is not given", m.heads,
                            m.hidden));
    m.head_dim = m.hidden / m.heads;
  }
  if (m.head_dim % 2 != 0) c.invalid("head_dim", "must be even for RoPE");
  m.attn_bias = c.get_bool("attention_bias", false);
  m.mlp_bias = c.get_bool("mlp_bias", false);
  m.tied = c.get_bool("tie_word_embeddings", false);
  m.eps = static_cast<float>(c.get_float("rms_norm_eps", 1e-6));
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu") c.invalid("hidden_act", "is '" + act + "'; only \"silu\" is supported");
  const RopeSettings rope = read_default_rope(c, 10000.0);
  if (rope.partial_rotary_factor != 1.0)
    c.invalid("partial_rotary_factor", "must be 1 for Llama (RoPE covers the whole head)");
  m.theta = rope.theta;
  return m;
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const LlamaConfig& c) {
  const int64_t H = c.hidden, D = c.head_dim;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", Role::kNorm, l, {H}});
    AttentionMixer::add_specs(specs, p + "self_attn.", l, H, c.heads, c.kv_heads, D, c.attn_bias);
    specs.push_back({p + "post_attention_layernorm.weight", Role::kNorm, l, {H}});
    SwiGluMlp::add_specs(specs, p + "mlp.", l, H, c.ffn, c.mlp_bias);
  }
  specs.push_back({"model.norm.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

class LlamaModel : public LayerStackModel {
 public:
  LlamaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden, D = cfg_.head_dim;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);

    ends_.embed = &weights_.get("model.embed_tokens.weight");
    weights_.get("model.embed_tokens.weight").tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("model.norm.weight");
    ends_.norm_eps = cfg_.eps;
    // inv_freq stays float32 whatever the checkpoint dtype: HF keeps the buffer in float32 (also
    // under from_pretrained(dtype=...)), and the Llama reference was computed that way. Hymba and
    // Falcon-H1 instead round it to a BF16 / F16 checkpoint's dtype (round_like_half_precision_
    // buffer), because their demo references were made with model.to(<dtype>); a Llama demo
    // made that way would need the same rule here.
    const std::vector<float> inv_freq = rope_inv_freq(cfg_.theta, D);
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // LlamaDecoderLayer: h += o_proj(attn(norm(h))); h += mlp(norm(h))
      auto attn = AttentionMixer::bound(weights_, p + "self_attn.", H, cfg_.heads, cfg_.kv_heads, D);
      attn->inv_freq = inv_freq;
      auto mlp = std::make_unique<SwiGluMixer>();
      mlp->mlp = SwiGluMlp::bind(weights_, p + "mlp.", H, cfg_.ffn);
      StackLayer& layer = layers_.emplace_back();
      layer.kind = "attn(global)";
      layer.blocks.push_back({&weights_.get(p + "input_layernorm.weight"), cfg_.eps, 1.0f, std::move(attn)});
      layer.blocks.push_back(
          {&weights_.get(p + "post_attention_layernorm.weight"), cfg_.eps, 1.0f, std::move(mlp)});
    }
    finish_stack("llama", folder);
    info_.details = {{"heads", std::to_string(cfg_.heads)},
                     {"kv_heads", std::to_string(cfg_.kv_heads)},
                     {"head_dim", std::to_string(D)},
                     {"intermediate_size", std::to_string(cfg_.ffn)},
                     {"rope_theta", fmt::format("{:g}", cfg_.theta)},
                     {"attention_bias", cfg_.attn_bias ? "yes" : "no"},
                     {"mlp_bias", cfg_.mlp_bias ? "yes" : "no"},
                     {"tied_embeddings", cfg_.tied ? "yes" : "no"},
                     {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

 private:
  LlamaConfig cfg_;
};

}  // namespace

std::vector<TensorSpec> llama_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

// llama.cpp's llama (src/models/llama.cpp; converter conversion/llama.py): q and k permuted for
// its interleaved RoPE, everything else by name.
std::string llama_llama_layout(const HfConfig& config, const std::vector<TensorSpec>&,
                               LlamaLayout* out) {
  const LlamaConfig c = parse_config(config);
  out->arch = "llama";
  add_llama_embedding_and_head(out, "model.embed_tokens.weight", "model.norm.weight",
                               "lm_head.weight");
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", blk = llama_blk(l);
    out->tensors[p + "input_layernorm.weight"] = {blk + "attn_norm.weight"};
    add_llama_attention(out, p + "self_attn.", l, c.heads, c.kv_heads);
    out->tensors[p + "post_attention_layernorm.weight"] = {blk + "ffn_norm.weight"};
    add_llama_swiglu(out, p + "mlp.", l);
  }
  add_llama_size_keys(out,
                      config.has("max_position_embeddings")
                          ? config.get_positive("max_position_embeddings")
                          : 2048,
                      c.hidden, c.layers, c.ffn);
  add_llama_head_keys(out, c.heads, c.kv_heads, c.head_dim);
  add_llama_key(out, "rope.dimension_count", c.head_dim);  // llama.cpp requires = key_length
  add_llama_key(out, "rope.freq_base", gguf::Value(static_cast<float>(c.theta)));
  add_llama_key(out, "attention.layer_norm_rms_epsilon", gguf::Value(c.eps));
  add_llama_key(out, "vocab_size", c.vocab);
  return "";
}

// The inverse of llama_llama_layout's keys, for a file llama.cpp wrote. What kllens' Llama does
// not compute is refused rather than approximated: RoPE scaling (rope.scaling.type, Llama 3's
// rope_freqs.weight), partial rotary, experts (Mixtral's files are "llama" too).
nlohmann::json llama_config_from_llama_keys(const LlamaKeys& k) {
  const gguf::File& file = k.file();
  const int64_t hidden = k.positive("embedding_length");
  nlohmann::json c;
  k.add_attention_head_keys(c, hidden);
  const int64_t head_dim = c["head_dim"];
  if (k.has("rope.dimension_count") && k.positive("rope.dimension_count") != head_dim)
    k.invalid("rope.dimension_count", fmt::format("is not the head size {}: partial rotary, which "
                                                  "kllens' Llama does not compute", head_dim));
  if (const gguf::Value* v = file.find(k.key("rope.scaling.type")))
    if (!v->get_if<std::string>() || *v->get_if<std::string>() != "none")
      k.invalid("rope.scaling.type", "is " + v->to_display() + "; kllens' Llama runs unscaled RoPE only");
  if (file.find_tensor("rope_freqs.weight"))
    fail("{}: tensor 'rope_freqs.weight' (Llama 3's RoPE frequency factors): kllens' Llama runs "
         "unscaled RoPE only",
         k.path());
  if (k.has("expert_count") && k.positive("expert_count") > 0)
    k.invalid("expert_count", "is set (Mixtral-style experts); kllens' Llama has none");
  const int64_t vocab = k.vocab(hidden);
  c["architectures"] = nlohmann::json::array({"LlamaForCausalLM"});
  c["model_type"] = "llama";
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = k.layers("attn_norm.weight");
  c["intermediate_size"] = k.positive("feed_forward_length");
  c["attention_bias"] = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  c["mlp_bias"] = file.find_tensor("blk.0.ffn_gate.bias") != nullptr;
  k.add_common_attention_keys(c, vocab);
  return c;
}

std::unique_ptr<Model> make_llama(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder, const LoadOptions&) {
  return std::make_unique<LlamaModel>(config, store, folder);
}

}  // namespace kllens
