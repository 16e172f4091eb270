// Nemotron-H (NVIDIA's NemotronHForCausalLM, model_type "nemotron_h"; transformers
// models/nemotron_h/modeling_nemotron_h.py and the remote code it came from). Every layer is one
// pre-norm residual block, hidden += mixer(rmsnorm(hidden)), whose mixer the layer pattern picks:
// 'M' a Mamba-2 mixer (gate, then RMSNorm per group of d_inner / n_groups), '*' attention
// without positional encoding (GQA, softmax scale 1/sqrt(head_dim)), '-' an MLP
// down(relu(up(x))²). The MoE layers ('E', Nemotron-3 Nano) are refused: not implemented.
// llama.cpp's layout is nemotron_h (../shared/docs/llamacpp-formats-and-hybrids.md §3.5, §4.2).
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/layer_stack.h"
#include "models/llama_layout.h"

namespace kllens {
namespace {

enum class NemotronLayer : char { kMamba = 'M', kAttention = '*', kMlp = '-' };

struct NemotronHConfig {
  int64_t hidden = 0, vocab = 0, ffn = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t ssm_heads = 0, ssm_head_dim = 0, ssm_inner = 0, groups = 0, state = 0, conv = 0,
          chunk = 0;
  std::vector<NemotronLayer> layers;
  bool attn_bias = false, mlp_bias = false, proj_bias = false, conv_bias = true, tied = false;
  float eps = 1e-5f;
  TimeStepLimit dt_limit;
  int64_t count(NemotronLayer kind) const {
    int64_t n = 0;
    for (NemotronLayer k : layers) n += k == kind;
    return n;
  }
};

// The layer kinds from hybrid_override_pattern (the remote code's string) or the list
// transformers 5 writes (layers_block_type / layer_types).
std::vector<NemotronLayer> parse_pattern(const HfConfig& c) {
  std::vector<NemotronLayer> kinds;
  auto moe = [&](const char* key) {
    c.invalid(key, "has MoE layers ('E' / \"moe\", Nemotron-3 Nano's experts), which kllens does "
                   "not implement yet");
  };
  if (c.has("hybrid_override_pattern")) {
    const std::string pattern = c.get_string("hybrid_override_pattern", "");
    if (pattern.empty()) c.invalid("hybrid_override_pattern", "is empty");
    for (size_t i = 0; i < pattern.size(); ++i) {
      const char ch = pattern[i];
      if (ch == 'E') moe("hybrid_override_pattern");
      if (ch != 'M' && ch != '*' && ch != '-')
        c.invalid("hybrid_override_pattern",
                  fmt::format("has '{}' at position {}; a layer is 'M' (Mamba-2), '*' "
                              "(attention), '-' (MLP) or 'E' (MoE)",
                              ch, i));
      kinds.push_back(static_cast<NemotronLayer>(ch));
    }
  } else {
    const char* key = c.has("layers_block_type") ? "layers_block_type" : "layer_types";
    if (!c.has(key))
      c.invalid("hybrid_override_pattern",
                "is missing (nor is there a layers_block_type or layer_types list)");
    const auto& list = c.json()[key];
    if (!list.is_array() || list.empty()) c.invalid(key, "must be a non-empty list of layer types");
    if (list.size() > static_cast<size_t>(kMaxConfigCount))
      c.invalid(key, fmt::format("has more than {} layers", kMaxConfigCount));
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string t = list[i].is_string() ? list[i].get<std::string>() : list[i].dump();
      // "linear_attention" / "full_attention" are the names transformers 5's _pattern_to_list
      // gives the Mamba and attention layers (../shared/docs/llamacpp-formats-and-hybrids.md §3.5).
      if (t == "mamba" || t == "linear_attention") kinds.push_back(NemotronLayer::kMamba);
      else if (t == "attention" || t == "full_attention") kinds.push_back(NemotronLayer::kAttention);
      else if (t == "mlp") kinds.push_back(NemotronLayer::kMlp);
      else if (t == "moe") moe(key);
      else
        c.invalid(key, fmt::format("has '{}' at index {}; a layer is \"mamba\", \"attention\", "
                                   "\"mlp\" or \"moe\"",
                                   t, i));
    }
  }
  if (c.has("num_hidden_layers")) {
    const int64_t n = c.get_positive("num_hidden_layers", kMaxConfigCount);
    if (n != static_cast<int64_t>(kinds.size()))
      c.invalid("num_hidden_layers",
                fmt::format("is {} but the layer pattern has {} layers", n, kinds.size()));
  }
  return kinds;
}

// A key and its legacy spelling (the remote code's config and transformers' differ).
const char* either(const HfConfig& c, const char* key, const char* legacy) {
  return !c.has(key) && c.has(legacy) ? legacy : key;
}

NemotronHConfig parse_config(const HfConfig& c) {
  NemotronHConfig m;
  m.layers = parse_pattern(c);
  m.hidden = c.get_positive("hidden_size");
  m.vocab = c.get_positive("vocab_size");
  m.eps = static_cast<float>(c.get_float("layer_norm_epsilon", 1e-5));
  if (!(m.eps >= 0)) c.invalid("layer_norm_epsilon", "must be a non-negative number");
  m.tied = c.get_bool("tie_word_embeddings", false);
  if (m.count(NemotronLayer::kMamba) > 0) {
    m.ssm_heads = c.get_positive("mamba_num_heads");
    m.ssm_head_dim = c.get_positive("mamba_head_dim");
    m.ssm_inner = c.int_dimension("mamba_num_heads",
                                  static_cast<double>(m.ssm_heads) * static_cast<double>(m.ssm_head_dim));
    m.state = c.get_positive("ssm_state_size");
    const char* groups = either(c, "n_groups", "mamba_n_groups");
    m.groups = c.has(groups) ? c.get_positive(groups) : 8;
    if (m.ssm_heads % m.groups != 0)
      c.invalid(groups, fmt::format("({}) must divide mamba_num_heads ({})", m.groups, m.ssm_heads));
    const char* conv = either(c, "conv_kernel", "mamba_d_conv");
    m.conv = c.has(conv) ? c.get_positive(conv) : 4;
    if (m.conv > 16) c.invalid(conv, "is larger than 16, which kllens does not support");
    const char* chunk = either(c, "chunk_size", "mamba_chunk_size");
    m.chunk = c.has(chunk) ? c.get_positive(chunk) : 128;  // chunked SSD only; unused
    m.conv_bias = c.get_bool(either(c, "use_conv_bias", "mamba_conv_bias"), true);
    m.proj_bias = c.get_bool(either(c, "use_bias", "mamba_proj_bias"), false);
    const std::string act = c.get_string("mamba_hidden_act", "silu");
    if (act != "silu" && act != "swish")
      c.invalid("mamba_hidden_act", "is '" + act + "'; kllens supports only silu");
    m.dt_limit = parse_time_step_limit(c, either(c, "time_step_limit", "mamba_dt_limit"));
  }
  if (m.count(NemotronLayer::kAttention) > 0) {
    m.heads = c.get_positive("num_attention_heads");
    m.kv_heads = c.has("num_key_value_heads") ? c.get_positive("num_key_value_heads") : m.heads;
    if (m.heads % m.kv_heads != 0)
      c.invalid("num_key_value_heads",
                fmt::format("({}) must divide num_attention_heads ({})", m.kv_heads, m.heads));
    const char* hd = either(c, "head_dim", "attention_head_dim");
    if (c.has(hd) && !c.json()[hd].is_null()) {
      m.head_dim = c.get_positive(hd);
    } else {
      if (m.hidden % m.heads != 0)
        c.invalid("num_attention_heads", fmt::format("({}) must divide hidden_size ({}) when "
                                                     "head_dim is not given",
                                                     m.heads, m.hidden));
      m.head_dim = m.hidden / m.heads;
    }
    m.attn_bias = c.get_bool("attention_bias", false);
    if (c.has("sliding_window") && !c.json()["sliding_window"].is_null())
      c.invalid("sliding_window", "is set; kllens' Nemotron-H attends to every earlier position");
  }
  if (m.count(NemotronLayer::kMlp) > 0) {
    m.ffn = c.get_positive("intermediate_size");
    m.mlp_bias = c.get_bool("mlp_bias", false);
    const std::string act = c.get_string("mlp_hidden_act", "relu2");
    if (act != "relu2") c.invalid("mlp_hidden_act", "is '" + act + "'; kllens supports only relu2");
  }
  return m;
}

// MambaRMSNormGated(intermediate_size, group_size = intermediate_size // n_groups): the gate
// first, then one RMS per group.
Mamba2Mixer mixer_shape(const NemotronHConfig& c) {
  return gate_then_norm_mixer(c.hidden, c.ssm_heads, c.ssm_head_dim, c.groups, c.state, c.conv,
                              Mamba2GatedNorm::kPerGroup, c.eps, c.dt_limit);
}

std::string layer_prefix(int l) { return "backbone.layers." + std::to_string(l) + "."; }

std::vector<TensorSpec> tensor_table(const NemotronHConfig& c) {
  const int64_t H = c.hidden;
  std::vector<TensorSpec> specs;
  specs.push_back({"backbone.embeddings.weight", Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < static_cast<int>(c.layers.size()); ++l) {
    const std::string p = layer_prefix(l);
    specs.push_back({p + "norm.weight", Role::kNorm, l, {H}});
    switch (c.layers[static_cast<size_t>(l)]) {
      case NemotronLayer::kMamba:
        mixer_shape(c).add_specs(specs, p + "mixer.", l, c.proj_bias, c.conv_bias);
        break;
      case NemotronLayer::kAttention:
        AttentionMixer::add_specs(specs, p + "mixer.", l, H, c.heads, c.kv_heads, c.head_dim,
                                  c.attn_bias);
        break;
      case NemotronLayer::kMlp:
        specs.push_back({p + "mixer.up_proj.weight", Role::kUp, l, {c.ffn, H}});
        if (c.mlp_bias) specs.push_back({p + "mixer.up_proj.bias", Role::kBias, l, {c.ffn}});
        specs.push_back({p + "mixer.down_proj.weight", Role::kDown, l, {H, c.ffn}});
        if (c.mlp_bias) specs.push_back({p + "mixer.down_proj.bias", Role::kBias, l, {H}});
        break;
    }
  }
  specs.push_back({"backbone.norm_f.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

class NemotronHModel : public LayerStackModel {
 public:
  NemotronHModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const int64_t H = cfg_.hidden;
    weights_ = Weights::load(store, tensor_table(cfg_), folder);
    ends_.embed = &weights_.get("backbone.embeddings.weight");
    weights_.get("backbone.embeddings.weight").tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("backbone.norm_f.weight");
    ends_.norm_eps = cfg_.eps;
    for (int l = 0; l < static_cast<int>(cfg_.layers.size()); ++l) {
      const std::string p = layer_prefix(l), mp = p + "mixer.";
      std::unique_ptr<Mixer> mixer;
      switch (cfg_.layers[static_cast<size_t>(l)]) {
        case NemotronLayer::kMamba: {
          auto m = std::make_unique<Mamba2MixerBlock>();
          m->mixer = mixer_shape(cfg_);
          m->mixer.bind(weights_, mp);
          mixer = std::move(m);
          break;
        }
        case NemotronLayer::kAttention: {
          // no RoPE: inv_freq stays empty
          mixer = AttentionMixer::bound(weights_, mp, H, cfg_.heads, cfg_.kv_heads, cfg_.head_dim);
          break;
        }
        case NemotronLayer::kMlp: {
          auto f = std::make_unique<Relu2MlpMixer>();
          f->hidden = H;
          f->ffn = cfg_.ffn;
          f->up = &weights_.get(mp + "up_proj.weight");
          f->up_bias = weights_.find(mp + "up_proj.bias");
          f->down = &weights_.get(mp + "down_proj.weight");
          f->down_bias = weights_.find(mp + "down_proj.bias");
          mixer = std::move(f);
          break;
        }
      }
      StackLayer& layer = layers_.emplace_back();
      layer.blocks.push_back({&weights_.get(p + "norm.weight"), cfg_.eps, 1.0f, std::move(mixer)});
    }
    finish_stack("nemotron_h", folder);
    std::string pattern;
    for (NemotronLayer k : cfg_.layers) pattern += static_cast<char>(k);
    info_.details = {{"pattern", pattern},
                     {"mamba_layers", std::to_string(cfg_.count(NemotronLayer::kMamba))},
                     {"attention_layers", std::to_string(cfg_.count(NemotronLayer::kAttention))},
                     {"mlp_layers", std::to_string(cfg_.count(NemotronLayer::kMlp))}};
    if (cfg_.count(NemotronLayer::kMamba) > 0) add_mamba2_details(mixer_shape(cfg_));
    if (cfg_.count(NemotronLayer::kAttention) > 0) {
      add_detail("heads", std::to_string(cfg_.heads));
      add_detail("kv_heads", std::to_string(cfg_.kv_heads));
      add_detail("head_dim", std::to_string(cfg_.head_dim));
      add_detail("rope", "none");
    }
    if (cfg_.count(NemotronLayer::kMlp) > 0)
      add_detail("intermediate_size", std::to_string(cfg_.ffn) + " (relu2)");
    add_detail("tied_embeddings", cfg_.tied ? "yes" : "no");
    add_detail("norm_eps", fmt::format("{:g}", cfg_.eps));
  }

 private:
  NemotronHConfig cfg_;
};

}  // namespace

std::vector<TensorSpec> nemotron_h_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config));
}

// llama.cpp's nemotron_h (src/models/nemotron-h.cpp; converter conversion/nemotron.py): a layer's
// kind is read back from per-layer head_count_kv and feed_forward_length (both 0: Mamba-2; kv > 0:
// attention; ff > 0: MLP). q and k are not permuted: without RoPE the converter's permutation
// reorders both the same way and changes no dot product.
std::string nemotron_h_llama_layout(const HfConfig& config, const std::vector<TensorSpec>&,
                                    LlamaLayout* out) {
  const NemotronHConfig c = parse_config(config);
  const bool any_mamba = c.count(NemotronLayer::kMamba) > 0;
  if (c.proj_bias) return "llama.cpp's nemotron_h has no Mamba in_proj/out_proj biases";
  if (any_mamba && (c.dt_limit.lo != 0.0f || !std::isinf(c.dt_limit.hi)))
    return "time_step_limit is not (0, inf): llama.cpp does not clamp dt";
  out->arch = "nemotron_h";
  add_llama_embedding_and_head(out, "backbone.embeddings.weight", "backbone.norm_f.weight",
                               "lm_head.weight");
  std::vector<int32_t> kv, ff;
  for (int l = 0; l < static_cast<int>(c.layers.size()); ++l) {
    const std::string p = layer_prefix(l), blk = llama_blk(l);
    const NemotronLayer kind = c.layers[static_cast<size_t>(l)];
    out->tensors[p + "norm.weight"] = {blk + "attn_norm.weight"};
    kv.push_back(kind == NemotronLayer::kAttention ? static_cast<int32_t>(c.kv_heads) : 0);
    ff.push_back(kind == NemotronLayer::kMlp ? static_cast<int32_t>(c.ffn) : 0);
    if (kind == NemotronLayer::kMamba) add_llama_mamba2_mixer(out, p + "mixer.", l, c.groups);
    if (kind == NemotronLayer::kAttention) add_llama_attention(out, p + "mixer.", l);
    if (kind == NemotronLayer::kMlp)
      for (const char* s : {"weight", "bias"}) {
        out->tensors[p + "mixer.up_proj." + s] = {blk + "ffn_up." + s};
        out->tensors[p + "mixer.down_proj." + s] = {blk + "ffn_down." + s};
      }
  }
  const int64_t context =
      config.has("max_position_embeddings") ? config.get_positive("max_position_embeddings") : 8192;
  add_llama_key(out, "context_length", context);
  add_llama_key(out, "embedding_length", c.hidden);
  add_llama_key(out, "block_count", static_cast<int64_t>(c.layers.size()));
  add_llama_key(out, "feed_forward_length", gguf::Value(ff));  // INT32 per layer, as the converter
  add_llama_hybrid_head_keys(out, c.heads, kv, c.head_dim);
  add_llama_ssm_keys(out, any_mamba ? c.conv : 4, c.ssm_inner, c.state, c.ssm_heads,
                     any_mamba ? c.groups : 1);
  add_llama_key(out, "attention.layer_norm_rms_epsilon", gguf::Value(c.eps));
  add_llama_key(out, "attention.layer_norm_epsilon", gguf::Value(c.eps));
  add_llama_key(out, "vocab_size", c.vocab);
  return "";
}

// The inverse of nemotron_h_llama_layout's keys, for a file llama.cpp wrote: the layer pattern from
// the per-layer head_count_kv and feed_forward_length, biases from the tensors present.
nlohmann::json nemotron_h_config_from_llama_keys(const LlamaKeys& k) {
  const gguf::File& file = k.file();
  const int64_t hidden = k.positive("embedding_length");
  const int64_t layers = k.layers("attn_norm.weight");
  if (k.has("expert_count") && k.positive("expert_count") > 0)
    k.invalid("expert_count", "is set (Nemotron-H MoE), which kllens does not implement yet");
  const std::vector<int64_t> kv = k.per_layer("attention.head_count_kv", layers);
  const std::vector<int64_t> ff = k.per_layer("feed_forward_length", layers);
  std::string pattern;
  int64_t kv_heads = 0, ffn = 0, first_mamba = -1, first_attn = -1, first_mlp = -1;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t h = kv[static_cast<size_t>(l)], f = ff[static_cast<size_t>(l)];
    if (h > 0 && f > 0)
      k.invalid("feed_forward_length", fmt::format("and head_count_kv are both set for layer {}", l));
    const auto same = [&](int64_t& seen, int64_t v, const char* key) {
      if (seen && seen != v) k.invalid(key, "differs between layers; HF Nemotron-H has one value");
      seen = v;
    };
    if (h > 0) same(kv_heads, h, "attention.head_count_kv");
    if (f > 0) same(ffn, f, "feed_forward_length");
    int64_t& first = h > 0 ? first_attn : f > 0 ? first_mlp : first_mamba;
    if (first < 0) first = l;
    pattern += h > 0 ? '*' : f > 0 ? '-' : 'M';
  }
  const auto has_tensor = [&](int64_t layer, const std::string& name) {
    return layer >= 0 && file.find_tensor(llama_blk(static_cast<int>(layer)) + name) != nullptr;
  };
  nlohmann::json c;
  c["architectures"] = nlohmann::json::array({"NemotronHForCausalLM"});
  c["model_type"] = "nemotron_h";
  c["hidden_size"] = hidden;
  c["num_hidden_layers"] = layers;
  c["hybrid_override_pattern"] = pattern;
  c["vocab_size"] = k.vocab(hidden);
  c["layer_norm_epsilon"] = k.real("attention.layer_norm_rms_epsilon", 0, 1);
  c["tie_word_embeddings"] = k.tied();
  if (k.has("context_length")) c["max_position_embeddings"] = k.positive("context_length");
  if (first_attn >= 0) {
    c["num_attention_heads"] = k.positive("attention.head_count");
    c["num_key_value_heads"] = kv_heads;
    c["head_dim"] = k.positive("attention.key_length");
    if (k.has("attention.value_length") && k.positive("attention.value_length") != c["head_dim"])
      k.invalid("attention.value_length", "differs from key_length; HF Nemotron-H has one head_dim");
    c["attention_bias"] = has_tensor(first_attn, "attn_q.bias");
  }
  if (first_mlp >= 0) {
    c["intermediate_size"] = ffn;
    c["mlp_bias"] = has_tensor(first_mlp, "ffn_up.bias");
    c["mlp_hidden_act"] = "relu2";
  }
  if (first_mamba >= 0) {
    const int64_t heads = k.positive("ssm.time_step_rank"), inner = k.positive("ssm.inner_size");
    if (inner % heads != 0)
      k.invalid("ssm.time_step_rank", fmt::format("({} heads) does not divide ssm.inner_size ({})", heads, inner));
    c["mamba_num_heads"] = heads;
    c["mamba_head_dim"] = inner / heads;
    c["ssm_state_size"] = k.positive("ssm.state_size");
    c["n_groups"] = k.positive("ssm.group_count");
    c["conv_kernel"] = k.positive("ssm.conv_kernel");
    c["use_conv_bias"] = has_tensor(first_mamba, "ssm_conv1d.bias");
    c["use_bias"] = false;  // llama.cpp's nemotron_h has no Mamba projection biases
  }
  k.add_special_tokens(c, c["vocab_size"]);
  return c;
}

std::unique_ptr<Model> make_nemotron_h(const HfConfig& config, const TensorStore& store,
                                       const std::string& folder, const LoadOptions&) {
  return std::make_unique<NemotronHModel>(config, store, folder);
}

}  // namespace kllens
