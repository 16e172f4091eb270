#include "cli/common.h"

#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "export/gguf_import.h"
#include "export/gguf_vocab.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "tokenizer/tokenizer.h"

namespace kllens::cli {

namespace {
// The process runs one command, so its load options are one value (set by RunOptions::apply).
LoadOptions g_load_options;
}  // namespace

void RunOptions::add(CLI::App* app) {
  app->add_option("--threads", threads, "worker threads (default: OMP_NUM_THREADS if set, else all cores)")
      ->check(CLI::Range(0, 1024));
  app->add_option("--mamba2-norm", mamba2_norm,
                  "Mamba-2 gated RMSNorm with n_groups > 1: 'group' (per group of d_inner/n_groups "
                  "channels, as mamba_ssm and llama.cpp; the default) or 'full' (over all of "
                  "d_inner, transformers' CPU path)")
      ->check(CLI::IsMember({"group", "full"}));
}

void AdaptiveOption::add(CLI::App* cmd) {
  cmd->add_option("--adaptive", windows,
                  "measure every entry on the first N windows, and on all of them only the "
                  "entries still too uncertain (0 = every entry on every window)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--adaptive-rse", rse,
                  "with --adaptive: refine an entry whose standard error between windows exceeds "
                  "this fraction of its mean KL")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 10.0));
}

void AdaptiveOption::apply(SweepOptions& options) const {
  options.adaptive_windows = windows;
  options.adaptive_rse = rse;
}

void RunOptions::apply() const {
  set_num_threads(threads);
  g_load_options.mamba2_norm =
      mamba2_norm == "full" ? Mamba2GatedNorm::kFullWidth : Mamba2GatedNorm::kPerGroup;
}

bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

std::unique_ptr<Model> open_model(const std::string& path) {
  // A GGUF file written by `kllens quantize` (or by llama.cpp, for mamba / mamba2) runs on the
  // packed kernels: its quantized and 16-bit matrices stay in their stored types
  // (export/gguf_import.h).
  if (is_gguf_path(path)) return load_gguf_model(path, g_load_options);
  return load_model(path, g_load_options);
}

std::unique_ptr<Model> open_float_model(const std::string& path, std::string_view command) {
  if (is_gguf_path(path))
    fail("{}: `kllens {}` quantizes components itself and needs the float model: give the Hugging "
         "Face folder the file was made from (a GGUF file runs with forward, generate, ppl, eval "
         "--reference, bench and inspect)",
         path, command);
  return load_model(path, g_load_options);
}

std::vector<std::vector<int32_t>> read_id_batch(const std::string& path, const std::string& tensor) {
  SafetensorsFile file(path);
  const TensorView* view = file.find(tensor);
  if (!view) {
    std::string names;
    for (const auto& [n, _] : file.tensors()) names += (names.empty() ? "" : ", ") + n;
    fail("{}: no tensor '{}' (it has: {})", path, tensor, names.empty() ? "none" : names);
  }
  if (view->shape.empty() || view->shape.size() > 2)
    fail("{}: tensor '{}' must be [seq] or [batch, seq], got {}", path, tensor,
         shape_str(view->shape));
  const auto ids = read_int_tensor(*view);
  const int64_t B = view->shape.size() == 2 ? view->shape[0] : 1;
  const int64_t T = view->shape.back();
  if (T == 0 || B == 0) fail("{}: tensor '{}' is empty", path, tensor);
  std::vector<std::vector<int32_t>> out;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> seq;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t v = ids[static_cast<size_t>(b * T + t)];
      if (v < 0 || v > INT32_MAX)
        fail("{}: tensor '{}' holds token id {} at [{}, {}], which is not a valid token id", path,
             tensor, v, b, t);
      seq.push_back(static_cast<int32_t>(v));
    }
    out.push_back(std::move(seq));
  }
  return out;
}

Tokenizer load_tokenizer(const std::string& source) {
  if (is_gguf_path(source)) {
    // kllens.tokenizer_json (`kllens quantize`), else rebuilt from llama.cpp's tokenizer.ggml.*
    // keys (a file written by llama.cpp).
    const gguf::File file(source);
    const GgufTokenizerJson tok = gguf_tokenizer_json(file);
    return Tokenizer::from_json_text(tok.text, tok.origin);
  }
  std::error_code ec;
  if (std::filesystem::is_directory(source, ec)) {
    const auto path = std::filesystem::path(source) / "tokenizer.json";
    if (!std::filesystem::exists(path))
      fail("{}: no tokenizer.json in the model folder (needed to tokenize the text)", source);
    return Tokenizer::load(path.string());
  }
  return Tokenizer::load(source);
}

std::vector<int32_t> tokenize_with_model_folder(const std::string& model_folder,
                                                const std::string& text) {
  return load_tokenizer(model_folder).encode(text);
}

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

}  // namespace kllens::cli
