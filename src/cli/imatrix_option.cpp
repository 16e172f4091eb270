// --imatrix: loading an importance matrix for a command and checking that plans and sensitivity
// files are used with the matrix they were measured with.
#include "cli/common.h"
#include "core/error.h"
#include "quant/formats.h"

namespace kllens::cli {

void ImatrixOption::add(CLI::App* cmd) {
  cmd->add_option("--imatrix", path,
                  "importance matrix (llama.cpp's imatrix GGUF, from `kllens imatrix` or "
                  "llama-imatrix): ggml's block formats are quantized with it, as llama-quantize "
                  "--imatrix does");
}

void ImatrixOption::load(const Model& model) {
  if (path.empty()) return;
  matrix = read_imatrix(path, model);
}

ImportanceFn ImatrixOption::fn() const {
  return matrix ? importance_fn(*matrix) : ImportanceFn{};
}

nlohmann::json ImatrixOption::identity() const {
  if (!matrix) return nullptr;
  return {{"file", path}, {"sha256", matrix->sha256}};
}

nlohmann::json sensitivity_imatrix(const SensitivityReport& report) {
  return report.calibration.is_object() ? report.calibration.value("imatrix", nlohmann::json())
                                        : nlohmann::json();
}

void check_same_imatrix(const nlohmann::json& used, const ImatrixOption& given,
                        const std::string& what, const std::map<std::string, std::string>* schemes) {
  if (schemes) {
    bool matters = false;
    for (const auto& [name, text] : *schemes) {
      const BlockFormatTraits* t = block_traits(QuantScheme::parse(text).format);
      matters |= t && t->uses_importance;
    }
    if (!matters) return;
  }
  const bool used_one = used.is_object() && used.contains("sha256");
  if (!used_one && !given.matrix) return;
  if (used_one && !given.matrix)
    fail("{} was measured with the importance matrix {} (sha256 {}): pass it with --imatrix, or "
         "the file's bytes would not be the ones measured",
         what, used.value("file", std::string("?")), used.value("sha256", std::string("?")));
  if (!used_one)
    fail("{} was measured without an importance matrix, but --imatrix {} was given: the file's "
         "bytes would not be the ones measured",
         what, given.path);
  if (used.at("sha256") != given.matrix->sha256)
    fail("{} was measured with the importance matrix {} (sha256 {}), not {} (sha256 {})", what,
         used.value("file", std::string("?")), used.value("sha256", std::string("?")), given.path,
         given.matrix->sha256);
}

}  // namespace kllens::cli
