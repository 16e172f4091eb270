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

}  // namespace

nlohmann::json hf_config_from_llama_cpp(const gguf::File& file) { return hf_config_from_llama_keys(file); }

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
    // The checkpoint's config.json as it was, so Python's Infinity / NaN may be in it
    // (transformers 4.x writes "time_step_limit": [0.0, Infinity]).
    config_json = nlohmann::json::parse(python_json_literals(config_text));
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
      const std::vector<int64_t> want = ggml_strip_ones({file_shape.rbegin(), file_shape.rend()});
      if (ggml_strip_ones(info->ne) != want)
        fail("{}: tensor '{}' has ne {}, but the file's {}.* keys give {} (for {})", path, name,
             shape_str(info->ne), arch, shape_str(want), spec.name);
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
