// Mamba-1 (HF MambaForCausalLM, model_type "mamba"). Reference: transformers
// models/mamba/modeling_mamba.py, MambaMixer.slow_forward; see docs in ../shared/docs.
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/layer_stack.h"

namespace kllens {
namespace {

struct MambaConfig {
  int64_t hidden = 0, inner = 0, state = 0, conv = 0, dt_rank = 0, layers = 0, vocab = 0;
  bool bias = false, conv_bias = true, tied = true;
  float eps = 1e-5f;
};

MambaConfig parse_config(const HfConfig& c) {
  MambaConfig m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.state = c.get_positive("state_size");
  m.conv = c.get_positive("conv_kernel");
  const double expand = c.get_float("expand", 2.0);
  m.inner = c.has("intermediate_size") ? c.get_positive("intermediate_size")
                                       : c.int_dimension("expand", expand * static_cast<double>(m.hidden));
  if (m.inner <= 0) c.invalid("intermediate_size", "must be positive");
  // time_step_rank is an integer or "auto" = ceil(hidden / 16).
  if (c.has("time_step_rank") && c.json()["time_step_rank"].is_string()) {
    if (c.json()["time_step_rank"] != "auto") c.invalid("time_step_rank", "must be an integer or \"auto\"");
    m.dt_rank = (m.hidden + 15) / 16;
  } else {
    m.dt_rank = c.has("time_step_rank") ? c.get_positive("time_step_rank") : (m.hidden + 15) / 16;
  }
  m.bias = c.get_bool("use_bias", false);
  m.conv_bias = c.get_bool("use_conv_bias", true);
  m.tied = c.get_bool("tie_word_embeddings", true);
  m.eps = static_cast<float>(c.get_float("layer_norm_epsilon", 1e-5));
  if (m.conv > 16) c.invalid("conv_kernel", "is larger than 16, which kllens does not support");
  return m;
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const MambaConfig& c, const std::string& embed_name) {
  const int64_t H = c.hidden, I = c.inner, N = c.state, K = c.conv, R = c.dt_rank;
  std::vector<TensorSpec> specs;
  specs.push_back({embed_name, Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    specs.push_back({p + "norm.weight", Role::kNorm, l, {H}});
    specs.push_back({p + "mixer.in_proj.weight", Role::kInProj, l, {2 * I, H}});
    if (c.bias) specs.push_back({p + "mixer.in_proj.bias", Role::kBias, l, {2 * I}});
    specs.push_back({p + "mixer.conv1d.weight", Role::kConv1d, l, {I, 1, K}});
    if (c.conv_bias) specs.push_back({p + "mixer.conv1d.bias", Role::kBias, l, {I}});
    specs.push_back({p + "mixer.x_proj.weight", Role::kXProj, l, {R + 2 * N, I}});
    specs.push_back({p + "mixer.dt_proj.weight", Role::kDtProj, l, {I, R}});
    specs.push_back({p + "mixer.dt_proj.bias", Role::kDtBias, l, {I}});
    specs.push_back({p + "mixer.A_log", Role::kSsmA, l, {I, N}});
    specs.push_back({p + "mixer.D", Role::kSsmD, l, {I}});
    specs.push_back({p + "mixer.out_proj.weight", Role::kOutProj, l, {H, I}});
    if (c.bias) specs.push_back({p + "mixer.out_proj.bias", Role::kBias, l, {H}});
  }
  specs.push_back({"backbone.norm_f.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

class MambaModel : public LayerStackModel {
 public:
  MambaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const std::string embed_name = store.find("backbone.embeddings.weight") == nullptr &&
                                           store.find("backbone.embedding.weight") != nullptr
                                       ? "backbone.embedding.weight"  // legacy name
                                       : "backbone.embeddings.weight";
    const int64_t H = cfg_.hidden, I = cfg_.inner, N = cfg_.state, K = cfg_.conv, R = cfg_.dt_rank;
    weights_ = Weights::load(store, tensor_table(cfg_, embed_name), folder);

    ends_.embed = &weights_.get(embed_name);
    weights_.get(embed_name).tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("backbone.norm_f.weight");
    ends_.norm_eps = cfg_.eps;
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      // HF MambaBlock: hidden += mixer(rmsnorm(hidden))
      auto m = std::make_unique<Mamba1MixerBlock>();
      m->hidden = H;
      m->ssm.inner = I;
      m->ssm.state = N;
      m->ssm.dt_rank = R;
      m->ssm.conv_kernel = K;
      m->bind(weights_, p + "mixer.");
      StackLayer& layer = layers_.emplace_back();
      layer.blocks.push_back({&weights_.get(p + "norm.weight"), cfg_.eps, 1.0f, std::move(m)});
    }
    finish_stack("mamba", folder);
    info_.details = {{"d_inner", std::to_string(I)},     {"d_state", std::to_string(N)},
                     {"d_conv", std::to_string(K)},      {"dt_rank", std::to_string(R)},
                     {"tied_embeddings", cfg_.tied ? "yes" : "no"},
                     {"proj_bias", cfg_.bias ? "yes" : "no"},
                     {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

 private:
  MambaConfig cfg_;
};

}  // namespace

std::vector<TensorSpec> mamba_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config), "backbone.embeddings.weight");
}

std::unique_ptr<Model> make_mamba(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder, const LoadOptions&) {
  return std::make_unique<MambaModel>(config, store, folder);
}

}  // namespace kllens
