#include "export/llama_names.h"

#include <cctype>
#include <map>

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

}  // namespace kllens
