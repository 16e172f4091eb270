#include "models/layer_stack.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace kllens {
namespace {

const float* data_or_null(const Param* p) { return p ? p->data() : nullptr; }

// Conv and SSM states of one Mamba mixer.
class SsmState : public MixerState {
 public:
  SsmState(size_t conv_size, size_t ssm_size) : conv(conv_size, 0.0f), ssm(ssm_size, 0.0f) {}
  size_t bytes() const override { return (conv.size() + ssm.size()) * sizeof(float); }
  std::vector<float> conv, ssm;
};

class KvState : public MixerState {
 public:
  size_t bytes() const override { return cache.bytes(); }
  KvCache cache;
};

template <class State>
State& state_as(MixerState* state) {
  auto* s = dynamic_cast<State*>(state);
  KLLENS_CHECK(s != nullptr, "a mixer was given the decode state of another kind of mixer");
  return *s;
}

class ParallelState : public MixerState {
 public:
  std::vector<std::unique_ptr<MixerState>> branches;  // per branch, or null
  size_t bytes() const override {
    size_t n = 0;
    for (const auto& b : branches)
      if (b) n += b->bytes();
    return n;
  }
};

class StackForwardState : public ForwardState {
 public:
  std::vector<std::vector<float>> slots;  // StackCarry::slots
  std::unique_ptr<ForwardState> clone() const override {
    return std::make_unique<StackForwardState>(*this);
  }
  size_t bytes() const override {
    size_t n = hidden.size();
    for (const auto& slot : slots) n += slot.size();
    return n * sizeof(float);
  }
};

class StackDecodeState : public DecodeState {
 public:
  std::vector<std::vector<std::unique_ptr<MixerState>>> layers;  // per layer, per block (or null)
  size_t bytes() const override {
    size_t n = 0;
    for (const auto& blocks : layers)
      for (const auto& s : blocks)
        if (s) n += s->bytes();
    return n;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Mixers

void Mamba1MixerBlock::bind(const Weights& weights, const std::string& p) {
  in_proj = &weights.get(p + "in_proj.weight");
  in_proj_bias = weights.find(p + "in_proj.bias");
  out_proj = &weights.get(p + "out_proj.weight");
  out_proj_bias = weights.find(p + "out_proj.bias");
  ssm.conv = &weights.get(p + "conv1d.weight");
  ssm.conv_bias = weights.find(p + "conv1d.bias");
  ssm.x_proj = &weights.get(p + "x_proj.weight");
  ssm.dt_proj = &weights.get(p + "dt_proj.weight");
  ssm.dt_bias = &weights.get(p + "dt_proj.bias");
  ssm.D = &weights.get(p + "D");
  ssm.set_A(weights.get(p + "A_log"));
}

std::unique_ptr<MixerState> Mamba1MixerBlock::new_state() const {
  return std::make_unique<SsmState>(ssm.conv_state_size(), ssm.ssm_state_size());
}

void Mamba1MixerBlock::forward(float* out, const float* x, int64_t T, const int64_t*,
                               MixerState* state) const {
  const int64_t I = ssm.inner;
  thread_local ScratchVec xz_buf, y_buf, conv_buf, ssm_buf;  // xz and y written whole before read
  float *conv_state = nullptr, *ssm_state = nullptr;
  if (state) {
    auto& s = state_as<SsmState>(state);
    conv_state = s.conv.data();
    ssm_state = s.ssm.data();
  } else {  // a fresh sequence starts from zero states
    conv_state = conv_buf.zeroed(ssm.conv_state_size());
    ssm_state = ssm_buf.zeroed(ssm.ssm_state_size());
  }
  // xz {T, 2I} = in_proj(u): x = columns [0, I), gate z = columns [I, 2I)
  float* xz = xz_buf.get(static_cast<size_t>(T * 2 * I));
  linear(xz, x, *in_proj, data_or_null(in_proj_bias), T, 2 * I, hidden);
  float* y = y_buf.get(static_cast<size_t>(T * I));
  ssm.forward(y, xz, 2 * I, xz + I, 2 * I, T, conv_state, ssm_state);
  linear(out, y, *out_proj, data_or_null(out_proj_bias), T, hidden, I);
}

std::unique_ptr<MixerState> Mamba2MixerBlock::new_state() const {
  return std::make_unique<SsmState>(mixer.conv_state_size(), mixer.ssm_state_size());
}

void Mamba2MixerBlock::forward(float* out, const float* x, int64_t T, const int64_t*,
                               MixerState* state) const {
  if (state) {
    auto& s = state_as<SsmState>(state);
    mixer.forward(out, x, T, s.conv.data(), s.ssm.data());
    return;
  }
  thread_local ScratchVec conv_buf, ssm_buf;  // a fresh sequence starts from zero states
  mixer.forward(out, x, T, conv_buf.zeroed(mixer.conv_state_size()),
                ssm_buf.zeroed(mixer.ssm_state_size()));
}

void AttentionMixer::add_specs(std::vector<TensorSpec>& specs, const std::string& p, int l,
                               int64_t H, int64_t heads, int64_t kv_heads, int64_t head_dim,
                               bool bias) {
  const int64_t Q = heads * head_dim, KV = kv_heads * head_dim;
  specs.push_back({p + "q_proj.weight", Role::kQ, l, {Q, H}});
  specs.push_back({p + "k_proj.weight", Role::kK, l, {KV, H}});
  specs.push_back({p + "v_proj.weight", Role::kV, l, {KV, H}});
  specs.push_back({p + "o_proj.weight", Role::kO, l, {H, Q}});
  if (bias) {
    specs.push_back({p + "q_proj.bias", Role::kBias, l, {Q}});
    specs.push_back({p + "k_proj.bias", Role::kBias, l, {KV}});
    specs.push_back({p + "v_proj.bias", Role::kBias, l, {KV}});
    specs.push_back({p + "o_proj.bias", Role::kBias, l, {H}});
  }
}

void AttentionMixer::bind(const Weights& weights, const std::string& p) {
  q = &weights.get(p + "q_proj.weight");
  k = &weights.get(p + "k_proj.weight");
  v = &weights.get(p + "v_proj.weight");
  o = &weights.get(p + "o_proj.weight");
  q_bias = weights.find(p + "q_proj.bias");
  k_bias = weights.find(p + "k_proj.bias");
  v_bias = weights.find(p + "v_proj.bias");
  o_bias = weights.find(p + "o_proj.bias");
}

std::unique_ptr<AttentionMixer> AttentionMixer::bound(const Weights& weights, const std::string& prefix,
                                                      int64_t hidden, int64_t heads,
                                                      int64_t kv_heads, int64_t head_dim) {
  auto a = std::make_unique<AttentionMixer>();
  a->hidden = hidden;
  a->heads = heads;
  a->kv_heads = kv_heads;
  a->head_dim = head_dim;
  a->bind(weights, prefix);
  return a;
}

std::unique_ptr<MixerState> AttentionMixer::new_state() const {
  auto s = std::make_unique<KvState>();
  s->cache.init(kv_heads * head_dim, kv_heads * head_dim, 0, 0);
  return s;
}

void AttentionMixer::forward(float* out, const float* x, int64_t T, const int64_t* pos,
                             MixerState* state) const {
  const int64_t D = head_dim, Q = heads * D, KV = kv_heads * D;
  thread_local ScratchVec q_buf, k_buf, v_buf, attn_buf;  // each written whole before it is read
  // q {T, heads, D}, k, v {T, kv_heads, D}
  float* qr = q_buf.get(static_cast<size_t>(T * Q));
  float* kr = k_buf.get(static_cast<size_t>(T * KV));
  float* vr = v_buf.get(static_cast<size_t>(T * KV));
  linear(qr, x, *q, data_or_null(q_bias), T, Q, hidden);
  linear(kr, x, *k, data_or_null(k_bias), T, KV, hidden);
  linear(vr, x, *v, data_or_null(v_bias), T, KV, hidden);
  if (key_scale != 1.0f)
    for (int64_t i = 0; i < T * KV; ++i) kr[i] *= key_scale;
  if (!inv_freq.empty()) {  // apply_rotary_pos_emb (rotate_half) on q and k
    ops::apply_rope(qr, Q, T, heads, D, pos, inv_freq.data(), D);
    ops::apply_rope(kr, KV, T, kv_heads, D, pos, inv_freq.data(), D);
  }
  float* attn = attn_buf.get(static_cast<size_t>(T * Q));
  ops::AttentionShape shape;
  shape.T = T;
  shape.Hq = heads;
  shape.Hkv = kv_heads;
  shape.Dk = D;
  shape.Dv = D;
  const float softmax_scale = scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(D));
  if (state) {
    KvCache& cache = state_as<KvState>(state).cache;
    cache.append(kr, KV, vr, KV, pos, T);
    KLLENS_CHECK(cache.evicted() == 0, "an unbounded KV cache evicted rows");
    shape.S = cache.rows();
    ops::attention(attn, qr, cache.k.data(), cache.v.data(), pos, cache.pos.data(), shape, 0, 0,
                   softmax_scale);
  } else {
    shape.S = T;
    ops::attention(attn, qr, kr, vr, pos, pos, shape, 0, 0, softmax_scale);
  }
  linear(out, attn, *o, data_or_null(o_bias), T, hidden, Q);
}

void SwiGluMixer::forward(float* out, const float* x, int64_t T, const int64_t*,
                          MixerState*) const {
  mlp.forward(out, x, T);
}

std::unique_ptr<MixerState> ParallelMixer::new_state() const {
  auto s = std::make_unique<ParallelState>();
  for (const Branch& b : branches) s->branches.push_back(b.mixer->new_state());
  return s;
}

std::string ParallelMixer::kind() const {
  std::string k;
  for (const Branch& b : branches) k += (k.empty() ? "" : "|") + b.mixer->kind();
  return "parallel(" + k + ")";
}

void ParallelMixer::forward(float* out, const float* x, int64_t T, const int64_t* pos,
                            MixerState* state) const {
  ParallelState* ps = state ? &state_as<ParallelState>(state) : nullptr;
  constexpr size_t kMaxBranches = 4;
  KLLENS_CHECK(!branches.empty() && branches.size() <= kMaxBranches,
               "{} parallel branches (1 to {})", branches.size(), kMaxBranches);
  // One input and one output buffer per branch, each written whole before it is read.
  thread_local ScratchVec in_bufs[kMaxBranches], out_bufs[kMaxBranches];
  const auto n = static_cast<size_t>(T * hidden);
  float* outs[kMaxBranches] = {};
  for (size_t b = 0; b < branches.size(); ++b) {
    const Branch& br = branches[b];
    const float* in = x;
    if (br.in_scale != 1.0f) {
      float* scaled = in_bufs[b].get(n);
      for (size_t i = 0; i < n; ++i) scaled[i] = x[i] * br.in_scale;
      in = scaled;
    }
    outs[b] = out_bufs[b].get(n);
    br.mixer->forward(outs[b], in, T, pos, ps ? ps->branches[b].get() : nullptr);
  }
  for (size_t i = 0; i < n; ++i) {
    float sum = outs[0][i] * branches[0].out_scale;
    for (size_t b = 1; b < branches.size(); ++b) sum += outs[b][i] * branches[b].out_scale;
    out[i] = sum;
  }
}

std::string MoeMixer::kind() const {
  return fmt::format("moe({} experts, top-{})", experts.size(), top_k);
}

void MoeMixer::forward(float* out, const float* x, int64_t T, const int64_t*, MixerState*) const {
  const int64_t H = hidden, E = static_cast<int64_t>(experts.size()), K = top_k;
  thread_local ScratchVec probs_buf, weight_buf, xin_buf, yout_buf;
  thread_local Scratch<uint8_t> selected_buf;
  thread_local Scratch<int64_t> order_buf;
  thread_local std::vector<int64_t> rows;
  const auto TE = static_cast<size_t>(T * E);
  float* probs = probs_buf.get(TE);
  linear(probs, x, *router, nullptr, T, E, H);
  // weight {T, E}: the routing weight of expert e for token t where selected[t, e]. Both are
  // set only where an expert is selected, so they start from zeros.
  float* weight = weight_buf.zeroed(TE);
  uint8_t* selected = selected_buf.zeroed(TE);
  int64_t* order = order_buf.get(static_cast<size_t>(E));
  // softmax over p[order[0..n)] in place (float32, max subtracted).
  const auto softmax = [](float* p, const int64_t* idx, int64_t n) {
    float mx = p[idx[0]];
    for (int64_t j = 1; j < n; ++j) mx = std::max(mx, p[idx[j]]);
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      p[idx[j]] = std::exp(p[idx[j]] - mx);
      sum += p[idx[j]];
    }
    for (int64_t j = 0; j < n; ++j) p[idx[j]] /= sum;
  };
  for (int64_t t = 0; t < T; ++t) {
    float* p = probs + t * E;
    for (int64_t e = 0; e < E; ++e) order[e] = e;
    if (!renormalize) softmax(p, order, E);
    // torch.topk: largest first (of the probabilities, or of the logits: the same order); ties
    // go to the lower index here.
    std::partial_sort(order, order + K, order + E, [p](int64_t a, int64_t b) {
      return p[a] > p[b] || (p[a] == p[b] && a < b);
    });
    if (renormalize) softmax(p, order, K);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = order[j];
      weight[t * E + e] = p[e];
      selected[t * E + e] = 1;
    }
  }
  std::fill(out, out + T * H, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    rows.clear();
    for (int64_t t = 0; t < T; ++t)
      if (selected[t * E + e]) rows.push_back(t);
    if (rows.empty()) continue;
    const auto n = static_cast<int64_t>(rows.size());
    float* xin = xin_buf.get(static_cast<size_t>(n * H));
    float* yout = yout_buf.get(static_cast<size_t>(n * H));
    for (int64_t r = 0; r < n; ++r) std::copy_n(x + rows[r] * H, H, xin + r * H);
    experts[static_cast<size_t>(e)].forward(yout, xin, n);
    for (int64_t r = 0; r < n; ++r) {
      const float w = weight[rows[r] * E + e];
      float* o = out + rows[r] * H;
      const float* yr = yout + r * H;
      for (int64_t i = 0; i < H; ++i) o[i] += yr[i] * w;
    }
  }
}

void Relu2MlpMixer::forward(float* out, const float* x, int64_t T, const int64_t*,
                            MixerState*) const {
  thread_local ScratchVec u_buf;  // written whole before it is read
  const int64_t n = T * ffn;
  float* u = u_buf.get(static_cast<size_t>(n));
  linear(u, x, *up, data_or_null(up_bias), T, ffn, hidden);
  for (int64_t i = 0; i < n; ++i) {
    const float r = u[i] > 0.0f ? u[i] : 0.0f;  // torch.square(relu(x))
    u[i] = r * r;
  }
  linear(out, u, *down, data_or_null(down_bias), T, hidden, ffn);
}

// ---------------------------------------------------------------------------------------------
// The stack

void LayerStackModel::finish_stack(std::string arch, const std::string& folder) {
  info_.arch = std::move(arch);
  info_.folder = folder;
  info_.n_layers = static_cast<int64_t>(layers_.size());
  info_.d_model = ends_.embed->cols();
  info_.vocab = ends_.head->rows();
  info_.n_prefix_tokens = ends_.prefix ? ends_.prefix->rows() : 0;
  info_.layer_kinds.clear();
  for (const StackLayer& layer : layers_) {
    std::string kind = layer.kind;
    if (kind.empty())
      for (const ResidualBlock& b : layer.blocks) kind += (kind.empty() ? "" : "+") + b.mixer->kind();
    info_.layer_kinds.push_back(kind);
  }
}

void LayerStackModel::add_mamba2_details(const Mamba2Mixer& m) {
  add_detail("d_inner", std::to_string(m.inner));
  add_detail("ssm_heads", std::to_string(m.heads));
  add_detail("ssm_head_dim", std::to_string(m.head_dim));
  add_detail("n_groups", std::to_string(m.groups));
  add_detail("d_state", std::to_string(m.state));
  add_detail("d_conv", std::to_string(m.conv_kernel));
  add_detail("gated_norm", gated_norm_description(m));
}

void LayerStackModel::run_blocks(const StackLayer& layer, float* hidden, int64_t T,
                                 const int64_t* pos,
                                 std::vector<std::unique_ptr<MixerState>>* states,
                                 const StackCarry& carry) const {
  const int64_t H = info_.d_model;
  thread_local ScratchVec normed_buf, out_buf;  // each written whole before it is read
  float* normed = normed_buf.get(static_cast<size_t>(T * H));
  float* out = out_buf.get(static_cast<size_t>(T * H));
  for (size_t b = 0; b < layer.blocks.size(); ++b) {
    const ResidualBlock& block = layer.blocks[b];
    ops::rmsnorm(normed, hidden, block.norm->data(), T, H, block.eps);
    block.mixer->forward_carried(out, normed, T, pos, states ? (*states)[b].get() : nullptr, carry);
    if (block.residual_scale == 1.0f) {
      for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i];
    } else {
      const float s = block.residual_scale;
      for (int64_t i = 0; i < T * H; ++i) hidden[i] += out[i] * s;
    }
  }
}

void LayerStackModel::embed(std::span<const int32_t> ids, ForwardState& s) const {
  embed_tokens(*ends_.embed, ids, s);
  if (ends_.embedding_scale != 1.0f)
    for (float& x : s.hidden) x *= ends_.embedding_scale;
}

std::unique_ptr<ForwardState> LayerStackModel::start(std::span<const int32_t> ids) const {
  check_ids(ids);
  auto s = std::make_unique<StackForwardState>();
  embed(ids, *s);
  if (ends_.prefix) {  // the prefix rows first; positions run over both
    const int64_t M = ends_.prefix->rows(), H = info_.d_model;
    s->hidden.insert(s->hidden.begin(), ends_.prefix->data(), ends_.prefix->data() + M * H);
    s->rows += M;
  }
  s->slots.resize(carry_slots_);
  return s;
}

void LayerStackModel::run_layer(int l, ForwardState& base) const {
  auto* s = dynamic_cast<StackForwardState*>(&base);
  KLLENS_CHECK(s != nullptr, "run_layer was given a forward state of another model");
  thread_local Scratch<int64_t> pos_buf;
  int64_t* pos = pos_buf.get(static_cast<size_t>(s->rows));
  for (int64_t t = 0; t < s->rows; ++t) pos[t] = t;
  StackCarry carry;
  carry.slots = &s->slots;
  run_blocks(layers_[static_cast<size_t>(l)], s->hidden.data(), s->rows, pos, nullptr, carry);
  s->next_layer = l + 1;
}

void LayerStackModel::finish(const ForwardState& s, float* logits) const {
  // The prefix rows are never scored.
  const int64_t M = ends_.prefix ? ends_.prefix->rows() : 0;
  KLLENS_CHECK(s.rows >= M, "forward state has {} rows, fewer than the {} prefix rows", s.rows, M);
  head(s.hidden.data() + M * info_.d_model, s.rows - M, logits);
}

std::unique_ptr<DecodeState> LayerStackModel::new_decode_state() const {
  auto s = std::make_unique<StackDecodeState>();
  for (const StackLayer& layer : layers_) {
    auto& blocks = s->layers.emplace_back();
    for (const ResidualBlock& b : layer.blocks) blocks.push_back(b.mixer->new_state());
  }
  if (ends_.prefix) {  // the prefix rows run first, leaving their states and K/V behind
    const int64_t M = ends_.prefix->rows(), H = info_.d_model;
    std::vector<float> hidden(ends_.prefix->data(), ends_.prefix->data() + M * H);
    std::vector<int64_t> pos(static_cast<size_t>(M));
    for (int64_t t = 0; t < M; ++t) pos[static_cast<size_t>(t)] = t;
    StackCarry carry;
    carry.states = &s->layers;
    for (size_t l = 0; l < layers_.size(); ++l)
      run_blocks(layers_[l], hidden.data(), M, pos.data(), &s->layers[l], carry);
  }
  return s;
}

void LayerStackModel::decode_step(DecodeState& base, int32_t token, float* logits) const {
  auto* s = dynamic_cast<StackDecodeState*>(&base);
  KLLENS_CHECK(s != nullptr && s->layers.size() == layers_.size(),
               "decode_step was given a decode state of another model");
  check_ids(std::span<const int32_t>(&token, 1));
  // Kept across steps so that its row is allocated once; embed() overwrites it.
  thread_local StackForwardState fs;
  embed(std::span<const int32_t>(&token, 1), fs);
  const int64_t pos = s->position + (ends_.prefix ? ends_.prefix->rows() : 0);
  StackCarry carry;
  carry.states = &s->layers;
  for (size_t l = 0; l < layers_.size(); ++l)
    run_blocks(layers_[l], fs.hidden.data(), 1, &pos, &s->layers[l], carry);
  head(fs.hidden.data(), 1, logits);
  ++s->position;
}

void LayerStackModel::head(const float* hidden, int64_t T, float* logits) const {
  const int64_t H = info_.d_model, V = info_.vocab;
  thread_local ScratchVec normed_buf;  // written whole before it is read
  float* normed = normed_buf.get(static_cast<size_t>(T * H));
  ops::rmsnorm(normed, hidden, ends_.norm_f->data(), T, H, ends_.norm_eps);
  linear(logits, normed, *ends_.head, nullptr, T, V, H);
  if (ends_.logits_multiplier != 1.0f)
    for (int64_t i = 0; i < T * V; ++i) logits[i] *= ends_.logits_multiplier;
  if (ends_.logits_divisor != 1.0f)
    for (int64_t i = 0; i < T * V; ++i) logits[i] /= ends_.logits_divisor;
}

}  // namespace kllens
