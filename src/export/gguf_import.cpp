#include "export/gguf_import.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <variant>

#include "core/error.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/json_file.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "models/llama_layout.h"
#include "models/model.h"
#include "quant/formats.h"

namespace kllens {

namespace {

// Removes the temporary model folder however loading ends.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("kllens-gguf-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// The ggml types the packed kernels run as they are: every block format of quant/formats.h and
// the 16-bit floats. A block-format tensor in a role that is read element-wise (conv1d, ...) is
// dequantized to float32 at load with ggml's exact dequantizer; `inspect` says so.
std::optional<QuantScheme> runtime_scheme(gguf::GgmlType type) {
  if (const BlockFormatTraits* t = block_traits_by_ggml_type(static_cast<uint32_t>(type)))
    return QuantScheme::parse(t->name);
  switch (type) {
    case gguf::GgmlType::kBF16: return QuantScheme::parse("bf16");
    case gguf::GgmlType::kF16: return QuantScheme::parse("f16");
    default: return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------------
// Files written by llama.cpp: the config rebuilt from its keys and the tensor shapes

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// ggml drops trailing dimensions of 1 when it writes a tensor (ggml_n_dims), so {512, 1} and
// {512} are the same shape.
std::vector<int64_t> strip_ones(std::vector<int64_t> ne) {
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  return ne;
}

std::optional<int64_t> as_int(const gguf::Value& v) {
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

std::optional<double> as_float(const gguf::Value& v) {
  if (const float* f = v.get_if<float>()) return *f;
  if (const double* d = v.get_if<double>()) return *d;
  return std::nullopt;
}

constexpr const char* kLoadableArchitectures = "'mamba' and 'mamba2'";

}  // namespace

nlohmann::json hf_config_from_llama_cpp(const gguf::File& file) {
  const std::string& path = file.path();
  const gguf::Value* arch_value = file.find("general.architecture");
  if (!arch_value || !arch_value->get_if<std::string>())
    fail("{}: no general.architecture string (not a llama.cpp model file)", path);
  const std::string arch = *arch_value->get_if<std::string>();
  if (arch != "mamba" && arch != "mamba2")
    fail("{}: general.architecture is '{}' and the file has no kllens.hf_config: kllens loads "
         "files written by llama.cpp (convert_hf_to_gguf.py, llama-quantize) only for {}; files "
         "of the other families (llama, jamba, falcon-h1, hymba) load when `kllens quantize` wrote "
         "them",
         path, arch, kLoadableArchitectures);
  const bool mamba2 = arch == "mamba2";
  const auto key = [&](const char* suffix) { return arch + "." + suffix; };
  const auto positive = [&](const char* suffix) -> int64_t {
    const std::string k = key(suffix);
    const gguf::Value* v = file.find(k);
    if (!v) fail("{}: key {} is missing (llama.cpp's {} files need it)", path, k, arch);
    const auto i = as_int(*v);
    if (!i)
      fail("{}: key {} is {}, expected an unsigned integer", path, k, gguf::value_type_name(v->type()));
    if (*i <= 0) fail("{}: key {} = {} must be positive", path, k, *i);
    // The bound config.json values have (io/hf_config.h), before 2 * d_inner and the like
    // could overflow.
    if (*i > kMaxConfigInt) fail("{}: key {} = {} is larger than {}", path, k, *i, kMaxConfigInt);
    return *i;
  };
  const int64_t d_model = positive("embedding_length");
  const int64_t n_layer = positive("block_count");
  const int64_t d_conv = positive("ssm.conv_kernel");
  const int64_t d_inner = positive("ssm.inner_size");
  const int64_t d_state = positive("ssm.state_size");
  const int64_t dt_rank = positive("ssm.time_step_rank");  // Mamba-2: the number of heads
  const int64_t n_group = mamba2 ? positive("ssm.group_count") : 1;
  double eps = 0;
  {
    const std::string k = key("attention.layer_norm_rms_epsilon");
    const gguf::Value* v = file.find(k);
    if (!v) fail("{}: key {} is missing (llama.cpp's {} files need it)", path, k, arch);
    const auto f = as_float(*v);
    if (!f) fail("{}: key {} is {}, expected f32", path, k, gguf::value_type_name(v->type()));
    if (!std::isfinite(*f) || *f < 0 || *f >= 1)
      fail("{}: key {} = {} is not a layer-norm epsilon", path, k, *f);
    // The shortest decimal that reads back as the same float32 (1e-05, not 9.9999997e-06).
    eps = *f;
    if (v->get_if<float>()) eps = std::stod(fmt::format("{}", static_cast<float>(*f)));
  }
  if (const gguf::Value* v = file.find(key("ssm.dt_b_c_rms"))) {
    const bool* b = v->get_if<bool>();
    if (!b) fail("{}: key {} is {}, expected bool", path, key("ssm.dt_b_c_rms"), gguf::value_type_name(v->type()));
    if (*b)
      fail("{}: key {} is true (Falcon-Mamba's RMS norms on dt, B and C), which kllens' mamba "
           "does not have",
           path, key("ssm.dt_b_c_rms"));
  }
  const auto kv = [&](const char* suffix, int64_t value) {
    return fmt::format("{} = {}", key(suffix), value);
  };

  // The embedding gives the vocabulary.
  const gguf::TensorInfo* embed = file.find_tensor("token_embd.weight");
  if (!embed) fail("{}: tensor 'token_embd.weight' is missing", path);
  if (embed->ne.size() != 2 || embed->ne[0] != d_model)
    fail("{}: tensor 'token_embd.weight' has ne {}, but {} says rows of {}", path,
         ne_str(embed->ne), kv("embedding_length", d_model), d_model);
  const int64_t vocab = embed->ne[1];
  if (const gguf::Value* v = file.find("tokenizer.ggml.tokens"); v && v->array_size() != static_cast<size_t>(vocab))
    fail("{}: tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows (llama.cpp "
         "needs one token per row)",
         path, v->array_size(), vocab);
  if (const gguf::Value* v = file.find(key("vocab_size")))
    if (as_int(*v) != vocab)
      fail("{}: key {} = {} but token_embd.weight has {} rows", path, key("vocab_size"),
           v->to_display(), vocab);

  const auto expect = [&](const std::string& name, std::vector<int64_t> ne,
                          const std::string& keys) {
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (!t) fail("{}: tensor '{}' is missing (llama.cpp's {} files have it)", path, name, arch);
    if (strip_ones(t->ne) != strip_ones(ne))
      fail("{}: tensor '{}' has ne {}, but {} give {}", path, name, ne_str(t->ne), keys,
           ne_str(ne));
  };
  const bool tied = file.find_tensor("output.weight") == nullptr;
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
           key("ssm.time_step_rank"), d_inner, key("ssm.inner_size"));
    head_dim = d_inner / dt_rank;
    if (dt_rank % n_group != 0 || d_inner % n_group != 0)
      fail("{}: {} groups (key {}) do not divide the {} heads (key {})", path, n_group,
           key("ssm.group_count"), dt_rank, key("ssm.time_step_rank"));
    const int64_t conv_dim = d_inner + 2 * n_group * d_state;
    expect(b0 + "ssm_in.weight", {d_model, d_inner + conv_dim + dt_rank},
           emb + ", " + inner + ", " + group + ", " + state + ", " + rank);
    expect(b0 + "ssm_conv1d.weight", {d_conv, conv_dim},
           conv + ", " + inner + ", " + group + ", " + state);
    expect(b0 + "ssm_a", {1, dt_rank}, rank);
    expect(b0 + "ssm_norm.weight", {d_inner / n_group, n_group}, inner + ", " + group);
  }
  expect(b0 + "ssm_out.weight", {d_inner, d_model}, inner + ", " + emb);
  // The layer count: the last layer is there and no tensor names a layer past it.
  const std::string last = "blk." + std::to_string(n_layer - 1) + ".attn_norm.weight";
  if (!file.find_tensor(last))
    fail("{}: {} but tensor '{}' is missing", path, kv("block_count", n_layer), last);
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const size_t dot = t.name.find('.', 4);
    int64_t layer = -1;
    try {
      layer = std::stoll(t.name.substr(4, dot == std::string::npos ? std::string::npos : dot - 4));
    } catch (const std::exception&) {
      continue;  // reported as an unused tensor by the loader
    }
    if (layer >= n_layer)
      fail("{}: {} but the file has tensor '{}'", path, kv("block_count", n_layer), t.name);
  }

  nlohmann::json c;
  c["architectures"] = nlohmann::json::array({mamba2 ? "Mamba2ForCausalLM" : "MambaForCausalLM"});
  c["model_type"] = arch;
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
  for (const auto& [gguf_key, hf_key] :
       {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
        std::pair{"tokenizer.ggml.eos_token_id", "eos_token_id"},
        std::pair{"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (const gguf::Value* v = file.find(gguf_key))
      if (const auto id = as_int(*v); id && *id >= 0 && *id < vocab) c[hf_key] = *id;
  return c;
}

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& options) {
  const gguf::File file(path);
  const gguf::Value* cfg = file.find("kllens.hf_config");
  if (cfg && !cfg->get_if<std::string>())
    fail("{}: kllens.hf_config is {}, expected a string", path, gguf::value_type_name(cfg->type()));
  // Without kllens.hf_config: a file written by llama.cpp, whose config is rebuilt from its keys.
  const bool from_llama_keys = cfg == nullptr;
  const std::string config_text =
      from_llama_keys ? hf_config_from_llama_cpp(file).dump(2) : *cfg->get_if<std::string>();
  nlohmann::json config_json;
  check_json_depth(config_text, path + " (kllens.hf_config)");
  try {
    config_json = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: kllens.hf_config is not valid JSON: {}", path, e.what());
  }
  const HfConfig config = HfConfig::from_json(
      config_json, path + (from_llama_keys ? " (config rebuilt from llama.cpp's keys)"
                                           : " (kllens.hf_config)"));
  const std::string arch = file.get_as<std::string>("general.architecture");
  const std::string type = config.model_type();
  const std::vector<TensorSpec> specs = tensor_specs(config);
  LlamaLayout layout;
  const bool llama_layout_file = llama_layout(config, specs, &layout).empty() && arch == layout.arch;
  if (!llama_layout_file && arch != "kllens." + type)
    fail("{}: general.architecture '{}' does not match the stored config's model_type '{}'", path,
         arch, type);

  std::map<std::string, OwnedTensor> tensors;
  PackedTensorScope::Map packed;
  std::map<std::string, std::string> dequantized_at_load;
  std::set<std::string> used;  // tensor names of the file that the model reads
  for (const TensorSpec& spec : specs) {
    const LlamaTensor t = llama_layout_file ? layout.tensors.at(spec.name) : LlamaTensor{spec.name};
    const std::string& name = t.name;
    if (t.scaled())
      fail("{}: the stored config of {} still has multipliers llama.cpp's layout folds into {}; "
           "kllens writes them as 1",
           path, type, name);
    const gguf::TensorInfo* info = file.find_tensor(name);
    if (!info) {
      if (spec.optional) continue;
      fail("{}: tensor '{}' (for {}) is missing", path, name, spec.name);
    }
    used.insert(name);
    const std::vector<int64_t> file_shape = llama_file_shape(t, spec.shape);
    if (from_llama_keys && llama_layout_file) {
      const std::vector<int64_t> want = strip_ones({file_shape.rbegin(), file_shape.rend()});
      if (strip_ones(info->ne) != want)
        fail("{}: tensor '{}' has ne {}, but the file's {}.* keys give {} (for {})", path, name,
             ne_str(info->ne), arch, ne_str(want), spec.name);
    }
    int64_t numel = 1;
    for (int64_t d : spec.shape) numel *= d;
    const int64_t slices = t.stacked() ? t.n_expert : 1;
    if (info->numel() != numel * slices)
      fail("{}: tensor '{}' has {} elements but {} needs {}", path, name, info->numel(),
           t.stacked() ? fmt::format("{} experts like {}", slices, spec.name) : spec.name,
           numel * slices);
    // One expert of a stack: its rows are a contiguous slice of the tensor's bytes.
    if (info->nbytes % static_cast<uint64_t>(slices) != 0)
      fail("{}: tensor '{}' ({} bytes) does not split into {} experts", path, name, info->nbytes,
           slices);
    const uint64_t nbytes = info->nbytes / static_cast<uint64_t>(slices);
    const std::byte* data = info->data + (t.stacked() ? static_cast<uint64_t>(t.expert) * nbytes : 0);
    const int64_t rows = spec.shape.empty() ? 1 : spec.shape[0], cols = numel / std::max<int64_t>(rows, 1);
    const bool reshaped = t.transform != LlamaTransform::kNone &&
                          t.transform != LlamaTransform::kRopePermute;
    if (const auto scheme = runtime_scheme(info->type);
        scheme && !reshaped && packable_role(spec.role) && spec.shape.size() >= 2) {
      QTensor q;
      q.scheme = *scheme;
      q.rows = rows;
      q.cols = cols;
      if (!scheme->supports(q.cols) ||
          static_cast<uint64_t>(scheme->storage_bytes(q.rows, q.cols)) != nbytes)
        fail("{}: tensor '{}' ({} bytes of {}) does not hold a [{}, {}] matrix", path, name,
             nbytes, gguf::type_name(info->type), q.rows, q.cols);
      const auto* bytes = reinterpret_cast<const uint8_t*>(data);
      if (t.transform == LlamaTransform::kRopePermute) {
        // Whole rows move: every format here stores a row's blocks contiguously.
        const uint64_t row_bytes = nbytes / static_cast<uint64_t>(rows);
        q.data.resize(nbytes);
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(q.data.data() + r * row_bytes, bytes + llama_row(t, r, rows) * row_bytes,
                      row_bytes);
      } else {
        q.data.assign(bytes, bytes + nbytes);
      }
      release_mapped_range(data, nbytes);  // the copy is what runs: one copy resident
      // Q8_0/Q4_0 run in kllens' int8/int4:g32 layout: the same values, faster kernels. The scope
      // below hands the matrices to Weights::load.
      packed[spec.name] = std::make_shared<QTensor>(blocks_as_int_layout(std::move(q)));
      continue;
    }
    std::vector<float> values(static_cast<size_t>(numel));
    if (const BlockFormatTraits* bt = block_traits_by_ggml_type(static_cast<uint32_t>(info->type))) {
      // The container checked that ne0 is whole blocks and that the bytes match.
      bt->dequantize_row(data, values.data(), numel);
      dequantized_at_load[spec.name] = std::string(bt->name);
    } else {
      try {
        gguf::to_f32(info->type, data, numel, values.data());
      } catch (const Error& e) {
        fail("{}: tensor '{}': {}", path, name, e.what());
      }
    }
    release_mapped_range(data, nbytes);
    if (t.transform != LlamaTransform::kNone)
      values = from_llama_values(t, values.data(), rows, cols,
                                 fmt::format("{}: tensor '{}'", path, name));
    tensors[spec.name] = make_f32_tensor(spec.shape, values);
  }

  if (from_llama_keys)
    for (const gguf::TensorInfo& t : file.tensors())
      if (!used.count(t.name))
        fail("{}: tensor '{}' has no place in kllens' {} model ({} layers, from the file's {}.* "
             "keys)",
             path, t.name, arch, config.get_int("num_hidden_layers"), arch);

  TempDir dir;
  {
    std::ofstream out(dir.path / "config.json", std::ios::binary);
    out << config_text;
    if (!out) fail("{}: cannot write", (dir.path / "config.json").string());
  }
  write_safetensors((dir.path / "model.safetensors").string(), tensors);
  tensors.clear();
  PackedTensorScope scope(std::move(packed));
  auto model = load_model(dir.path.string(), options);
  model->set_dequantized_at_load(std::move(dequantized_at_load));
  return model;
}

}  // namespace kllens
