#include "models/llama_names.h"

#include <cctype>
#include <map>

#include "models/model.h"

namespace kllens {

namespace {

// "backbone.layers.N.<rest>" -> (N, rest).
bool split_layer(const std::string& hf, int* layer, std::string* rest) {
  const std::string prefix = "backbone.layers.";
  if (hf.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size(), j = i;
  while (j < hf.size() && std::isdigit(static_cast<unsigned char>(hf[j]))) ++j;
  if (j == i || j - i > 6 || j >= hf.size() || hf[j] != '.') return false;
  *layer = std::stoi(hf.substr(i, j - i));
  *rest = hf.substr(j + 1);
  return true;
}

}  // namespace

std::optional<LlamaTensor> llama_tensor(const std::string& hf, bool mamba2) {
  using T = LlamaTransform;
  if (hf == "backbone.embeddings.weight" || hf == "backbone.embedding.weight")
    return LlamaTensor{"token_embd.weight"};
  if (hf == "backbone.norm_f.weight") return LlamaTensor{"output_norm.weight"};
  if (hf == "lm_head.weight") return LlamaTensor{"output.weight"};
  int l = 0;
  std::string rest;
  if (!split_layer(hf, &l, &rest)) return std::nullopt;
  const std::string blk = "blk." + std::to_string(l) + ".";
  static const std::map<std::string, std::string> kCommon = {
      {"norm.weight", "attn_norm.weight"},
      {"mixer.in_proj.weight", "ssm_in.weight"},
      {"mixer.conv1d.bias", "ssm_conv1d.bias"},
      {"mixer.out_proj.weight", "ssm_out.weight"},
  };
  if (auto it = kCommon.find(rest); it != kCommon.end()) return LlamaTensor{blk + it->second};
  if (rest == "mixer.conv1d.weight") return LlamaTensor{blk + "ssm_conv1d.weight", T::kSqueezeConv};
  if (rest == "mixer.A_log") return LlamaTensor{blk + "ssm_a", T::kNegExp};
  if (!mamba2) {
    if (rest == "mixer.x_proj.weight") return LlamaTensor{blk + "ssm_x.weight"};
    if (rest == "mixer.dt_proj.weight") return LlamaTensor{blk + "ssm_dt.weight"};
    if (rest == "mixer.dt_proj.bias") return LlamaTensor{blk + "ssm_dt.bias"};
    if (rest == "mixer.D") return LlamaTensor{blk + "ssm_d"};
  } else {
    if (rest == "mixer.dt_bias") return LlamaTensor{blk + "ssm_dt.bias"};
    if (rest == "mixer.D") return LlamaTensor{blk + "ssm_d", T::kColumn};
    if (rest == "mixer.norm.weight") return LlamaTensor{blk + "ssm_norm.weight", T::kGroupNorm};
  }
  return std::nullopt;
}

std::string llama_compat(const Model& model, const nlohmann::json& config, bool mamba2,
                         LlamaHparams* h) {
  const Weights& w = model.weights();
  for (const auto& p : w.all())
    if (!llama_tensor(p->name, mamba2))
      return fmt::format("llama.cpp's {} has no tensor for {}", mamba2 ? "mamba2" : "mamba", p->name);
  h->n_layer = model.info().n_layers;
  const Param* embed = w.find("backbone.embeddings.weight");
  if (!embed) embed = w.find("backbone.embedding.weight");
  if (!embed || h->n_layer < 1) return "the checkpoint has no embedding or no layers";
  h->n_vocab = embed->shape[0];
  h->d_model = embed->shape[1];
  const std::string p0 = "backbone.layers.0.mixer.";
  const Param* conv = w.find(p0 + "conv1d.weight");
  const Param* a = w.find(p0 + "A_log");
  if (!conv || !a) return "layer 0 has no conv1d or A_log";
  h->d_conv = conv->shape.back();
  for (int64_t l = 0; l < h->n_layer; ++l)
    if (!w.find("backbone.layers." + std::to_string(l) + ".mixer.conv1d.bias"))
      return fmt::format("llama.cpp's {} requires a conv1d bias (use_conv_bias = false here)",
                         mamba2 ? "mamba2" : "mamba");
  if (!mamba2) {
    h->d_inner = a->shape[0];
    h->d_state = a->shape[1];
    h->dt_rank = w.get(p0 + "dt_proj.weight").shape[1];
  } else {
    const Param& norm = w.get(p0 + "norm.weight");
    h->d_inner = norm.shape[0];
    h->dt_rank = a->shape[0];  // n_head: llama.cpp's ssm.time_step_rank for Mamba-2
    h->n_group = config.value("n_groups", int64_t{8});
    const int64_t conv_dim = conv->shape[0];
    if (h->n_group <= 0 || (conv_dim - h->d_inner) % (2 * h->n_group) != 0 ||
        h->d_inner % h->n_group != 0)
      return fmt::format("n_groups = {} does not divide the conv width {} - d_inner {}",
                         h->n_group, conv_dim, h->d_inner);
    h->d_state = (conv_dim - h->d_inner) / (2 * h->n_group);
  }
  if (h->d_inner != 2 * h->d_model)
    return fmt::format("llama.cpp supports only d_inner = 2 * d_model (here {} and {})", h->d_inner,
                       h->d_model);
  h->eps = static_cast<float>(config.value("layer_norm_epsilon", 1e-5));
  return "";
}

bool uses_llama_layout(const Model& model, const nlohmann::json& config) {
  const std::string& arch = model.info().arch;
  if (arch != "mamba" && arch != "mamba2") return false;
  LlamaHparams h;
  return llama_compat(model, config, arch == "mamba2", &h).empty();
}

}  // namespace kllens
