// Mamba-2 (HF Mamba2ForCausalLM, model_type "mamba2"). Reference: transformers
// models/mamba2/modeling_mamba2.py (Mamba2Block, Mamba2Mixer.torch_forward, MambaRMSNormGated);
// see ../shared/docs/hf-mamba-hybrids-nncf.md §A2. Block: h += mixer(rmsnorm(h)); the mixer is
// the shared Mamba2Mixer with the gate applied before the norm. The norm is per group of
// d_inner / n_groups channels by default, as mamba_ssm and llama.cpp compute it; transformers'
// CPU path normalizes over the full inner width instead (LoadOptions, models/model.h).
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/layer_stack.h"

namespace kllens {
namespace {

struct Mamba2Config {
  int64_t hidden = 0, inner = 0, heads = 0, head_dim = 0, groups = 0, state = 0, conv = 0,
          layers = 0, vocab = 0, chunk = 0;
  bool bias = false, conv_bias = true, tied = false;
  float eps = 1e-5f;
  TimeStepLimit dt_limit;
};

// Defaults are HF Mamba2Config's; the dimensions that define the checkpoint are required.
Mamba2Config parse_config(const HfConfig& c) {
  Mamba2Config m;
  m.hidden = c.get_positive("hidden_size");
  m.layers = c.get_positive("num_hidden_layers", kMaxConfigCount);
  m.vocab = c.get_positive("vocab_size");
  m.heads = c.get_positive("num_heads");
  m.head_dim = c.get_positive("head_dim");
  m.state = c.get_positive("state_size");
  m.groups = c.has("n_groups") ? c.get_positive("n_groups") : 8;
  m.conv = c.has("conv_kernel") ? c.get_positive("conv_kernel") : 4;
  m.chunk = c.has("chunk_size") ? c.get_positive("chunk_size") : 256;  // chunked SSD only; unused
  const double expand = c.get_float("expand", 2.0);
  if (!(expand > 0)) c.invalid("expand", "must be positive");
  m.inner = c.int_dimension("expand", expand * static_cast<double>(m.hidden));  // HF: int(expand * hidden)
  if (m.inner != m.heads * m.head_dim)
    fail("{}: hidden_size * expand = {} * {:g} = {} must equal num_heads * head_dim = {} * {} = {}",
         c.path(), m.hidden, expand, m.inner, m.heads, m.head_dim, m.heads * m.head_dim);
  if (m.heads % m.groups != 0)
    fail("{}: n_groups = {} must divide num_heads = {}", c.path(), m.groups, m.heads);
  m.bias = c.get_bool("use_bias", false);
  m.conv_bias = c.get_bool("use_conv_bias", true);
  m.tied = c.get_bool("tie_word_embeddings", false);
  m.eps = static_cast<float>(c.get_float("layer_norm_epsilon", 1e-5));
  if (!(m.eps >= 0)) c.invalid("layer_norm_epsilon", "must be a non-negative number");
  const std::string act = c.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    c.invalid("hidden_act", "is '" + act + "'; kllens supports only silu for Mamba-2");
  m.dt_limit = parse_time_step_limit(c);
  return m;
}

// One layer's mixer with the config's dimensions (the tensors are bound later).
Mamba2Mixer mixer_shape(const Mamba2Config& c, Mamba2GatedNorm norm) {
  return gate_then_norm_mixer(c.hidden, c.heads, c.head_dim, c.groups, c.state, c.conv, norm,
                              c.eps, c.dt_limit);
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const Mamba2Config& c, const std::string& embed_name) {
  const Mamba2Mixer shape = mixer_shape(c, Mamba2GatedNorm::kPerGroup);
  std::vector<TensorSpec> specs;
  specs.push_back({embed_name, Role::kEmbed, -1, {c.vocab, c.hidden}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    specs.push_back({p + "norm.weight", Role::kNorm, l, {c.hidden}});
    shape.add_specs(specs, p + "mixer.", l, c.bias, c.conv_bias);
  }
  specs.push_back({"backbone.norm_f.weight", Role::kNorm, -1, {c.hidden}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, c.hidden}});
  return specs;
}

class Mamba2Model : public LayerStackModel {
 public:
  Mamba2Model(const HfConfig& config, const TensorStore& store, const std::string& folder,
              Mamba2GatedNorm norm)
      : cfg_(parse_config(config)) {
    // HF Mamba2Model.load_hook renames a legacy "embedding." to "embeddings.".
    const std::string embed_name = store.find("backbone.embeddings.weight") == nullptr &&
                                           store.find("backbone.embedding.weight") != nullptr
                                       ? "backbone.embedding.weight"
                                       : "backbone.embeddings.weight";
    const int64_t I = cfg_.inner, K = cfg_.conv, NH = cfg_.heads;
    weights_ = Weights::load(store, tensor_table(cfg_, embed_name), folder);

    ends_.embed = &weights_.get(embed_name);
    weights_.get(embed_name).tied_head = cfg_.tied;
    ends_.head = cfg_.tied ? ends_.embed : &weights_.get("lm_head.weight");
    ends_.norm_f = &weights_.get("backbone.norm_f.weight");
    ends_.norm_eps = cfg_.eps;
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      // HF Mamba2Block: hidden += mixer(rmsnorm(hidden))
      auto block = std::make_unique<Mamba2MixerBlock>();
      block->mixer = mixer_shape(cfg_, norm);
      block->mixer.bind(weights_, p + "mixer.");
      StackLayer& layer = layers_.emplace_back();
      layer.blocks.push_back({&weights_.get(p + "norm.weight"), cfg_.eps, 1.0f, std::move(block)});
    }
    finish_stack("mamba2", folder);
    info_.details = {{"d_inner", std::to_string(I)},
                     {"ssm_heads", std::to_string(NH)},
                     {"head_dim", std::to_string(cfg_.head_dim)},
                     {"n_groups", std::to_string(cfg_.groups)},
                     {"d_state", std::to_string(cfg_.state)},
                     {"d_conv", std::to_string(K)},
                     {"chunk_size", std::to_string(cfg_.chunk)},
                     {"time_step_limit", fmt::format("[{:g}, {:g}]", cfg_.dt_limit.lo, cfg_.dt_limit.hi)},
                     {"tied_embeddings", cfg_.tied ? "yes" : "no"},
                     {"proj_bias", cfg_.bias ? "yes" : "no"},
                     {"norm_eps", fmt::format("{:g}", cfg_.eps)},
                     {"gated_norm", gated_norm_description(mixer_shape(cfg_, norm))}};
  }

 private:
  Mamba2Config cfg_;
};

}  // namespace

std::vector<TensorSpec> mamba2_tensor_specs(const HfConfig& config) {
  return tensor_table(parse_config(config), "backbone.embeddings.weight");
}

std::unique_ptr<Model> make_mamba2(const HfConfig& config, const TensorStore& store,
                                   const std::string& folder, const LoadOptions& options) {
  return std::make_unique<Mamba2Model>(config, store, folder, options.mamba2_norm);
}

}  // namespace kllens
