#include "export/gguf_export.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "export/gguf_vocab.h"
#include "io/json_file.h"
#include "io/hf_config.h"
#include "io/read_file.h"
#include "models/checkpoint.h"
#include "models/llama_layout.h"
#include "models/model.h"
#include "quant/formats.h"
#include "quant/quantize.h"

namespace kllens {

using gguf::GgmlType;

// ---------------------------------------------------------------------------------------------
// Encoding one matrix

uint32_t llama_file_type(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ5_0: return 8;
    case GgmlType::kQ5_1: return 9;
    case GgmlType::kQ2_K: return 10;
    case GgmlType::kQ3_K: return 12;  // the _M variants: what llama-quantize names these mixes
    case GgmlType::kQ4_K: return 15;
    case GgmlType::kQ5_K: return 17;
    case GgmlType::kQ6_K: return 18;
    case GgmlType::kIQ4_NL: return 25;
    case GgmlType::kIQ4_XS: return 30;
    case GgmlType::kBF16: return 32;
    default: fail("no llama file type for ggml type {}", gguf::type_name(type));
  }
}

namespace {


std::vector<uint8_t> f32_bytes(const float* w, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 4);
  std::memcpy(out.data(), w, out.size());
  return out;
}

std::vector<uint8_t> keep_bytes(QuantFormat format, const float* w, int64_t rows, int64_t cols) {
  QuantScheme s;
  s.format = format;
  s.bits = format == QuantFormat::kF32 ? 32 : 16;
  return quantize(s, w, rows, cols).data;
}

// Packs the codes and scales of an intB QTensor into ggml blocks without changing a value, or
// returns nullopt when the blocks cannot express them (groups not whole multiples of 32, scales
// or Q4_1 minimums that are not float16 values, codes out of the block's range).
std::optional<std::vector<uint8_t>> repack_exact(const QTensor& q, GgmlType type) {
  const int64_t g = q.group_size();
  if (g % 32 != 0 || q.cols % 32 != 0) return std::nullopt;
  const int64_t gpr = q.groups_per_row(), bpr = q.cols / 32;
  const int64_t block_bytes = gguf::type_traits(type).type_size;
  std::vector<uint8_t> out(static_cast<size_t>(q.rows * bpr * block_bytes));
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t b = 0; b < bpr; ++b) {
      const int64_t group = b * 32 / g;
      const float scale = q.scale(r, group);
      const uint16_t dh = f32_to_f16(scale);
      if (f16_to_f32(dh) != scale) return std::nullopt;
      const int zero = q.scheme.symmetric ? 0 : q.zero_points[static_cast<size_t>(r * gpr + group)];
      uint8_t* blk = out.data() + (r * bpr + b) * block_bytes;
      std::memcpy(blk, &dh, 2);
      if (type == GgmlType::kQ8_0) {
        for (int j = 0; j < 32; ++j) {
          const int v = q.code(r, b * 32 + j) - zero;
          if (v < -128 || v > 127) return std::nullopt;
          blk[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(v));
        }
      } else if (type == GgmlType::kQ4_0) {
        for (int j = 0; j < 16; ++j) {
          const int lo = q.code(r, b * 32 + j) + 8, hi = q.code(r, b * 32 + j + 16) + 8;
          if (lo < 0 || lo > 15 || hi < 0 || hi > 15) return std::nullopt;
          blk[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      } else {  // Q4_1: x = d * q + m with m = -z * scale
        const float m = -static_cast<float>(zero) * scale;
        const uint16_t mh = f32_to_f16(m);
        if (f16_to_f32(mh) != m) return std::nullopt;
        std::memcpy(blk + 2, &mh, 2);
        for (int j = 0; j < 16; ++j) {
          const int lo = q.code(r, b * 32 + j), hi = q.code(r, b * 32 + j + 16);
          if (lo < 0 || lo > 15 || hi < 0 || hi > 15) return std::nullopt;
          blk[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
    }
  }
  // The argument above says ggml decodes these blocks to exactly the scheme's values; check it
  // rather than trust it (a mismatch falls back to re-quantization).
  std::vector<float> want(static_cast<size_t>(q.rows * q.cols)), got(want.size());
  dequantize(q, want.data());
  gguf::to_f32(type, reinterpret_cast<const std::byte*>(out.data()), q.rows * q.cols, got.data());
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i] != got[i]) return std::nullopt;
  return out;
}

std::vector<uint8_t> requantize(GgmlType type, const float* w, int64_t rows, int64_t cols) {
  const BlockFormatTraits* t = block_traits_by_ggml_type(static_cast<uint32_t>(type));
  KLLENS_CHECK(t, "no quantizer for ggml type {}", gguf::type_name(type));
  return quantize(QuantScheme::parse(t->name), w, rows, cols).data;
}

}  // namespace

GgufEncoded encode_for_gguf(const QuantScheme& requested, const float* w, int64_t rows,
                            int64_t cols, int64_t ne0, const float* importance) {
  KLLENS_CHECK(ne0 > 0 && cols % ne0 == 0, "ne0 {} must divide cols {}", ne0, cols);
  GgufEncoded e;
  QuantScheme s = requested;
  if (s.is_block() && ne0 % s.effective_group(ne0) != 0) {
    // What llama-quantize stores for this shape (its tensor_type_fallback); the sweep measures
    // and sizes the same substitute (sensitivity/sweep.h).
    // llama-quantize refuses the formats without a fallback (q4_0, q8_0, ...); kllens stores
    // those rows as f16, as it always has for unusual shapes, and says so.
    const bool has_fallback = block_traits(requested.format)->shape_fallback != QuantFormat::kF32;
    s = stored_scheme(requested, ne0);
    e.fallback = true;
    e.exact = false;
    e.reason = fmt::format("row length {} is not a multiple of the {}-element {} block: stored as "
                           "{}{}",
                           ne0, requested.effective_group(ne0), requested.to_string(),
                           s.to_string(),
                           has_fallback ? ", llama-quantize's fallback for this shape"
                                        : " (llama-quantize has no fallback for it and refuses)");
  }
  e.type = gguf_storage_type(s, ne0);
  if (s.is_keep()) {
    e.data = keep_bytes(s.format, w, rows, cols);
    return e;
  }
  if (s.is_block()) {
    e.data = quantize(s, w, rows, cols, importance).data;
    return e;
  }
  if (ne0 % 32 != 0) {
    e.fallback = true;
    e.exact = false;
    e.reason = fmt::format("row length {} is not a multiple of 32, so no block type can hold it: "
                           "stored as f16 from the float weights (llama-quantize's fallback for "
                           "unusual shapes)",
                           ne0);
    e.data = keep_bytes(QuantFormat::kF16, w, rows, cols);
    return e;
  }
  e.fallback = true;
  const QTensor q = quantize(s, w, rows, cols);
  if (auto packed = repack_exact(q, e.type)) {
    e.data = std::move(*packed);
    e.reason = fmt::format("{} has no ggml type; its codes and scales are repacked into {} blocks "
                           "with identical values",
                           s.to_string(), gguf::type_name(e.type));
    return e;
  }
  e.exact = false;
  e.data = requantize(e.type, w, rows, cols);
  std::string why;
  if (q.group_size() % 32 != 0)
    why = fmt::format("its groups of {} do not line up with blocks of 32", q.group_size());
  else if (!s.scale_f16)
    why = "its float32 scales are not float16 values";
  else if (e.type == GgmlType::kQ4_1)
    why = "its zero points times scales are not float16 values";
  else
    why = "its codes do not fit the block's range";
  e.reason = fmt::format("{} has no ggml type and {}: re-quantized from the float weights with "
                         "ggml's {} quantizer (values differ from the scheme's)",
                         s.to_string(), why, gguf::type_name(e.type));
  return e;
}

// ---------------------------------------------------------------------------------------------
// Layouts

namespace {

std::vector<int64_t> reversed(std::vector<int64_t> v) { return {v.rbegin(), v.rend()}; }

}  // namespace

namespace {

// The scheme a stack of experts is stored with: one ggml type holds them all, so where the plan
// gives the experts different schemes the one with the most bytes wins (no expert loses
// precision), and the others are reported.
QuantScheme stack_scheme(const std::vector<const Param*>& members,
                         const SchemeAssignment& assignment, const std::string& stack_name,
                         std::vector<GgufFallback>* fallbacks) {
  std::vector<QuantScheme> schemes;
  for (const Param* m : members) {
    const auto it = assignment.find(m->name);
    schemes.push_back(it != assignment.end() ? it->second : checkpoint_scheme(*m));
  }
  size_t best = 0;
  for (size_t i = 1; i < schemes.size(); ++i)
    if (schemes[i].storage_bytes(members[i]->rows(), members[i]->cols()) >
        schemes[best].storage_bytes(members[best]->rows(), members[best]->cols()))
      best = i;
  for (size_t i = 0; i < schemes.size(); ++i)
    if (schemes[i].to_string() != schemes[best].to_string())
      fallbacks->push_back({stack_name, schemes[i].to_string(), schemes[best].to_string(), false,
                            fmt::format("llama.cpp stacks the {} experts of {} into one tensor of "
                                        "one type: expert {} ({}) is stored as {}, the "
                                        "largest scheme among them",
                                        members.size(), stack_name, i, members[i]->name,
                                        schemes[best].to_string())});
  return schemes[best];
}

}  // namespace

GgufExportResult export_gguf(const Model& model, const SchemeAssignment& assignment,
                             const std::string& out_path, const GgufExportOptions& options) {
  const Weights& weights = model.weights();
  for (const auto& [name, scheme] : assignment) {
    const Param* p = weights.find(name);
    if (!p)
      fail("the plan names {}, which this model ({}, {} layers) does not have", name,
           model.info().arch, model.info().n_layers);
    if (!p->is_component())
      fail("the plan names {}, which is not a quantizable component (a 2+-D *.weight)", name);
  }

  const std::string folder = model.info().folder;
  const CheckpointConfig checkpoint = read_checkpoint_config(folder);
  const std::string& config_text = checkpoint.text;
  const HfConfig& config = checkpoint.config;

  GgufExportResult res;
  res.path = out_path;
  const std::string& arch = model.info().arch;
  // The layout decided at load (models/llama_layout.h).
  const LlamaLayout layout = model.llama_layout() ? *model.llama_layout() : LlamaLayout{};
  const std::string& why = model.info().llama_cpp_layout_why_not;
  res.llama_cpp_layout = model.llama_layout() != nullptr;
  if (!why.empty())
    res.notes.push_back(fmt::format("written with kllens' own keys (kllens.{}), which llama.cpp "
                                    "cannot load: {}",
                                    arch, why));
  const bool llama = res.llama_cpp_layout;
  res.architecture = llama ? layout.arch : "kllens." + arch;

  gguf::Writer w;
  w.set("general.architecture", res.architecture);
  std::filesystem::path folder_path(folder);
  if (folder_path.filename().empty()) folder_path = folder_path.parent_path();  // "dir/"
  w.set("general.name", folder_path.filename().string());
  if (llama) {
    for (const auto& [key, value] : layout.keys) w.set(key, value);
    for (const std::string& n : layout.notes) res.notes.push_back(n);
    const std::string norm = model.info().detail("gated_norm");
    if (norm.find("--mamba2-norm full") != std::string::npos)
      res.notes.push_back("this model runs transformers' full-width gated norm (--mamba2-norm "
                          "full); llama.cpp normalizes per group, so its logits will differ");
  }

  // Stacked experts: the members of each stack, in expert order.
  std::map<std::string, std::vector<const Param*>> stacks;
  if (llama)
    for (const auto& pp : weights.all()) {
      const LlamaTensor& t = layout.tensors.at(pp->name);
      if (!t.stacked()) continue;
      auto& members = stacks[t.name];
      members.resize(static_cast<size_t>(t.n_expert), nullptr);
      members[static_cast<size_t>(t.expert)] = pp.get();
    }
  for (const auto& [name, members] : stacks)
    for (size_t e = 0; e < members.size(); ++e)
      if (!members[e]) fail("{}: expert {} of {} is missing", folder, e, name);

  // Tensors, in the checkpoint table's order (a stack where its first expert is).
  std::map<GgmlType, int64_t> component_params;
  bool any_quantized = false;
  for (const auto& pp : weights.all()) {
    const Param& p = *pp;
    const LlamaTensor t = llama ? layout.tensors.at(p.name) : LlamaTensor{p.name};
    if (t.stacked() && t.expert != 0) continue;  // written with expert 0
    GgufTensorRecord rec;
    rec.hf_name = p.name;
    rec.name = t.name;
    rec.ne = reversed(llama_file_shape(t, p.shape));
    const int64_t rows = p.rows(), cols = p.cols();
    if (!p.is_component()) {
      rec.type = GgmlType::kF32;
      std::vector<float> values = to_llama_values(t, p.data(), rows, cols);
      w.add_tensor(rec.name, rec.ne, rec.type, f32_bytes(values.data(), p.numel()));
    } else if (t.stacked()) {
      const std::vector<const Param*>& members = stacks.at(t.name);
      const QuantScheme scheme = stack_scheme(members, assignment, t.name, &res.fallbacks);
      rec.scheme = scheme.to_string();
      w.set("kllens.scheme." + rec.name, rec.scheme);
      std::vector<uint8_t> data;
      for (const Param* m : members) {
        if (m->shape != p.shape) fail("{}: the experts of {} differ in shape", folder, t.name);
        const std::vector<float> values = to_llama_values(layout.tensors.at(m->name), m->data(), rows, cols);
        const float* importance = options.importance ? options.importance(m->name, cols) : nullptr;
        GgufEncoded e = encode_for_gguf(scheme, values.data(), rows, cols, rec.ne[0], importance);
        if (m == members.front()) {
          rec.type = e.type;
          if (e.fallback)
            res.fallbacks.push_back({rec.name, rec.scheme, std::string(gguf::type_name(e.type)),
                                     e.exact, e.reason});
        }
        data.insert(data.end(), e.data.begin(), e.data.end());
      }
      w.add_tensor(rec.name, rec.ne, rec.type, std::move(data));
      component_params[rec.type] += p.numel() * static_cast<int64_t>(members.size());
      if (block_traits_by_ggml_type(static_cast<uint32_t>(rec.type))) any_quantized = true;
    } else {
      std::vector<float> values = to_llama_values(t, p.data(), rows, cols);
      auto it = assignment.find(p.name);
      const bool assigned = it != assignment.end();
      const QuantScheme scheme = assigned ? it->second : checkpoint_scheme(p);
      rec.scheme = scheme.to_string();
      w.set("kllens.scheme." + rec.name, rec.scheme);
      if (llama && p.role == Role::kConv1d) {
        // llama.cpp's CPU ssm_conv reads F32 only: store the scheme's values in F32.
        if (assigned && scheme.format != QuantFormat::kF32) {
          if (scheme.supports(cols)) fake_quantize(scheme, values.data(), rows, cols);
          res.fallbacks.push_back({rec.name, rec.scheme, "f32", scheme.supports(cols),
                                   scheme.supports(cols)
                                       ? "llama.cpp's ssm_conv needs f32: the scheme's "
                                         "fake-quantized values are stored as f32"
                                       : "llama.cpp's ssm_conv needs f32 and the scheme cannot "
                                         "hold this row length: the float weights are stored"});
        }
        rec.type = GgmlType::kF32;
        w.add_tensor(rec.name, rec.ne, rec.type, f32_bytes(values.data(), p.numel()));
      } else {
        const float* importance =
            options.importance ? options.importance(p.name, cols) : nullptr;
        GgufEncoded e = encode_for_gguf(scheme, values.data(), rows, cols, rec.ne[0], importance);
        if (e.fallback)
          res.fallbacks.push_back({rec.name, rec.scheme, std::string(gguf::type_name(e.type)),
                                   e.exact, e.reason});
        rec.type = e.type;
        w.add_tensor(rec.name, rec.ne, rec.type, std::move(e.data));
      }
      if (p.role != Role::kConv1d) component_params[rec.type] += p.numel();
      if (block_traits_by_ggml_type(static_cast<uint32_t>(rec.type))) any_quantized = true;
    }
    rec.bytes = gguf::tensor_bytes(rec.type, rec.ne);
    res.tensors.push_back(std::move(rec));
  }

  GgmlType dominant = GgmlType::kF32;
  int64_t most = -1;
  for (const auto& [type, n] : component_params)
    if (n > most) {
      most = n;
      dominant = type;
    }
  res.file_type = llama_file_type(dominant);
  w.set("general.file_type", res.file_type);
  if (any_quantized) w.set("general.quantization_version", uint32_t{2});

  std::string tok_path = options.tokenizer_json;
  if (tok_path.empty()) {
    const auto candidate = std::filesystem::path(folder) / "tokenizer.json";
    if (std::filesystem::exists(candidate)) tok_path = candidate.string();
  }
  if (!tok_path.empty()) {
    const GgufVocab vocab = read_gguf_vocab(tok_path, model.info().vocab, config.json());
    add_vocab_keys(w, vocab);
    res.vocab_tokens = static_cast<int64_t>(vocab.tokens.size());
    for (const auto& n : vocab.notes) res.notes.push_back("tokenizer: " + n);
    // The tokenizer.json itself too, so kllens can tokenize text for the file exactly as for
    // the folder (llama.cpp ignores keys it does not know).
    w.set("kllens.tokenizer_json", read_file(tok_path));
  } else if (llama) {
    // llama.cpp loads a file without a vocabulary when tokenizer.ggml.model is "none" (then its
    // token count comes from {arch}.vocab_size): token ids in, logits out.
    w.set("tokenizer.ggml.model", std::string("none"));
    if (!w.has(res.architecture + ".vocab_size"))
      w.set(res.architecture + ".vocab_size", static_cast<uint32_t>(model.info().vocab));
    res.notes.push_back(fmt::format("{} has no tokenizer.json: the file has no vocabulary "
                                    "(tokenizer.ggml.model = none); llama.cpp runs it on token ids",
                                    folder));
  } else {
    res.notes.push_back(fmt::format("{} has no tokenizer.json: the file has no tokenizer keys",
                                    folder));
  }

  w.set("kllens.format_version", uint32_t{1});
  // The config the tensors go with: as the checkpoint has it, or with the multipliers the layout
  // folded into the weights set to 1.
  w.set("kllens.hf_config", llama && !layout.stored_config.is_null() ? layout.stored_config.dump(2)
                                                                      : config_text);
  w.write(out_path);
  res.file_bytes = std::filesystem::file_size(out_path);
  return res;
}

}  // namespace kllens

