// Mamba-2 (HF Mamba2ForCausalLM, model_type "mamba2"). Reference: transformers
// models/mamba2/modeling_mamba2.py (Mamba2Block, Mamba2Mixer.torch_forward, MambaRMSNormGated);
// see ../shared/docs/hf-mamba-hybrids-nncf.md §A2. Block: h += mixer(rmsnorm(h)); the mixer is
// the shared Mamba2Mixer with the gate applied before the norm. The norm is per group of
// d_inner / n_groups channels by default, as mamba_ssm and llama.cpp compute it; transformers'
// CPU path normalizes over the full inner width instead (LoadOptions, models/model.h).
#include <cmath>

#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/mamba2_mixer.h"

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

std::string gated_norm_description(Mamba2GatedNorm norm, int64_t groups, int64_t inner) {
  if (groups == 1) return "gate, then RMS over d_inner (n_groups = 1)";
  if (norm == Mamba2GatedNorm::kFullWidth)
    return fmt::format("gate, then RMS over all of d_inner = {} (transformers' CPU path; "
                       "--mamba2-norm full)",
                       inner);
  return fmt::format("gate, then RMS per group of {} channels (mamba_ssm, llama.cpp)",
                     inner / groups);
}

// The tensor table: every tensor of the checkpoint, its role and exact shape.
std::vector<TensorSpec> tensor_table(const Mamba2Config& c, const std::string& embed_name) {
  const int64_t H = c.hidden, I = c.inner, GN = c.groups * c.state;
  const int64_t CD = I + 2 * GN, W = I + CD + c.heads, K = c.conv, NH = c.heads;
  std::vector<TensorSpec> specs;
  specs.push_back({embed_name, Role::kEmbed, -1, {c.vocab, H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    specs.push_back({p + "norm.weight", Role::kNorm, l, {H}});
    specs.push_back({p + "mixer.in_proj.weight", Role::kInProj, l, {W, H}});
    if (c.bias) specs.push_back({p + "mixer.in_proj.bias", Role::kBias, l, {W}});
    specs.push_back({p + "mixer.conv1d.weight", Role::kConv1d, l, {CD, 1, K}});
    if (c.conv_bias) specs.push_back({p + "mixer.conv1d.bias", Role::kBias, l, {CD}});
    specs.push_back({p + "mixer.dt_bias", Role::kDtBias, l, {NH}});
    specs.push_back({p + "mixer.A_log", Role::kSsmA, l, {NH}});
    specs.push_back({p + "mixer.D", Role::kSsmD, l, {NH}});
    specs.push_back({p + "mixer.norm.weight", Role::kNorm, l, {I}});
    specs.push_back({p + "mixer.out_proj.weight", Role::kOutProj, l, {H, I}});
    if (c.bias) specs.push_back({p + "mixer.out_proj.bias", Role::kBias, l, {H}});
  }
  specs.push_back({"backbone.norm_f.weight", Role::kNorm, -1, {H}});
  if (!c.tied) specs.push_back({"lm_head.weight", Role::kHead, -1, {c.vocab, H}});
  return specs;
}

struct Mamba2Layer {
  const Param* norm = nullptr;
  Mamba2Mixer mixer;
};

class Mamba2DecodeState : public DecodeState {
 public:
  std::vector<std::vector<float>> conv, ssm;  // per layer {conv_dim, K-1}, {H, P, N}
  size_t bytes() const override {
    size_t n = 0;
    for (size_t l = 0; l < conv.size(); ++l) n += (conv[l].size() + ssm[l].size()) * sizeof(float);
    return n;
  }
};

class Mamba2ForwardState : public ForwardState {
 public:
  std::unique_ptr<ForwardState> clone() const override {
    return std::make_unique<Mamba2ForwardState>(*this);
  }
};

class Mamba2Model : public Model {
 public:
  Mamba2Model(const HfConfig& config, const TensorStore& store, const std::string& folder,
              Mamba2GatedNorm norm)
      : cfg_(parse_config(config)) {
    // HF Mamba2Model.load_hook renames a legacy "embedding." to "embeddings.".
    const std::string embed_name = store.find("backbone.embeddings.weight") == nullptr &&
                                           store.find("backbone.embedding.weight") != nullptr
                                       ? "backbone.embedding.weight"
                                       : "backbone.embeddings.weight";
    const int64_t H = cfg_.hidden, I = cfg_.inner, K = cfg_.conv, NH = cfg_.heads;
    weights_ = Weights::load(store, tensor_table(cfg_, embed_name), folder);

    embed_ = &weights_.get(embed_name);
    weights_.get(embed_name).tied_head = cfg_.tied;
    head_ = cfg_.tied ? embed_ : &weights_.get("lm_head.weight");
    norm_f_ = &weights_.get("backbone.norm_f.weight");
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      Mamba2Layer L;
      L.norm = &weights_.get(p + "norm.weight");
      Mamba2Mixer& m = L.mixer;
      m.hidden = H;
      m.inner = I;
      m.heads = NH;
      m.head_dim = cfg_.head_dim;
      m.groups = cfg_.groups;
      m.state = cfg_.state;
      m.conv_kernel = K;
      m.norm_kind = norm == Mamba2GatedNorm::kFullWidth ? GatedNorm::kGateThenNormFull
                                                        : GatedNorm::kGateThenNormGroup;
      m.norm_eps = cfg_.eps;
      m.dt_limit = cfg_.dt_limit;
      m.in_proj = &weights_.get(p + "mixer.in_proj.weight");
      m.in_proj_bias = weights_.find(p + "mixer.in_proj.bias");
      m.conv = &weights_.get(p + "mixer.conv1d.weight");
      m.conv_bias = weights_.find(p + "mixer.conv1d.bias");
      m.dt_bias = &weights_.get(p + "mixer.dt_bias");
      m.D = &weights_.get(p + "mixer.D");
      m.norm = &weights_.get(p + "mixer.norm.weight");
      m.out_proj = &weights_.get(p + "mixer.out_proj.weight");
      m.out_proj_bias = weights_.find(p + "mixer.out_proj.bias");
      m.set_A(weights_.get(p + "mixer.A_log"));
      layers_.push_back(std::move(L));
    }

    info_.arch = "mamba2";
    info_.folder = folder;
    info_.n_layers = cfg_.layers;
    info_.d_model = H;
    info_.vocab = cfg_.vocab;
    info_.layer_kinds.assign(static_cast<size_t>(cfg_.layers), "mamba2");
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
                     {"gated_norm", gated_norm_description(norm, cfg_.groups, I)}};
  }

  std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const override {
    check_ids(ids);
    auto s = std::make_unique<Mamba2ForwardState>();
    embed(ids, *s);
    return s;
  }

  void run_layer(int l, ForwardState& s) const override {
    const Mamba2Mixer& m = layers_[static_cast<size_t>(l)].mixer;
    // A fresh sequence starts from zero states.
    thread_local ScratchVec conv_buf, ssm_buf;
    block(layers_[static_cast<size_t>(l)], s.hidden.data(), s.rows,
          conv_buf.zeroed(m.conv_state_size()), ssm_buf.zeroed(m.ssm_state_size()));
    s.next_layer = l + 1;
  }

  void finish(const ForwardState& s, float* logits) const override {
    head(s.hidden.data(), s.rows, logits);
  }

  std::unique_ptr<DecodeState> new_decode_state() const override {
    auto s = std::make_unique<Mamba2DecodeState>();
    for (const auto& L : layers_) {
      s->conv.emplace_back(L.mixer.conv_state_size(), 0.0f);
      s->ssm.emplace_back(L.mixer.ssm_state_size(), 0.0f);
    }
    return s;
  }

  void decode_step(DecodeState& base, int32_t token, float* logits) const override {
    auto& s = static_cast<Mamba2DecodeState&>(base);
    check_ids(std::span<const int32_t>(&token, 1));
    // Kept across steps so that its row is allocated once; embed() overwrites it.
    thread_local Mamba2ForwardState fs;
    embed(std::span<const int32_t>(&token, 1), fs);
    for (size_t l = 0; l < layers_.size(); ++l)
      block(layers_[l], fs.hidden.data(), 1, s.conv[l].data(), s.ssm[l].data());
    head(fs.hidden.data(), 1, logits);
    ++s.position;
  }

 private:
  void embed(std::span<const int32_t> ids, ForwardState& s) const {
    embed_tokens(*embed_, ids, s);
  }

  // logits {T, V} = lm_head(rmsnorm(hidden, norm_f))
  void head(const float* hidden, int64_t T, float* logits) const {
    thread_local ScratchVec normed_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * cfg_.hidden));
    ops::rmsnorm(normed, hidden, norm_f_->data(), T, cfg_.hidden, cfg_.eps);
    linear(logits, normed, *head_, nullptr, T, cfg_.vocab, cfg_.hidden);
  }

  // HF Mamba2Block: hidden {T, H} += mixer(rmsnorm(hidden)); states carried in and out.
  void block(const Mamba2Layer& L, float* hidden, int64_t T, float* conv_state,
             float* ssm_state) const {
    const int64_t H = cfg_.hidden;
    thread_local ScratchVec normed_buf, out_buf;  // each written whole before it is read
    float* normed = normed_buf.get(static_cast<size_t>(T * H));
    float* out = out_buf.get(static_cast<size_t>(T * H));
    ops::rmsnorm(normed, hidden, L.norm->data(), T, H, cfg_.eps);
    L.mixer.forward(out, normed, T, conv_state, ssm_state);
    for (int64_t k = 0; k < T * H; ++k) hidden[k] += out[k];
  }

  Mamba2Config cfg_;
  const Param *embed_ = nullptr, *head_ = nullptr, *norm_f_ = nullptr;
  std::vector<Mamba2Layer> layers_;
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
