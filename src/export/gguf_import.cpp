#include "export/gguf_import.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "core/error.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "models/llama_names.h"
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

// The ggml types the packed kernels run as they are. The other block formats (q4_1, q5_0, q5_1,
// the K-quants, iq4_nl, iq4_xs) have no packed kernel yet and are dequantized to float32 at load
// with ggml's exact dequantizers (quant/formats.h); `inspect` says so.
std::optional<QuantScheme> runtime_scheme(gguf::GgmlType type) {
  switch (type) {
    case gguf::GgmlType::kQ8_0: return QuantScheme::parse("q8_0");
    case gguf::GgmlType::kQ4_0: return QuantScheme::parse("q4_0");
    case gguf::GgmlType::kBF16: return QuantScheme::parse("bf16");
    case gguf::GgmlType::kF16: return QuantScheme::parse("f16");
    default: return std::nullopt;
  }
}

}  // namespace

std::unique_ptr<Model> load_gguf_model(const std::string& path) {
  const gguf::File file(path);
  const gguf::Value* cfg = file.find("kllens.hf_config");
  if (!cfg || !cfg->get_if<std::string>())
    fail("{}: no kllens.hf_config string: only GGUF files written by `kllens quantize` can be "
         "loaded",
         path);
  const std::string& config_text = *cfg->get_if<std::string>();
  nlohmann::json config_json;
  try {
    config_json = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: kllens.hf_config is not valid JSON: {}", path, e.what());
  }
  const HfConfig config = HfConfig::from_json(config_json, path + " (kllens.hf_config)");
  const std::string arch = file.get_as<std::string>("general.architecture");
  const std::string type = config.model_type();
  const bool llama_layout = arch == type;
  if (!llama_layout && arch != "kllens." + type)
    fail("{}: general.architecture '{}' does not match the stored config's model_type '{}'", path,
         arch, type);
  const bool mamba2 = type == "mamba2";

  std::map<std::string, OwnedTensor> tensors;
  PackedTensorScope::Map packed;
  std::map<std::string, std::string> dequantized_at_load;
  for (const TensorSpec& spec : tensor_specs(config)) {
    std::string name = spec.name;
    LlamaTransform transform = LlamaTransform::kNone;
    if (llama_layout) {
      const auto t = llama_tensor(spec.name, mamba2);
      if (!t) fail("{}: the {} layout has no tensor for {}", path, arch, spec.name);
      name = t->name;
      transform = t->transform;
    }
    const gguf::TensorInfo* info = file.find_tensor(name);
    if (!info) {
      if (spec.optional) continue;
      fail("{}: tensor '{}' (for {}) is missing", path, name, spec.name);
    }
    int64_t numel = 1;
    for (int64_t d : spec.shape) numel *= d;
    if (info->numel() != numel)
      fail("{}: tensor '{}' has {} elements but {} needs {}", path, name, info->numel(), spec.name,
           numel);
    if (const auto scheme = runtime_scheme(info->type);
        scheme && transform == LlamaTransform::kNone && packable_role(spec.role) &&
        spec.shape.size() >= 2) {
      QTensor q;
      q.scheme = *scheme;
      q.rows = spec.shape[0];
      q.cols = numel / spec.shape[0];
      if (!scheme->supports(q.cols) ||
          static_cast<uint64_t>(scheme->storage_bytes(q.rows, q.cols)) != info->nbytes)
        fail("{}: tensor '{}' ({} bytes of {}) does not hold a [{}, {}] matrix", path, name,
             info->nbytes, gguf::type_name(info->type), q.rows, q.cols);
      const auto* bytes = reinterpret_cast<const uint8_t*>(info->data);
      q.data.assign(bytes, bytes + info->nbytes);
      release_mapped_range(info->data, info->nbytes);  // the copy is what runs: one copy resident
      // Q8_0/Q4_0 run in kllens' int8/int4:g32 layout: the same values, faster kernels. The scope
      // below hands the matrices to Weights::load.
      packed[spec.name] = std::make_shared<QTensor>(blocks_as_int_layout(std::move(q)));
      continue;
    }
    std::vector<float> values(static_cast<size_t>(numel));
    if (const BlockFormatTraits* t = block_traits_by_ggml_type(static_cast<uint32_t>(info->type))) {
      // The container checked that ne0 is whole blocks and that the bytes match.
      t->dequantize_row(info->data, values.data(), numel);
      dequantized_at_load[spec.name] = std::string(t->name);
    } else {
      try {
        gguf::to_f32(info->type, info->data, numel, values.data());
      } catch (const Error& e) {
        fail("{}: tensor '{}': {}", path, name, e.what());
      }
    }
    release_mapped_range(info->data, info->nbytes);
    if (transform == LlamaTransform::kNegExp)
      for (float& v : values) v = std::log(-v);  // ssm_a = -exp(A_log)
    tensors[spec.name] = make_f32_tensor(spec.shape, values);
  }

  TempDir dir;
  {
    std::ofstream out(dir.path / "config.json", std::ios::binary);
    out << config_text;
    if (!out) fail("{}: cannot write", (dir.path / "config.json").string());
  }
  write_safetensors((dir.path / "model.safetensors").string(), tensors);
  tensors.clear();
  PackedTensorScope scope(std::move(packed));
  auto model = load_model(dir.path.string());
  model->set_dequantized_at_load(std::move(dequantized_at_load));
  return model;
}

}  // namespace kllens
