#include "eval/quantized_eval.h"

#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "models/model.h"
#include "quant/formats.h"
#include "quant/quantize.h"

namespace kllens {

namespace {

// Whether applying `scheme` to this parameter leaves it unchanged, so no copy is needed: a bf16
// keep on a bf16 checkpoint, or f32 (a verbatim copy) on anything.
bool is_identity(const Param& p, const QuantScheme& scheme) {
  if (scheme.format == QuantFormat::kF32) return true;
  if (scheme.format == QuantFormat::kBF16) return p.source_dtype == DType::kBF16;
  if (scheme.format == QuantFormat::kF16) return p.source_dtype == DType::kF16;
  return false;
}

}  // namespace

SchemeAssignment uniform_assignment(const Model& model, const QuantScheme& scheme, bool include_conv1d,
                                    std::vector<std::string>* unsupported) {
  SchemeAssignment a;
  for (const Param* p : model.weights().components()) {
    if (p->role == Role::kConv1d && !include_conv1d) continue;
    if (unsupported && !(stored_scheme(scheme, p->cols()) == scheme)) unsupported->push_back(p->name);
    a[p->name] = scheme;
  }
  return a;
}

void validate_assignment(const Model& model, const SchemeAssignment& assignment) {
  for (const auto& [name, scheme] : assignment) {
    const Param* p = model.weights().find(name);
    if (!p)
      fail("the plan names {}, which this model ({}, {} layers) does not have", name,
           model.info().arch, model.info().n_layers);
    if (!p->is_component())
      fail("the plan names {}, which is not a quantizable component (a 2+-D *.weight)", name);
    stored_scheme(scheme, p->cols()).check_shape(p->rows(), p->cols(), name);
  }
}

QuantScheme checkpoint_scheme(const Param& p) {
  switch (p.source_dtype) {
    case DType::kBF16: return QuantScheme::parse("bf16");
    case DType::kF16: return QuantScheme::parse("f16");
    default: return QuantScheme::parse("f32");
  }
}

int64_t component_gguf_bytes(const Model& model, const Param& p, const QuantScheme& scheme) {
  const std::vector<int64_t> ne(p.shape.rbegin(), p.shape.rend());
  // llama.cpp's CPU ssm_conv reads F32 only, so its layout stores conv1d F32 whatever is asked.
  const bool fixed_f32 = model.info().llama_cpp_layout && p.role == Role::kConv1d;
  if (fixed_f32) return 4 * p.numel();
  // intB has no ggml type: it is sized as kllens packs it (what evaluation and the packed runtime
  // hold); its GGUF file stores the nearest ggml type instead and says so (export/gguf_export.h).
  if (scheme.is_int()) return scheme.storage_bytes(p.rows(), p.cols());
  return static_cast<int64_t>(gguf::tensor_bytes(gguf_storage_type(scheme, ne[0]), ne));
}

int64_t non_component_gguf_bytes(const Model& model) {
  int64_t bytes = 0;
  for (const auto& p : model.weights().all())
    if (!p->is_component()) bytes += 4 * p->numel();  // F32, as llama.cpp's converter writes them
  return bytes;
}

int64_t assignment_bytes(const Model& model, const SchemeAssignment& assignment) {
  int64_t bytes = non_component_gguf_bytes(model);
  for (const Param* p : model.weights().components()) {
    auto it = assignment.find(p->name);
    bytes += component_gguf_bytes(model, *p, it == assignment.end() ? checkpoint_scheme(*p) : it->second);
  }
  return bytes;
}

int64_t component_file_bytes(const Model& model, const Param& p, const QuantScheme& scheme) {
  if (!scheme.is_int() || (model.info().llama_cpp_layout && p.role == Role::kConv1d))
    return component_gguf_bytes(model, p, scheme);
  const std::vector<int64_t> ne(p.shape.rbegin(), p.shape.rend());
  return static_cast<int64_t>(gguf::tensor_bytes(gguf_storage_type(scheme, ne[0]), ne));
}

int64_t uniform_gguf_bytes(const Model& model, const QuantScheme& scheme) {
  int64_t bytes = non_component_gguf_bytes(model);
  for (const Param* p : model.weights().components())
    bytes += component_file_bytes(model, *p, p->role == Role::kConv1d ? checkpoint_scheme(*p) : scheme);
  return bytes;
}

WeightSwap::WeightSwap(Model& model, ImportanceFn importance)
    : model_(model), importance_(std::move(importance)) {
  for (const auto& p : model.weights().all())
    if (p->is_packed())
      fail("this model is already quantized ({} is stored as {}): quantizing components needs "
           "the float model (give the Hugging Face folder, not a GGUF file)",
           p->name, p->packed->scheme.to_string());
}

WeightSwap::~WeightSwap() { restore_all(); }

void WeightSwap::show_original(bool original) {
  if (original == showing_original_) return;
  for (auto& [name, slot] : slots_) std::swap(slot.param->value, slot.aside);
  showing_original_ = original;
}

void WeightSwap::restore_all() {
  show_original(false);
  for (auto& [name, slot] : slots_) slot.param->value = std::move(slot.aside);
  slots_.clear();
}

void WeightSwap::apply(const SchemeAssignment& assignment) {
  KLLENS_CHECK(!showing_original_, "WeightSwap::apply in the original view");
  validate_assignment(model_, assignment);
  // Restore what is no longer wanted (or wanted at another scheme).
  for (auto it = slots_.begin(); it != slots_.end();) {
    auto want = assignment.find(it->first);
    if (want == assignment.end() || !(want->second == it->second.scheme)) {
      it->second.param->value = std::move(it->second.aside);
      it = slots_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, scheme] : assignment) {
    if (slots_.count(name)) continue;
    Param& p = model_.weights().get(name);
    if (is_identity(p, scheme)) continue;
    Slot slot;
    slot.param = &p;
    slot.scheme = scheme;
    slot.aside = p.value;
    try {
      fake_quantize(stored_scheme(scheme, p.cols()), p.data(), p.rows(), p.cols(),
                    importance_ ? importance_(p) : nullptr);
    } catch (...) {
      p.value = std::move(slot.aside);
      throw;
    }
    slots_.emplace(name, std::move(slot));
  }
}

std::vector<std::string> WeightSwap::changed() const {
  std::vector<std::string> out;
  for (const auto& [name, slot] : slots_) out.push_back(name);
  return out;
}

namespace {

// Runs every window through `reference` and `test` (each returns logits {T, vocab}) and
// accumulates the comparison and both perplexities exactly as perplexity() does.
template <typename RefFn, typename TestFn>
void compare_windows(const std::vector<std::vector<int32_t>>& windows, int64_t V, RefFn&& reference,
                     TestFn&& test, bool show_progress, QuantEvalResult& r) {
  if (windows.empty()) fail("evaluation needs at least one window");
  LogitComparison cmp;
  double nll_q = 0, nll_fp = 0;
  std::optional<Progress> progress;
  if (show_progress) progress.emplace("eval", static_cast<int64_t>(windows.size()));
  for (const auto& w : windows) {
    const auto fp = reference(w);
    const auto q = test(w);
    for (size_t t = 0; t < w.size(); ++t) {
      const float* ref = fp.data() + t * static_cast<size_t>(V);
      const float* out = q.data() + t * static_cast<size_t>(V);
      const bool has_target = t + 1 < w.size();
      cmp.add(ref, out, static_cast<int>(V), has_target ? w[t + 1] : -1);
      if (has_target) {
        // The accumulation of perplexity(): same function, same order.
        nll_q += token_nll(out, V, w[t + 1]);
        nll_fp += token_nll(ref, V, w[t + 1]);
        ++r.tokens;
      }
    }
    ++r.windows;
    if (progress) progress->advance();
  }
  if (progress) progress->finish();
  r.ctx = static_cast<int64_t>(windows[0].size());
  r.mean_nll = r.tokens ? nll_q / static_cast<double>(r.tokens) : 0;
  r.mean_nll_fp = r.tokens ? nll_fp / static_cast<double>(r.tokens) : 0;
  r.ppl = std::exp(r.mean_nll);
  r.ppl_fp = std::exp(r.mean_nll_fp);
  r.logits = cmp.results();
}

}  // namespace

QuantEvalResult evaluate_quantized(Model& model, const SchemeAssignment& assignment,
                                   const std::vector<std::vector<int32_t>>& windows,
                                   bool show_progress, const ImportanceFn& importance) {
  if (windows.empty()) fail("evaluation needs at least one window");
  QuantEvalResult r;
  r.params = model.weights().total_params();
  r.bytes = assignment_bytes(model, assignment);
  r.bits_per_weight = 8.0 * static_cast<double>(r.bytes) / static_cast<double>(r.params);
  WeightSwap swap(model, importance);
  swap.apply(assignment);
  r.changed = swap.changed();
  compare_windows(
      windows, model.info().vocab,
      [&](const std::vector<int32_t>& w) {
        swap.show_original(true);
        return model.forward(w);
      },
      [&](const std::vector<int32_t>& w) {
        swap.show_original(false);
        return model.forward(w);
      },
      show_progress, r);
  swap.restore_all();
  return r;
}

QuantEvalResult evaluate_models(const Model& reference, const Model& quantized,
                                const std::vector<std::vector<int32_t>>& windows,
                                bool show_progress) {
  if (reference.info().vocab != quantized.info().vocab ||
      reference.weights().total_params() != quantized.weights().total_params())
    fail("the reference model ({}, {} parameters, vocabulary {}) is not the model the quantized "
         "one was made from ({}, {} parameters, vocabulary {})",
         reference.info().arch, reference.weights().total_params(), reference.info().vocab,
         quantized.info().arch, quantized.weights().total_params(), quantized.info().vocab);
  QuantEvalResult r;
  r.params = quantized.weights().total_params();
  r.bytes = resident_weight_bytes(quantized.weights());
  r.bits_per_weight = 8.0 * static_cast<double>(r.bytes) / static_cast<double>(r.params);
  compare_windows(
      windows, reference.info().vocab,
      [&](const std::vector<int32_t>& w) { return reference.forward(w); },
      [&](const std::vector<int32_t>& w) { return quantized.forward(w); }, show_progress, r);
  return r;
}

nlohmann::json eval_result_json(const QuantEvalResult& r) {
  const LogitResults& l = r.logits;
  return {{"ppl", r.ppl},
          {"ppl_fp", r.ppl_fp},
          {"kl",
           {{"mean", l.kl_forward.mean},
            {"stderr", l.kl_forward.stderr_},
            {"median", l.kl_median},
            {"p90", l.kl_p90},
            {"p99", l.kl_p99},
            {"max", l.kl_max}}},
          {"rkl", {{"mean", l.kl_reverse.mean}, {"stderr", l.kl_reverse.stderr_}}},
          {"top1", l.top1.mean},
          {"top1_stderr", l.top1.stderr_},
          {"delta_nll", {{"mean", l.delta_nll.mean}, {"stderr", l.delta_nll.stderr_}}},
          {"bytes", r.bytes},
          {"bits_per_weight", r.bits_per_weight},
          {"params", r.params},
          {"components_changed", r.changed.size()},
          {"tokens", r.tokens},
          {"positions", l.positions},
          {"windows", r.windows},
          {"ctx", r.ctx}};
}

}  // namespace kllens
