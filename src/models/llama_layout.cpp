#include "models/llama_layout.h"

#include <cctype>
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "models/families.h"

namespace kllens {

// ---------------------------------------------------------------------------------------------
// Transforms

std::vector<int64_t> llama_file_shape(const LlamaTensor& t, const std::vector<int64_t>& s) {
  std::vector<int64_t> shape = s;
  switch (t.transform) {
    case LlamaTransform::kNone:
    case LlamaTransform::kRopePermute: break;
    case LlamaTransform::kNegExp:
      if (t.mamba2_a) shape = {shape[0], 1};
      break;
    case LlamaTransform::kSqueezeConv: shape = {shape[0], shape.back()}; break;
    case LlamaTransform::kColumn: shape = {shape[0], 1}; break;
    case LlamaTransform::kGroupNorm: shape = {t.n_group, shape[0] / t.n_group}; break;
  }
  if (t.stacked()) shape.insert(shape.begin(), t.n_expert);
  return shape;
}

int64_t llama_row(const LlamaTensor& t, int64_t r, int64_t rows) {
  if (t.transform != LlamaTransform::kRopePermute) return r;
  // llama.cpp's converter (LlamaModel.permute): per head, rows reshaped (2, D/2) and transposed,
  // so HF row j of a head goes to 2j and row j + D/2 to 2j + 1.
  const int64_t d = rows / t.n_head, half = d / 2, head = r / d, j = r % d;
  return head * d + (j < half ? 2 * j : 2 * (j - half) + 1);
}

namespace {

// The factor of row r (row_scales' segments).
double row_factor(const LlamaTensor& t, int64_t r) {
  int64_t start = 0;
  for (const auto& [n, f] : t.row_scales) {
    if (r < start + n) return f;
    start += n;
  }
  fail("internal: row {} is past the {} rows of {}'s scale segments", r, start, t.name);
}

}  // namespace

std::vector<float> to_llama_values(const LlamaTensor& t, const float* v, int64_t rows,
                                   int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float f = t.scaled() ? static_cast<float>(row_factor(t, r)) : 1.0f;
    float* dst = out.data() + llama_row(t, r, rows) * cols;
    const float* src = v + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      float x = src[c];
      if (t.transform == LlamaTransform::kNegExp) x = -std::exp(x);
      // Multiplied in float32 as the converter does (torch: tensor * float).
      dst[c] = t.scaled() ? x * f : x;
    }
  }
  return out;
}

std::vector<float> from_llama_values(const LlamaTensor& t, const float* v, int64_t rows,
                                     int64_t cols, const std::string& what) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = v + llama_row(t, r, rows) * cols;
    float* dst = out.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      float x = src[c];
      if (t.transform == LlamaTransform::kNegExp) {
        if (!(x < 0)) fail("{} holds {}, but ssm_a = -exp(A_log) is negative", what, x);
        x = std::log(-x);
      }
      dst[c] = x;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

void add_llama_embedding_and_head(LlamaLayout* out, const std::string& embed,
                                  const std::string& final_norm, const std::string& head) {
  out->tensors[embed] = {"token_embd.weight"};
  out->tensors[final_norm] = {"output_norm.weight"};
  out->tensors[head] = {"output.weight"};
}

std::string llama_blk(int layer) { return "blk." + std::to_string(layer) + "."; }

void add_llama_attention(LlamaLayout* out, const std::string& hf, int layer, int64_t rope_q_heads,
                         int64_t rope_kv_heads) {
  const std::string blk = llama_blk(layer);
  for (const char* suffix : {"weight", "bias"}) {
    const std::string s = suffix;
    LlamaTensor q{blk + "attn_q." + s}, k{blk + "attn_k." + s};
    if (rope_q_heads > 0) {
      q.transform = k.transform = LlamaTransform::kRopePermute;
      q.n_head = rope_q_heads;
      k.n_head = rope_kv_heads;
    }
    out->tensors[hf + "q_proj." + s] = q;
    out->tensors[hf + "k_proj." + s] = k;
    out->tensors[hf + "v_proj." + s] = {blk + "attn_v." + s};
    out->tensors[hf + "o_proj." + s] = {blk + "attn_output." + s};
  }
}

void add_llama_swiglu(LlamaLayout* out, const std::string& hf, int layer) {
  const std::string blk = llama_blk(layer);
  for (const char* suffix : {"weight", "bias"}) {
    const std::string s = suffix;
    out->tensors[hf + "gate_proj." + s] = {blk + "ffn_gate." + s};
    out->tensors[hf + "up_proj." + s] = {blk + "ffn_up." + s};
    out->tensors[hf + "down_proj." + s] = {blk + "ffn_down." + s};
  }
}

void add_llama_key(LlamaLayout* out, const std::string& suffix, gguf::Value value) {
  out->keys.emplace_back(out->arch + "." + suffix, std::move(value));
}

void add_llama_key(LlamaLayout* out, const std::string& suffix, int64_t value) {
  KLLENS_CHECK(value >= 0 && value <= UINT32_MAX, "{}.{} = {} does not fit a u32", out->arch,
               suffix, value);
  add_llama_key(out, suffix, gguf::Value(static_cast<uint32_t>(value)));
}

void add_llama_size_keys(LlamaLayout* out, int64_t context_length, int64_t embedding_length,
                         int64_t block_count, int64_t feed_forward_length) {
  add_llama_key(out, "context_length", context_length);
  add_llama_key(out, "embedding_length", embedding_length);
  add_llama_key(out, "block_count", block_count);
  add_llama_key(out, "feed_forward_length", feed_forward_length);
}

void add_llama_head_keys(LlamaLayout* out, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  add_llama_key(out, "attention.head_count", heads);
  add_llama_key(out, "attention.head_count_kv", kv_heads);
  add_llama_key(out, "attention.key_length", head_dim);
  add_llama_key(out, "attention.value_length", head_dim);
}

std::string llama_layout_covers(const LlamaLayout& layout, const std::vector<TensorSpec>& tensors) {
  for (const TensorSpec& t : tensors)
    if (!layout.tensors.count(t.name))
      return fmt::format("llama.cpp's {} has no tensor for {}", layout.arch, t.name);
  return "";
}

// ---------------------------------------------------------------------------------------------
// Mamba / Mamba-2 (llama.cpp's mamba and mamba2), from the tensor shapes: the config's defaults
// differ between transformers versions; the shapes do not.

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

std::optional<LlamaTensor> mamba_tensor(const std::string& hf, bool mamba2, int64_t n_group) {
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
  if (rest == "mixer.A_log") {
    LlamaTensor t{blk + "ssm_a", T::kNegExp};
    t.mamba2_a = mamba2;
    return t;
  }
  if (!mamba2) {
    if (rest == "mixer.x_proj.weight") return LlamaTensor{blk + "ssm_x.weight"};
    if (rest == "mixer.dt_proj.weight") return LlamaTensor{blk + "ssm_dt.weight"};
    if (rest == "mixer.dt_proj.bias") return LlamaTensor{blk + "ssm_dt.bias"};
    if (rest == "mixer.D") return LlamaTensor{blk + "ssm_d"};
  } else {
    if (rest == "mixer.dt_bias") return LlamaTensor{blk + "ssm_dt.bias"};
    if (rest == "mixer.D") return LlamaTensor{blk + "ssm_d", T::kColumn};
    if (rest == "mixer.norm.weight") {
      LlamaTensor t{blk + "ssm_norm.weight", T::kGroupNorm};
      t.n_group = n_group;
      return t;
    }
  }
  return std::nullopt;
}

const TensorSpec* find_spec(const std::vector<TensorSpec>& tensors, const std::string& name) {
  for (const TensorSpec& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string mamba_layout(const HfConfig& config, const std::vector<TensorSpec>& tensors,
                         bool mamba2, LlamaLayout* out) {
  const std::string family = mamba2 ? "mamba2" : "mamba";
  const TensorSpec* embed = find_spec(tensors, "backbone.embeddings.weight");
  if (!embed) embed = find_spec(tensors, "backbone.embedding.weight");
  int64_t n_layer = 0;
  for (const TensorSpec& t : tensors) n_layer = std::max<int64_t>(n_layer, t.layer + 1);
  if (!embed || n_layer < 1) return "the checkpoint has no embedding or no layers";
  const int64_t d_model = embed->shape[1];
  const std::string p0 = "backbone.layers.0.mixer.";
  const TensorSpec* conv = find_spec(tensors, p0 + "conv1d.weight");
  const TensorSpec* a = find_spec(tensors, p0 + "A_log");
  if (!conv || !a) return "layer 0 has no conv1d or A_log";
  const int64_t d_conv = conv->shape.back();
  for (int64_t l = 0; l < n_layer; ++l)
    if (!find_spec(tensors, "backbone.layers." + std::to_string(l) + ".mixer.conv1d.bias"))
      return fmt::format("llama.cpp's {} requires a conv1d bias (use_conv_bias = false here)",
                         family);
  int64_t d_inner = 0, d_state = 0, dt_rank = 0, n_group = 1;
  if (!mamba2) {
    d_inner = a->shape[0];
    d_state = a->shape[1];
    const TensorSpec* dt = find_spec(tensors, p0 + "dt_proj.weight");
    if (!dt) return "layer 0 has no dt_proj";
    dt_rank = dt->shape[1];
  } else {
    const TensorSpec* norm = find_spec(tensors, p0 + "norm.weight");
    if (!norm) return "layer 0 has no gated norm";
    d_inner = norm->shape[0];
    dt_rank = a->shape[0];  // n_head: llama.cpp's ssm.time_step_rank for Mamba-2
    n_group = config.json().value("n_groups", int64_t{8});
    const int64_t conv_dim = conv->shape[0];
    if (n_group <= 0 || (conv_dim - d_inner) % (2 * n_group) != 0 || d_inner % n_group != 0)
      return fmt::format("n_groups = {} does not divide the conv width {} - d_inner {}", n_group,
                         conv_dim, d_inner);
    d_state = (conv_dim - d_inner) / (2 * n_group);
  }
  if (d_inner != 2 * d_model)
    return fmt::format("llama.cpp supports only d_inner = 2 * d_model (here {} and {})", d_inner,
                       d_model);
  for (const TensorSpec& t : tensors) {
    const auto lt = mamba_tensor(t.name, mamba2, n_group);
    if (!lt) return fmt::format("llama.cpp's {} has no tensor for {}", family, t.name);
    out->tensors[t.name] = *lt;
  }
  out->arch = family;
  add_llama_size_keys(out, int64_t{1} << 20, d_model, n_layer, 0);  // context: no limit, as the converter
  add_llama_key(out, "attention.head_count", 0);
  add_llama_key(out, "ssm.conv_kernel", d_conv);
  add_llama_key(out, "ssm.inner_size", d_inner);
  add_llama_key(out, "ssm.state_size", d_state);
  add_llama_key(out, "ssm.time_step_rank", dt_rank);
  if (mamba2) add_llama_key(out, "ssm.group_count", n_group);
  add_llama_key(out, "attention.layer_norm_rms_epsilon",
                gguf::Value(static_cast<float>(config.json().value("layer_norm_epsilon", 1e-5))));
  if (mamba2 && config.json().contains("time_step_limit")) {
    const auto& lim = config.json()["time_step_limit"];
    const bool default_limit = lim.is_array() && lim.size() == 2 && lim[0].is_number() &&
                               lim[0].get<double>() == 0.0 && !lim[1].is_number();
    if (!default_limit) out->notes.push_back("time_step_limit is not (0, inf): llama.cpp does not clamp dt");
  }
  return "";
}

}  // namespace

std::string mamba_llama_layout(const HfConfig& config, const std::vector<TensorSpec>& tensors,
                               LlamaLayout* out) {
  return mamba_layout(config, tensors, false, out);
}

std::string mamba2_llama_layout(const HfConfig& config, const std::vector<TensorSpec>& tensors,
                                LlamaLayout* out) {
  return mamba_layout(config, tensors, true, out);
}

std::string llama_layout(const Model& model, const HfConfig& config, LlamaLayout* out) {
  std::vector<TensorSpec> tensors;
  for (const auto& p : model.weights().all())
    tensors.push_back({p->name, p->role, p->layer, p->shape});
  return llama_layout(config, tensors, out);
}

std::string gguf_tensor_name(const Model& model, const std::string& hf_name) {
  const LlamaLayout* layout = model.llama_layout();
  if (!layout) return hf_name;
  const auto it = layout->tensors.find(hf_name);
  return it != layout->tensors.end() ? it->second.name : hf_name;
}

}  // namespace kllens
