#include "models/llama_layout.h"

#include <cctype>
#include <cmath>
#include <optional>
#include <type_traits>
#include <variant>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
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

void add_llama_mamba2_mixer(LlamaLayout* out, const std::string& hf, int layer, int64_t n_group) {
  using T = LlamaTransform;
  const std::string blk = llama_blk(layer);
  out->tensors[hf + "in_proj.weight"] = {blk + "ssm_in.weight"};
  out->tensors[hf + "conv1d.weight"] = {blk + "ssm_conv1d.weight", T::kSqueezeConv};
  out->tensors[hf + "conv1d.bias"] = {blk + "ssm_conv1d.bias"};
  out->tensors[hf + "dt_bias"] = {blk + "ssm_dt.bias"};
  LlamaTensor a{blk + "ssm_a", T::kNegExp};
  a.mamba2_a = true;
  out->tensors[hf + "A_log"] = a;
  out->tensors[hf + "D"] = {blk + "ssm_d", T::kColumn};
  LlamaTensor norm{blk + "ssm_norm.weight", T::kGroupNorm};
  norm.n_group = n_group;
  out->tensors[hf + "norm.weight"] = norm;
  out->tensors[hf + "out_proj.weight"] = {blk + "ssm_out.weight"};
}

void add_llama_key(LlamaLayout* out, const std::string& suffix, gguf::Value value) {
  out->keys.emplace_back(out->arch + "." + suffix, std::move(value));
}

void add_llama_key(LlamaLayout* out, const std::string& suffix, int64_t value) {
  KLLENS_CHECK(value >= 0 && value <= UINT32_MAX, "{}.{} = {} does not fit a u32", out->arch,
               suffix, value);
  add_llama_key(out, suffix, gguf::Value(static_cast<uint32_t>(value)));
}

void add_llama_hybrid_head_keys(LlamaLayout* out, int64_t heads, std::vector<int32_t> kv_per_layer,
                                int64_t head_dim) {
  add_llama_key(out, "attention.head_count", std::max<int64_t>(heads, 1));
  add_llama_key(out, "attention.head_count_kv", gguf::Value(std::move(kv_per_layer)));
  add_llama_key(out, "attention.key_length", std::max<int64_t>(head_dim, 1));
  add_llama_key(out, "attention.value_length", std::max<int64_t>(head_dim, 1));
}

void add_llama_ssm_keys(LlamaLayout* out, int64_t conv_kernel, int64_t inner, int64_t state,
                        int64_t time_step_rank, int64_t groups) {
  add_llama_key(out, "ssm.conv_kernel", conv_kernel);
  add_llama_key(out, "ssm.inner_size", inner);
  add_llama_key(out, "ssm.state_size", state);
  add_llama_key(out, "ssm.time_step_rank", time_step_rank);
  if (groups > 0) add_llama_key(out, "ssm.group_count", groups);
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
  add_llama_ssm_keys(out, d_conv, d_inner, d_state, dt_rank, mamba2 ? n_group : 0);
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

namespace {

// Mamba / Mamba-2 from llama.cpp's keys and the shapes of layer 0 (the loader checks every other
// layer's against the config this gives).
nlohmann::json mamba_config_from_llama_keys(const LlamaKeys& k, bool mamba2) {
  const std::string& path = k.path();
  const gguf::File& file = k.file();
  const int64_t d_model = k.positive("embedding_length");
  const int64_t d_conv = k.positive("ssm.conv_kernel");
  const int64_t d_inner = k.positive("ssm.inner_size");
  const int64_t d_state = k.positive("ssm.state_size");
  const int64_t dt_rank = k.positive("ssm.time_step_rank");  // Mamba-2: the number of heads
  const int64_t n_group = mamba2 ? k.positive("ssm.group_count") : 1;
  const double eps = k.real("attention.layer_norm_rms_epsilon", 0, 1);
  if (const gguf::Value* v = file.find(k.key("ssm.dt_b_c_rms"))) {
    const bool* b = v->get_if<bool>();
    if (!b) k.invalid("ssm.dt_b_c_rms", fmt::format("is {}, expected bool", gguf::value_type_name(v->type())));
    if (*b)
      k.invalid("ssm.dt_b_c_rms", "is true (Falcon-Mamba's RMS norms on dt, B and C), which "
                                  "kllens' mamba does not have");
  }
  const auto kv = [&](const char* suffix, int64_t value) {
    return fmt::format("{} = {}", k.key(suffix), value);
  };
  const int64_t vocab = k.vocab(d_model);
  const auto expect = [&](const std::string& name, std::vector<int64_t> ne, const std::string& keys) {
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (!t) fail("{}: tensor '{}' is missing (llama.cpp's {} files have it)", path, name, k.arch());
    if (ggml_strip_ones(t->ne) != ggml_strip_ones(ne))
      fail("{}: tensor '{}' has ne {}, but {} give {}", path, name, shape_str(t->ne), keys,
           shape_str(ne));
  };
  const bool tied = k.tied();
  if (!tied)
    expect("output.weight", {d_model, vocab},
           kv("embedding_length", d_model) + " and token_embd.weight's " + std::to_string(vocab) +
               " rows");
  const std::string emb = kv("embedding_length", d_model), inner = kv("ssm.inner_size", d_inner),
                    state = kv("ssm.state_size", d_state), conv = kv("ssm.conv_kernel", d_conv),
                    rank = kv("ssm.time_step_rank", dt_rank);
  const std::string b0 = "blk.0.";
  int64_t head_dim = 0;
  if (!mamba2) {
    expect(b0 + "ssm_in.weight", {d_model, 2 * d_inner}, emb + ", " + inner);
    expect(b0 + "ssm_conv1d.weight", {d_conv, d_inner}, conv + ", " + inner);
    expect(b0 + "ssm_x.weight", {d_inner, dt_rank + 2 * d_state}, inner + ", " + rank + ", " + state);
    expect(b0 + "ssm_dt.weight", {dt_rank, d_inner}, rank + ", " + inner);
    expect(b0 + "ssm_a", {d_state, d_inner}, state + ", " + inner);
  } else {
    const std::string group = kv("ssm.group_count", n_group);
    if (d_inner % dt_rank != 0)
      fail("{}: {} heads (key {}) do not divide {} channels (key {})", path, dt_rank,
           k.key("ssm.time_step_rank"), d_inner, k.key("ssm.inner_size"));
    head_dim = d_inner / dt_rank;
    if (dt_rank % n_group != 0 || d_inner % n_group != 0)
      fail("{}: {} groups (key {}) do not divide the {} heads (key {})", path, n_group,
           k.key("ssm.group_count"), dt_rank, k.key("ssm.time_step_rank"));
    const int64_t conv_dim = d_inner + 2 * n_group * d_state;
    expect(b0 + "ssm_in.weight", {d_model, d_inner + conv_dim + dt_rank},
           emb + ", " + inner + ", " + group + ", " + state + ", " + rank);
    expect(b0 + "ssm_conv1d.weight", {d_conv, conv_dim},
           conv + ", " + inner + ", " + group + ", " + state);
    expect(b0 + "ssm_a", {1, dt_rank}, rank);
    expect(b0 + "ssm_norm.weight", {d_inner / n_group, n_group}, inner + ", " + group);
  }
  expect(b0 + "ssm_out.weight", {d_inner, d_model}, inner + ", " + emb);
  const int64_t n_layer = k.layers("attn_norm.weight");

  nlohmann::json c;
  c["architectures"] = nlohmann::json::array({mamba2 ? "Mamba2ForCausalLM" : "MambaForCausalLM"});
  c["model_type"] = k.arch();
  c["hidden_size"] = d_model;
  c["num_hidden_layers"] = n_layer;
  c["vocab_size"] = vocab;
  c["state_size"] = d_state;
  c["conv_kernel"] = d_conv;
  if (d_inner % d_model == 0) {
    c["expand"] = d_inner / d_model;
  } else {
    const double expand = static_cast<double>(d_inner) / static_cast<double>(d_model);
    if (static_cast<int64_t>(expand * static_cast<double>(d_model)) != d_inner)
      fail("{}: {} is not expand * {} for any float64 expand", path, inner, emb);
    c["expand"] = expand;
  }
  if (!mamba2) {
    c["intermediate_size"] = d_inner;
    c["time_step_rank"] = dt_rank;
  } else {
    c["num_heads"] = dt_rank;
    c["head_dim"] = head_dim;
    c["n_groups"] = n_group;
    c["rms_norm"] = true;
    c["norm_before_gate"] = false;
    // llama.cpp does not clamp dt: transformers' default time_step_limit (0, inf).
  }
  c["layer_norm_epsilon"] = eps;
  c["hidden_act"] = "silu";
  c["use_bias"] = false;  // llama.cpp's mamba / mamba2 have no projection biases
  c["use_conv_bias"] = file.find_tensor(b0 + "ssm_conv1d.bias") != nullptr;
  c["residual_in_fp32"] = true;  // llama.cpp keeps the residual stream in float32
  c["tie_word_embeddings"] = tied;
  k.add_special_tokens(c, vocab);
  return c;
}

}  // namespace

nlohmann::json mamba_config_from_llama_keys(const LlamaKeys& keys) {
  return mamba_config_from_llama_keys(keys, false);
}
nlohmann::json mamba2_config_from_llama_keys(const LlamaKeys& keys) {
  return mamba_config_from_llama_keys(keys, true);
}

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

// ---------------------------------------------------------------------------------------------
// Reading files llama.cpp wrote

std::vector<int64_t> ggml_strip_ones(std::vector<int64_t> ne) {
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  return ne;
}

namespace {

std::optional<int64_t> gguf_int(const gguf::Value& v) {
  return std::visit(
      [](const auto& x) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_unsigned_v<T>)
            if (static_cast<uint64_t>(x) > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
          return static_cast<int64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v.data());
}

}  // namespace

LlamaKeys::LlamaKeys(const gguf::File& file) : file_(file) {
  const gguf::Value* arch = file.find("general.architecture");
  if (!arch || !arch->get_if<std::string>())
    fail("{}: no general.architecture string (not a llama.cpp model file)", file.path());
  arch_ = *arch->get_if<std::string>();
}

const std::string& LlamaKeys::path() const { return file_.path(); }

bool LlamaKeys::has(const std::string& suffix) const { return file_.find(key(suffix)) != nullptr; }

void LlamaKeys::invalid(const std::string& suffix, const std::string& why) const {
  fail("{}: key {} {}", path(), key(suffix), why);
}

int64_t LlamaKeys::positive(const std::string& suffix) const {
  const std::string k = key(suffix);
  const gguf::Value* v = file_.find(k);
  if (!v) fail("{}: key {} is missing (llama.cpp's {} files need it)", path(), k, arch_);
  const auto i = gguf_int(*v);
  if (!i) fail("{}: key {} is {}, expected an unsigned integer", path(), k, gguf::value_type_name(v->type()));
  if (*i <= 0) fail("{}: key {} = {} must be positive", path(), k, *i);
  // The bound config.json values have (io/hf_config.h), before 2 * d_inner and the like could
  // overflow.
  if (*i > kMaxConfigInt) fail("{}: key {} = {} is larger than {}", path(), k, *i, kMaxConfigInt);
  return *i;
}

double LlamaKeys::real(const std::string& suffix, double lo, double hi) const {
  const std::string k = key(suffix);
  const gguf::Value* v = file_.find(k);
  if (!v) fail("{}: key {} is missing (llama.cpp's {} files need it)", path(), k, arch_);
  double value = 0;
  if (const float* f = v->get_if<float>()) {
    value = std::stod(fmt::format("{}", *f));  // shortest decimal that reads back as this float
  } else if (const double* d = v->get_if<double>()) {
    value = *d;
  } else {
    fail("{}: key {} is {}, expected f32", path(), k, gguf::value_type_name(v->type()));
  }
  if (!std::isfinite(value) || value < lo || value >= hi)
    fail("{}: key {} = {} is outside [{}, {})", path(), k, value, lo, hi);
  return value;
}

std::vector<int64_t> LlamaKeys::per_layer(const std::string& suffix, int64_t layers) const {
  const std::string k = key(suffix);
  const gguf::Value* v = file_.find(k);
  if (!v) fail("{}: key {} is missing (llama.cpp's {} files need it)", path(), k, arch_);
  std::vector<int64_t> out;
  const auto take = [&](const auto& values) {
    if (static_cast<int64_t>(values.size()) != layers)
      fail("{}: key {} has {} entries for {} layers", path(), k, values.size(), layers);
    for (const auto x : values) {
      const gguf::Value one(x);
      const auto i = gguf_int(one);
      if (!i || *i < 0 || *i > kMaxConfigInt)
        fail("{}: key {} has the entry {}, not a count", path(), k, one.to_display());
      out.push_back(*i);
    }
  };
  if (const auto* a = v->get_if<std::vector<int32_t>>()) take(*a);
  else if (const auto* b = v->get_if<std::vector<uint32_t>>()) take(*b);
  else if (const auto* c = v->get_if<std::vector<int64_t>>()) take(*c);
  else if (const auto* d = v->get_if<std::vector<uint64_t>>()) take(*d);
  else if (v->array_size() > 0 || v->array_type())
    fail("{}: key {} is an array of {}, expected integers", path(), k,
         gguf::value_type_name(*v->array_type()));
  else out.assign(static_cast<size_t>(layers), positive(suffix));
  return out;
}

int64_t LlamaKeys::vocab(int64_t d_model) const {
  const gguf::TensorInfo* embed = file_.find_tensor("token_embd.weight");
  if (!embed) fail("{}: tensor 'token_embd.weight' is missing", path());
  if (embed->ne.size() != 2 || embed->ne[0] != d_model)
    fail("{}: tensor 'token_embd.weight' has ne {}, but {} = {} says rows of {}", path(),
         shape_str(embed->ne), key("embedding_length"), d_model, d_model);
  const int64_t vocab = embed->ne[1];
  if (const gguf::Value* v = file_.find("tokenizer.ggml.tokens"); v && v->array_size() != static_cast<size_t>(vocab))
    fail("{}: tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows (llama.cpp "
         "needs one token per row)",
         path(), v->array_size(), vocab);
  if (const gguf::Value* v = file_.find(key("vocab_size")))
    if (gguf_int(*v) != vocab)
      fail("{}: key {} = {} but token_embd.weight has {} rows", path(), key("vocab_size"),
           v->to_display(), vocab);
  return vocab;
}

bool LlamaKeys::tied() const { return file_.find_tensor("output.weight") == nullptr; }

void LlamaKeys::add_special_tokens(nlohmann::json& c, int64_t vocab) const {
  for (const auto& [gguf_key, hf_key] :
       {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
        std::pair{"tokenizer.ggml.eos_token_id", "eos_token_id"},
        std::pair{"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (const gguf::Value* v = file_.find(gguf_key))
      if (const auto id = gguf_int(*v); id && *id >= 0 && *id < vocab) c[hf_key] = *id;
}

void LlamaKeys::add_attention_head_keys(nlohmann::json& c, int64_t hidden) const {
  const int64_t heads = positive("attention.head_count");
  int64_t head_dim = hidden / heads;
  if (has("attention.key_length")) head_dim = positive("attention.key_length");
  else if (hidden % heads != 0) invalid("attention.head_count", "does not divide embedding_length and there is no attention.key_length");
  if (has("attention.value_length") && positive("attention.value_length") != head_dim)
    invalid("attention.value_length", "differs from attention.key_length; one head size is supported");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = has("attention.head_count_kv") ? positive("attention.head_count_kv") : heads;
  c["head_dim"] = head_dim;
  c["rope_theta"] = has("rope.freq_base") ? real("rope.freq_base", 1, 1e12) : 10000.0;
}

void LlamaKeys::add_common_attention_keys(nlohmann::json& c, int64_t vocab) const {
  c["vocab_size"] = vocab;
  c["rms_norm_eps"] = real("attention.layer_norm_rms_epsilon", 0, 1);
  if (has("context_length")) c["max_position_embeddings"] = positive("context_length");
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = tied();
  add_special_tokens(c, vocab);
}

int64_t LlamaKeys::layers(const std::string& last_tensor) const {
  const int64_t n_layer = positive("block_count");
  const std::string last = llama_blk(static_cast<int>(n_layer - 1)) + last_tensor;
  if (!file_.find_tensor(last))
    fail("{}: {} = {} but tensor '{}' is missing", path(), key("block_count"), n_layer, last);
  for (const gguf::TensorInfo& t : file_.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const size_t dot = t.name.find('.', 4);
    int64_t layer = -1;
    try {
      layer = std::stoll(t.name.substr(4, dot == std::string::npos ? std::string::npos : dot - 4));
    } catch (const std::exception&) {
      continue;  // reported as an unused tensor by the loader
    }
    if (layer >= n_layer)
      fail("{}: {} = {} but the file has tensor '{}'", path(), key("block_count"), n_layer, t.name);
  }
  return n_layer;
}

}  // namespace kllens
