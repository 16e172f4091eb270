// Evaluating a quantized model: apply one scheme per component by fake quantization (in place,
// originals kept), then compare the quantized model with the full-precision one on text windows
// (the ppl protocol of eval/perplexity.h): perplexity of both, KL(P_fp || P_q) per position with
// its distribution, top-1 agreement, and the size of the stored model.
//
// Keep schemes: "bf16" on a component whose checkpoint is bf16 changes nothing (its values are
// already bf16); on a wider checkpoint (f32, f16) the values are rounded to bf16, since that is
// what storing them as bf16 means. f16/f32 likewise round (or copy).
//
// Size: the exact tensor data bytes of the GGUF file `kllens quantize` writes for the assignment
// (export/gguf_export.h): components at the ggml type of their scheme (quant/formats.h
// gguf_storage_type: codes, scales and mins of whole blocks), components outside the assignment
// in the checkpoint's dtype, every other tensor (norms, biases, A_log, D, conv1d in llama.cpp's
// layout) F32, as llama.cpp's converter stores them. No alignment padding or metadata. The one
// exception is intB, which has no ggml type: it is sized as kllens packs it (codes + scales +
// zero points), the values evaluation measures; the GGUF file then holds the nearest ggml type
// (int4:g32 and int8:g32 have exactly the size of their q4_0 / q8_0 stand-ins).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quant/scheme.h"
#include "stats/logits.h"

namespace kllens {

class Model;
struct Param;

// HF component name -> scheme. Components absent stay as loaded. A block format that cannot
// divide a component's rows is applied, sized and exported as quant/formats.h's stored_scheme
// (llama-quantize's fallback for the shape).
using SchemeAssignment = std::map<std::string, QuantScheme>;

// The importance vector (cols floats) ggml's quantizers use for a component, or nullptr (an
// ImportanceMatrix supplies it, eval/imatrix.h). An empty function: no importance vectors.
using ImportanceFn = std::function<const float*(const Param&)>;

// Every component at `scheme`, except conv1d unless include_conv1d. Components whose row length
// the scheme cannot hold are in it too, stored as quant/formats.h stored_scheme says (they are
// appended to *unsupported).
SchemeAssignment uniform_assignment(const Model& model, const QuantScheme& scheme, bool include_conv1d,
                                    std::vector<std::string>* unsupported = nullptr);

// Throws Error naming the first component the model lacks, a tensor that is not a component, or
// a scheme that cannot store a component's rows.
void validate_assignment(const Model& model, const SchemeAssignment& assignment);

// Bytes of the whole model under an assignment (see above).
QuantScheme checkpoint_scheme(const Param& p);  // bf16 / f16 / f32: the checkpoint's dtype
// The GGUF bytes of one component at a scheme, and of all the tensors that are not components.
int64_t component_gguf_bytes(const Model& model, const Param& p, const QuantScheme& scheme);
int64_t non_component_gguf_bytes(const Model& model);
int64_t assignment_bytes(const Model& model, const SchemeAssignment& assignment);
// The bytes a GGUF file holds for a component: component_gguf_bytes, except that intB (no ggml
// type) counts as the ggml type the file stores it in (gguf_storage_type: Q8_0, Q4_0, Q4_1 or F16).
int64_t component_file_bytes(const Model& model, const Param& p, const QuantScheme& scheme);
// The tensor data of the file `kllens quantize --uniform scheme` writes: every component but
// conv1d at the scheme (as the file stores it), conv1d at its checkpoint type, the rest F32.
int64_t uniform_gguf_bytes(const Model& model, const QuantScheme& scheme);

// Holds fake-quantized weights in the model and the originals aside; the destructor puts the
// originals back. Switching between the two views swaps vectors (no copies), so a window can be
// run at full precision and quantized back to back.
class WeightSwap {
 public:
  explicit WeightSwap(Model& model, ImportanceFn importance = {});
  ~WeightSwap();
  WeightSwap(const WeightSwap&) = delete;
  WeightSwap& operator=(const WeightSwap&) = delete;

  // Makes exactly `assignment` active (components set earlier and absent now are restored;
  // components already at the same scheme are not recomputed). Validates first (Error).
  void apply(const SchemeAssignment& assignment);
  // The full-precision view (true) or the quantized one (false, the default). apply() needs the
  // quantized view.
  void show_original(bool original);
  void restore_all();
  // Components whose values differ from the loaded ones (in the quantized view).
  std::vector<std::string> changed() const;

 private:
  struct Slot {
    Param* param = nullptr;
    QuantScheme scheme;
    std::vector<float> aside;  // the originals (quantized view) or the quantized (original view)
  };
  Model& model_;
  ImportanceFn importance_;
  std::map<std::string, Slot> slots_;
  bool showing_original_ = false;
};

struct QuantEvalResult {
  double ppl = 0;        // quantized
  double ppl_fp = 0;     // full precision, same windows
  double mean_nll = 0, mean_nll_fp = 0;
  int64_t tokens = 0;    // scored tokens (ctx - 1 per window)
  int64_t windows = 0;
  int64_t ctx = 0;
  LogitResults logits;   // KL(P_fp || P_q) stats over every position, top-1, ...
  int64_t bytes = 0;     // whole model under the assignment
  int64_t params = 0;
  double bits_per_weight = 0;
  std::vector<std::string> changed;  // components whose weights changed
};

// Runs every window at full precision and quantized and compares them. The perplexities are
// accumulated exactly as eval/perplexity.h's perplexity() does (same per-token NLL, same order),
// so a quantized model evaluated here has bit-for-bit the perplexity `kllens ppl` gives it.
// The model's weights are unchanged afterwards.
QuantEvalResult evaluate_quantized(Model& model, const SchemeAssignment& assignment,
                                   const std::vector<std::vector<int32_t>>& windows,
                                   bool show_progress = true, const ImportanceFn& importance = {});

// The same comparison between two models: a float reference and a quantized model that runs on
// its packed weights (a GGUF file, or pack_model). bytes = the quantized model's resident weight
// bytes (callers with a file replace it by the file's size).
QuantEvalResult evaluate_models(const Model& reference, const Model& quantized,
                                const std::vector<std::vector<int32_t>>& windows,
                                bool show_progress = true);

// The result of one evaluation as `kllens eval --json` prints it (without source/model/text).
nlohmann::json eval_result_json(const QuantEvalResult& r);

}  // namespace kllens
