#include "models/mamba_ssm_native.h"

#include <cstring>
#include <set>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

namespace kllens {

using json = nlohmann::json;

namespace {

// The fields of mamba_ssm's MambaConfig dataclass (models/config_mamba.py) and the keyword
// arguments of its mixers (modules/mamba_simple.py Mamba, modules/mamba2.py Mamba2); those that
// only shape the initialization or the CUDA kernels change nothing in a loaded model.
const std::set<std::string> kConfigFields = {
    "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
    "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"};
const std::set<std::string> kMamba1Args = {
    "layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
    "dt_init_floor", "conv_bias", "bias", "use_fast_path", "layer_idx", "device", "dtype"};
const std::set<std::string> kMamba2Args = {
    "layer", "d_state", "d_conv", "conv_init", "expand", "headdim", "d_ssm", "ngroups",
    "A_init_range", "D_has_hdim", "rmsnorm", "norm_before_gate", "dt_min", "dt_max",
    "dt_init_floor", "dt_limit", "bias", "conv_bias", "chunk_size", "use_mem_eff_path",
    "layer_idx", "process_group", "sequence_parallel", "device", "dtype"};

constexpr const char* kNativeEmbedding = "backbone.embedding.weight";
constexpr const char* kHfEmbedding = "backbone.embeddings.weight";

void refuse_unknown(const HfConfig& c, const std::set<std::string>& known, const char* owner) {
  for (const auto& [key, value] : c.json().items())
    if (!known.count(key)) c.invalid(key, std::string("is not an argument of mamba_ssm's ") + owner);
}

}  // namespace

bool is_mamba_ssm_config(const json& config) {
  return config.is_object() && !config.contains("model_type") && config.contains("d_model") &&
         config.contains("n_layer");
}

json hf_config_from_mamba_ssm(const HfConfig& c) {
  refuse_unknown(c, kConfigFields, "MambaConfig");
  const int64_t d_model = c.get_positive("d_model");
  const int64_t layers = c.get_positive("n_layer", kMaxConfigCount);
  const int64_t vocab = c.get_positive("vocab_size");
  const int64_t pad = c.has("pad_vocab_size_multiple") ? c.get_positive("pad_vocab_size_multiple") : 8;
  // MambaLMHeadModel pads the vocabulary to a multiple of pad_vocab_size_multiple.
  const int64_t padded = (vocab + pad - 1) / pad * pad;
  if (c.get_int("d_intermediate", 0) != 0)
    c.invalid("d_intermediate", "is not 0: blocks with an MLP, which the HF Mamba classes do not have");
  if (c.has("attn_layer_idx") && !(c.json()["attn_layer_idx"].is_array() && c.json()["attn_layer_idx"].empty()))
    c.invalid("attn_layer_idx", "names attention layers, which the HF Mamba classes do not have");
  if (!c.get_bool("rms_norm", true))
    c.invalid("rms_norm", "is false (LayerNorm blocks); the HF Mamba classes use RMSNorm only");
  (void)c.get_bool("fused_add_norm", true);  // the same sum, fused or not
  if (c.has("ssm_cfg") && !c.json()["ssm_cfg"].is_object()) c.invalid("ssm_cfg", "must be an object");
  const HfConfig ssm = HfConfig::from_json(c.has("ssm_cfg") ? c.json()["ssm_cfg"] : json::object(),
                                           c.path() + " (ssm_cfg)");
  const std::string layer = ssm.get_string("layer", "Mamba1");
  json hf = {{"hidden_size", d_model},
             {"num_hidden_layers", layers},
             {"vocab_size", padded},
             {"tie_word_embeddings", c.get_bool("tie_embeddings", true)},
             {"residual_in_fp32", c.get_bool("residual_in_fp32", true)},
             {"layer_norm_epsilon", 1e-5},  // create_block's norm_epsilon, which the config cannot set
             {"hidden_act", "silu"},
             {"use_bias", ssm.get_bool("bias", false)},
             {"use_conv_bias", ssm.get_bool("conv_bias", true)},
             {"conv_kernel", ssm.has("d_conv") ? ssm.get_positive("d_conv") : 4}};
  if (layer == "Mamba1") {
    refuse_unknown(ssm, kMamba1Args, "Mamba (Mamba1)");
    const double expand = ssm.get_float("expand", 2.0);
    if (!(expand > 0)) ssm.invalid("expand", "must be positive");
    // mamba_simple.Mamba: d_inner = int(expand * d_model), dt_rank "auto" = ceil(d_model / 16).
    const int64_t inner = ssm.int_dimension("expand", expand * static_cast<double>(d_model));
    if (inner <= 0) ssm.invalid("expand", "gives an inner width of 0");
    int64_t dt_rank = (d_model + 15) / 16;
    if (ssm.has("dt_rank") && !(ssm.json()["dt_rank"].is_string() && ssm.json()["dt_rank"] == "auto"))
      dt_rank = ssm.get_positive("dt_rank");
    hf["model_type"] = "mamba";
    hf["state_size"] = ssm.has("d_state") ? ssm.get_positive("d_state") : 16;
    hf["expand"] = expand;
    hf["intermediate_size"] = inner;
    hf["time_step_rank"] = dt_rank;
  } else if (layer == "Mamba2") {
    refuse_unknown(ssm, kMamba2Args, "Mamba2");
    const int64_t expand = ssm.has("expand") ? ssm.get_positive("expand") : 2;
    const int64_t inner = expand * d_model;
    if (inner > kMaxConfigInt) ssm.invalid("expand", "gives an inner width beyond kllens' bounds");
    const int64_t head_dim = ssm.has("headdim") ? ssm.get_positive("headdim") : 64;
    const int64_t groups = ssm.has("ngroups") ? ssm.get_positive("ngroups") : 1;
    if (ssm.has("d_ssm") && !ssm.json()["d_ssm"].is_null() && ssm.get_positive("d_ssm") != inner)
      ssm.invalid("d_ssm", "is not expand * d_model: part of the mixer is a gated MLP, which HF "
                           "Mamba-2 does not have");
    if (inner % head_dim != 0) ssm.invalid("headdim", "does not divide expand * d_model");
    if (ssm.get_bool("D_has_hdim", false))
      ssm.invalid("D_has_hdim", "is true (D per channel); HF Mamba-2 has one D per head");
    if (!ssm.get_bool("rmsnorm", true))
      ssm.invalid("rmsnorm", "is false (no gated norm); HF Mamba-2 always has it");
    if (ssm.get_bool("norm_before_gate", false))
      ssm.invalid("norm_before_gate", "is true; HF Mamba-2 gates before the norm");
    hf["model_type"] = "mamba2";
    hf["state_size"] = ssm.has("d_state") ? ssm.get_positive("d_state") : 128;
    hf["expand"] = expand;
    hf["head_dim"] = head_dim;
    hf["num_heads"] = inner / head_dim;
    hf["n_groups"] = groups;
    hf["chunk_size"] = ssm.has("chunk_size") ? ssm.get_positive("chunk_size") : 256;
    hf["time_step_limit"] =
        ssm.has("dt_limit") ? ssm.json()["dt_limit"] : json::array({0.0, {{"__float__", "Infinity"}}});
  } else {
    ssm.invalid("layer", "is '" + layer + "'; mamba_ssm knows 'Mamba1' and 'Mamba2'");
  }
  return hf;
}

std::string mamba_ssm_tensor_name(const std::string& hf_name) {
  return hf_name == kHfEmbedding ? kNativeEmbedding : hf_name;
}

void map_mamba_ssm_tensors(TensorStore& store, const HfConfig& hf, const std::string& folder) {
  if (hf.get_bool("tie_word_embeddings", true)) {
    const TensorView* head = store.find("lm_head.weight");
    const TensorView* embedding = store.find(kNativeEmbedding);
    if (head && embedding) {
      // mamba_ssm ties by sharing the parameter, so its state dict holds the embedding twice.
      if (head->dtype != embedding->dtype || head->shape != embedding->shape ||
          std::memcmp(head->data, embedding->data, head->nbytes) != 0)
        fail("{}: tie_embeddings is true, but lm_head.weight is not backbone.embedding.weight",
             folder);
      store.drop("lm_head.weight");
    }
  }
  store.rename([](const std::string& name) { return name == kNativeEmbedding ? kHfEmbedding : name; },
               folder);
}

}  // namespace kllens
