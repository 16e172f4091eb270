// Checkpoints in mamba_ssm's own format (MambaLMHeadModel.save_pretrained, e.g.
// state-spaces/mamba2-130m, the checkpoint the study used): a config.json of mamba_ssm's
// MambaConfig (d_model, n_layer, vocab_size + pad_vocab_size_multiple, ssm_cfg, tie_embeddings,
// ...; no model_type) and its state dict, whose names differ from transformers' only in
// backbone.embedding (transformers: backbone.embeddings) and in keeping a tied lm_head.weight.
// They load as the equivalent HF Mamba / Mamba-2 model, exactly as mamba_ssm builds it: its
// defaults for every field not given, and every field it does not read refused, since
// mamba_ssm itself raises on unknown arguments.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kllens {

class HfConfig;
class TensorStore;

// A config.json without model_type that has mamba_ssm's d_model and n_layer.
bool is_mamba_ssm_config(const nlohmann::json& config);

// The HF config (model_type "mamba" or "mamba2") of the same model; Error naming the field for
// what mamba_ssm can build but the HF classes cannot (MLP or attention layers, LayerNorm, ...).
nlohmann::json hf_config_from_mamba_ssm(const HfConfig& native);

// mamba_ssm's name of an HF tensor of that model (synth writes native folders with it).
std::string mamba_ssm_tensor_name(const std::string& hf_name);

// The state dict's tensors under transformers' names; a tied lm_head.weight (mamba_ssm saves the
// embedding twice) is dropped once checked to be the embedding.
void map_mamba_ssm_tensors(TensorStore& store, const HfConfig& hf, const std::string& folder);

}  // namespace kllens
