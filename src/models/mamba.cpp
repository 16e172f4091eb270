// Mamba-1 (HF MambaForCausalLM, model_type "mamba"). Reference: transformers
// models/mamba/modeling_mamba.py, MambaMixer.slow_forward; see docs in ../shared/docs.
#include <cmath>

#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "models/families.h"
#include "models/mamba1_ssm.h"

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

struct MambaLayer {
  const Param *norm, *in_proj, *in_proj_bias, *out_proj, *out_proj_bias;
  Mamba1Ssm ssm;
};

class MambaDecodeState : public DecodeState {
 public:
  std::vector<std::vector<float>> conv, ssm;  // per layer {inner, K-1}, {inner, state}
  size_t bytes() const override {
    size_t n = 0;
    for (size_t l = 0; l < conv.size(); ++l) n += (conv[l].size() + ssm[l].size()) * sizeof(float);
    return n;
  }
};

class MambaForwardState : public ForwardState {
 public:
  std::unique_ptr<ForwardState> clone() const override {
    return std::make_unique<MambaForwardState>(*this);
  }
};

class MambaModel : public Model {
 public:
  MambaModel(const HfConfig& config, const TensorStore& store, const std::string& folder)
      : cfg_(parse_config(config)) {
    const std::string embed_name = store.find("backbone.embeddings.weight") == nullptr &&
                                           store.find("backbone.embedding.weight") != nullptr
                                       ? "backbone.embedding.weight"  // legacy name
                                       : "backbone.embeddings.weight";
    const int64_t H = cfg_.hidden, I = cfg_.inner, N = cfg_.state, K = cfg_.conv, R = cfg_.dt_rank;
    weights_ = Weights::load(store, tensor_table(cfg_, embed_name), folder);

    embed_ = &weights_.get(embed_name);
    weights_.get(embed_name).tied_head = cfg_.tied;
    head_ = cfg_.tied ? embed_ : &weights_.get("lm_head.weight");
    norm_f_ = &weights_.get("backbone.norm_f.weight");
    for (int l = 0; l < cfg_.layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      MambaLayer L{};
      L.norm = &weights_.get(p + "norm.weight");
      L.in_proj = &weights_.get(p + "mixer.in_proj.weight");
      L.in_proj_bias = weights_.find(p + "mixer.in_proj.bias");
      L.ssm.inner = I;
      L.ssm.state = N;
      L.ssm.dt_rank = R;
      L.ssm.conv_kernel = K;
      L.ssm.conv = &weights_.get(p + "mixer.conv1d.weight");
      L.ssm.conv_bias = weights_.find(p + "mixer.conv1d.bias");
      L.ssm.x_proj = &weights_.get(p + "mixer.x_proj.weight");
      L.ssm.dt_proj = &weights_.get(p + "mixer.dt_proj.weight");
      L.ssm.dt_bias = &weights_.get(p + "mixer.dt_proj.bias");
      L.ssm.D = &weights_.get(p + "mixer.D");
      L.ssm.set_A(weights_.get(p + "mixer.A_log"));
      L.out_proj = &weights_.get(p + "mixer.out_proj.weight");
      L.out_proj_bias = weights_.find(p + "mixer.out_proj.bias");
      layers_.push_back(std::move(L));
    }

    info_.arch = "mamba";
    info_.folder = folder;
    info_.n_layers = cfg_.layers;
    info_.d_model = H;
    info_.vocab = cfg_.vocab;
    info_.layer_kinds.assign(static_cast<size_t>(cfg_.layers), "mamba");
    info_.details = {{"d_inner", std::to_string(I)},     {"d_state", std::to_string(N)},
                     {"d_conv", std::to_string(K)},      {"dt_rank", std::to_string(R)},
                     {"tied_embeddings", cfg_.tied ? "yes" : "no"},
                     {"proj_bias", cfg_.bias ? "yes" : "no"},
                     {"norm_eps", fmt::format("{:g}", cfg_.eps)}};
  }

  std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const override {
    check_ids(ids);
    auto s = std::make_unique<MambaForwardState>();
    embed(ids, *s);
    return s;
  }

  void run_layer(int l, ForwardState& s) const override {
    // A fresh sequence starts from zero states.
    thread_local ScratchVec conv_buf, ssm_buf;
    const auto conv_n = static_cast<size_t>(cfg_.inner * (cfg_.conv - 1));
    const auto ssm_n = static_cast<size_t>(cfg_.inner * cfg_.state);
    float* conv_state = conv_buf.zeroed(conv_n);
    float* ssm_state = ssm_buf.zeroed(ssm_n);
    mixer_block(layers_[static_cast<size_t>(l)], s.hidden.data(), s.rows, conv_state, ssm_state);
    s.next_layer = l + 1;
  }

  void finish(const ForwardState& s, float* logits) const override {
    head(s.hidden.data(), s.rows, logits);
  }

  std::unique_ptr<DecodeState> new_decode_state() const override {
    auto s = std::make_unique<MambaDecodeState>();
    for (int l = 0; l < cfg_.layers; ++l) {
      s->conv.emplace_back(static_cast<size_t>(cfg_.inner * (cfg_.conv - 1)), 0.0f);
      s->ssm.emplace_back(static_cast<size_t>(cfg_.inner * cfg_.state), 0.0f);
    }
    return s;
  }

  void decode_step(DecodeState& base, int32_t token, float* logits) const override {
    auto& s = static_cast<MambaDecodeState&>(base);
    check_ids(std::span<const int32_t>(&token, 1));
    // Kept across steps so that its row is allocated once; embed() overwrites it.
    thread_local MambaForwardState fs;
    embed(std::span<const int32_t>(&token, 1), fs);
    for (int l = 0; l < cfg_.layers; ++l)
      mixer_block(layers_[static_cast<size_t>(l)], fs.hidden.data(), 1, s.conv[l].data(),
                  s.ssm[l].data());
    head(fs.hidden.data(), 1, logits);
    ++s.position;
  }

 private:
  void embed(std::span<const int32_t> ids, ForwardState& s) const {
    embed_tokens(*embed_, ids, s);
  }

  void head(const float* hidden, int64_t T, float* logits) const {
    thread_local ScratchVec normed_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * cfg_.hidden));
    ops::rmsnorm(normed, hidden, norm_f_->data(), T, cfg_.hidden, cfg_.eps);
    linear(logits, normed, *head_, nullptr, T, cfg_.vocab, cfg_.hidden);
  }

  // hidden {T, H} += mixer(rmsnorm(hidden)); conv/ssm states are carried in and out.
  void mixer_block(const MambaLayer& L, float* hidden, int64_t T, float* conv_state,
                   float* ssm_state) const {
    const int64_t H = cfg_.hidden, I = cfg_.inner;
    // Each written whole before it is read.
    thread_local ScratchVec normed_buf, xz_buf, y_buf, out_buf;
    float* normed = normed_buf.get(static_cast<size_t>(T * H));
    ops::rmsnorm(normed, hidden, L.norm->data(), T, H, cfg_.eps);
    // xz {T, 2I} = in_proj(u): x = columns [0, I), gate z = columns [I, 2I)
    float* xz = xz_buf.get(static_cast<size_t>(T * 2 * I));
    linear(xz, normed, *L.in_proj, L.in_proj_bias ? L.in_proj_bias->data() : nullptr, T, 2 * I, H);
    float* y = y_buf.get(static_cast<size_t>(T * I));
    L.ssm.forward(y, xz, 2 * I, xz + I, 2 * I, T, conv_state, ssm_state);
    // hidden += out_proj(y)
    float* out = out_buf.get(static_cast<size_t>(T * H));
    linear(out, y, *L.out_proj, L.out_proj_bias ? L.out_proj_bias->data() : nullptr, T, H, I);
    for (int64_t k = 0; k < T * H; ++k) hidden[k] += out[k];
  }

  MambaConfig cfg_;
  const Param *embed_ = nullptr, *head_ = nullptr, *norm_f_ = nullptr;
  std::vector<MambaLayer> layers_;
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
