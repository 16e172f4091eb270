#include "models/mamba2_mixer.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/scratch.h"
#include "io/hf_config.h"
#include "kernels/ops.h"
#include "kernels/ssd.h"
#include "kernels/ssm.h"

namespace kllens {
namespace {

// One element of time_step_limit as Python would have written it.
bool json_float(const nlohmann::json& v, double& out) {
  if (v.is_number()) {
    out = v.get<double>();
    return true;
  }
  std::string s;
  if (v.is_string()) {
    s = v.get<std::string>();
  } else if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
    s = v["__float__"].get<std::string>();
  } else {
    return false;
  }
  std::string lower;
  for (char ch : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower == "inf" || lower == "infinity" || lower == "+inf" || lower == "+infinity") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (lower == "-inf" || lower == "-infinity") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  return false;
}

// rmsnorm of each of the `groups` consecutive slices of a row {D}, weight {D}, in place.
void rmsnorm_groups(float* y, const float* weight, int64_t T, int64_t D, int64_t groups,
                    float eps) {
  const int64_t Dg = D / groups;
  if (groups == 1) {
    ops::rmsnorm(y, y, weight, T, D, eps);
    return;
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < groups; ++g)
      ops::rmsnorm(y + t * D + g * Dg, y + t * D + g * Dg, weight + g * Dg, 1, Dg, eps);
}

}  // namespace

TimeStepLimit parse_time_step_limit(const HfConfig& config, const char* key) {
  TimeStepLimit lim;
  if (!config.has(key)) return lim;
  const auto& v = config.json()[key];
  double lo = 0, hi = 0;
  if (!v.is_array() || v.size() != 2 || !json_float(v[0], lo) || !json_float(v[1], hi))
    config.invalid(key, "must be a pair [min, max] of numbers (infinity as \"inf\" or "
                        "{\"__float__\": \"Infinity\"}), got " + v.dump());
  if (std::isnan(lo) || std::isnan(hi) || lo > hi)
    config.invalid(key, "must satisfy min <= max, got " + v.dump());
  lim.lo = static_cast<float>(lo);
  lim.hi = static_cast<float>(hi);
  return lim;
}

Mamba2Mixer gate_then_norm_mixer(int64_t hidden, int64_t heads, int64_t head_dim, int64_t groups,
                                 int64_t state, int64_t conv_kernel, Mamba2GatedNorm norm,
                                 float eps, TimeStepLimit dt_limit) {
  Mamba2Mixer m;
  m.hidden = hidden;
  m.inner = heads * head_dim;
  m.heads = heads;
  m.head_dim = head_dim;
  m.groups = groups;
  m.state = state;
  m.conv_kernel = conv_kernel;
  m.norm_kind = norm == Mamba2GatedNorm::kFullWidth ? GatedNorm::kGateThenNormFull
                                                    : GatedNorm::kGateThenNormGroup;
  m.norm_eps = eps;
  m.dt_limit = dt_limit;
  return m;
}

std::string gated_norm_description(const Mamba2Mixer& m) {
  if (m.groups == 1) return "gate, then RMS over d_inner (n_groups = 1)";
  if (m.norm_kind == GatedNorm::kGateThenNormFull)
    return fmt::format("gate, then RMS over all of d_inner = {} (transformers' CPU path; "
                       "--mamba2-norm full)",
                       m.inner);
  return fmt::format("gate, then RMS per group of {} channels (mamba_ssm, llama.cpp)",
                     m.inner / m.groups);
}

void Mamba2Mixer::add_specs(std::vector<TensorSpec>& specs, const std::string& p, int l,
                           bool proj_bias, bool conv_bias_on) const {
  const int64_t W = proj_dim(), CD = conv_dim(), NH = heads;
  specs.push_back({p + "in_proj.weight", Role::kInProj, l, {W, hidden}});
  if (proj_bias) specs.push_back({p + "in_proj.bias", Role::kBias, l, {W}});
  specs.push_back({p + "conv1d.weight", Role::kConv1d, l, {CD, 1, conv_kernel}});
  if (conv_bias_on) specs.push_back({p + "conv1d.bias", Role::kBias, l, {CD}});
  specs.push_back({p + "dt_bias", Role::kDtBias, l, {NH}});
  specs.push_back({p + "A_log", Role::kSsmA, l, {NH}});
  specs.push_back({p + "D", Role::kSsmD, l, {NH}});
  if (norm_kind != GatedNorm::kNone) specs.push_back({p + "norm.weight", Role::kNorm, l, {inner}});
  specs.push_back({p + "out_proj.weight", Role::kOutProj, l, {hidden, inner}});
  if (proj_bias) specs.push_back({p + "out_proj.bias", Role::kBias, l, {hidden}});
}

void Mamba2Mixer::bind(const Weights& weights, const std::string& p) {
  in_proj = &weights.get(p + "in_proj.weight");
  in_proj_bias = weights.find(p + "in_proj.bias");
  conv = &weights.get(p + "conv1d.weight");
  conv_bias = weights.find(p + "conv1d.bias");
  dt_bias = &weights.get(p + "dt_bias");
  D = &weights.get(p + "D");
  norm = norm_kind == GatedNorm::kNone ? nullptr : &weights.get(p + "norm.weight");
  out_proj = &weights.get(p + "out_proj.weight");
  out_proj_bias = weights.find(p + "out_proj.bias");
  set_A(weights.get(p + "A_log"));
}

void Mamba2Mixer::set_A(const Param& a_log) {
  A.resize(a_log.value.size());
  for (size_t i = 0; i < A.size(); ++i) A[i] = -std::exp(a_log.value[i]);
}

void Mamba2Mixer::set_proj_multipliers(const std::vector<double>& m) {
  const int64_t I = inner, GN = groups * state;
  proj_scale.assign(static_cast<size_t>(proj_dim()), 1.0f);
  // HF compute_mup_vector: [z: I | x: I | B: GN | C: GN | dt: H]
  const int64_t bounds[6] = {0, I, 2 * I, 2 * I + GN, 2 * I + 2 * GN, proj_dim()};
  for (int k = 0; k < 5; ++k)
    for (int64_t j = bounds[k]; j < bounds[k + 1]; ++j)
      proj_scale[static_cast<size_t>(j)] = static_cast<float>(m[static_cast<size_t>(k)]);
}

void Mamba2Mixer::forward(float* out, const float* u, int64_t T, float* conv_state,
                          float* ssm_state) const {
  const int64_t I = inner, H = heads, P = head_dim, G = groups, N = state;
  const int64_t CD = conv_dim(), W = proj_dim();
  // Every buffer below is written whole before it is read.
  thread_local ScratchVec scaled_buf, proj_buf, xbc_buf, dt_buf, y_buf;
  // Falcon-H1: input_states * ssm_in_multiplier
  if (in_multiplier != 1.0f) {
    float* scaled = scaled_buf.get(static_cast<size_t>(T * hidden));
    for (int64_t k = 0; k < T * hidden; ++k) scaled[k] = u[k] * in_multiplier;
    u = scaled;
  }
  // zxbcdt {T, I + CD + H} = in_proj(u) [* mup_vector]:  z = [0, I), xBC = [I, I + CD), dt = [I + CD, W)
  float* proj = proj_buf.get(static_cast<size_t>(T * W));
  linear(proj, u, *in_proj, in_proj_bias ? in_proj_bias->data() : nullptr, T, W, hidden);
  if (!proj_scale.empty())
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < W; ++j) proj[t * W + j] *= proj_scale[static_cast<size_t>(j)];
  // xBC {T, CD} = silu(conv1d(xBC)): x = [0, I), B = [I, I + GN), C = [I + GN, CD)
  float* xbc = xbc_buf.get(static_cast<size_t>(T * CD));
  ops::causal_conv1d(xbc, proj + I, W, conv->data(),
                     conv_bias ? conv_bias->data() : nullptr, conv_state, T, CD, conv_kernel, true);
  // dt {T, H} = clamp(softplus(dt + dt_bias), time_step_limit)
  float* dt = dt_buf.get(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const float v = ops::softplus(proj[t * W + I + CD + h] + dt_bias->data()[h]);
      dt[t * H + h] = std::min(std::max(v, dt_limit.lo), dt_limit.hi);
    }
  // y {T, H, P} = SSD scan over the carried state {H, P, N}
  float* y = y_buf.get(static_cast<size_t>(T * I));
  ops::ssd_scan(y, ssm_state, xbc, CD, dt, H, A.data(), xbc + I, xbc + I + G * N, CD, D->data(), T,
                H, P, G, N);
  // gated norm with z = proj[:, 0:I)
  const float* z = proj;
  auto gate = [&] {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) y[t * I + i] *= ops::silu(z[t * W + i]);
  };
  switch (norm_kind) {
    case GatedNorm::kNone:
      gate();
      break;
    case GatedNorm::kGateThenNormFull:
      gate();
      rmsnorm_groups(y, norm->data(), T, I, 1, norm_eps);
      break;
    case GatedNorm::kGateThenNormGroup:
      gate();
      rmsnorm_groups(y, norm->data(), T, I, G, norm_eps);
      break;
    case GatedNorm::kNormThenGateGroup:
      rmsnorm_groups(y, norm->data(), T, I, G, norm_eps);
      gate();
      break;
  }
  // out {T, hidden} = out_proj(y)
  linear(out, y, *out_proj, out_proj_bias ? out_proj_bias->data() : nullptr, T, hidden, I);
}

}  // namespace kllens
