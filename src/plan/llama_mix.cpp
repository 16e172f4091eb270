#include "plan/llama_mix.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>
#include <set>

#include "core/error.h"
#include "io/gguf.h"
#include "quant/formats.h"

namespace kllens {

namespace {

using gguf::GgmlType;

// ---- ggml types ----

// The ggml types these rules produce or read (ggml_type_name spellings).
struct TypeRow {
  std::string_view name;
  GgmlType type;
  bool quantized;  // ggml_is_quantized
};
constexpr TypeRow kTypes[] = {
    {"f32", GgmlType::kF32, false},     {"f16", GgmlType::kF16, false},
    {"bf16", GgmlType::kBF16, false},   {"q4_0", GgmlType::kQ4_0, true},
    {"q4_1", GgmlType::kQ4_1, true},    {"q5_0", GgmlType::kQ5_0, true},
    {"q5_1", GgmlType::kQ5_1, true},    {"q8_0", GgmlType::kQ8_0, true},
    {"q2_K", GgmlType::kQ2_K, true},    {"q3_K", GgmlType::kQ3_K, true},
    {"q4_K", GgmlType::kQ4_K, true},    {"q5_K", GgmlType::kQ5_K, true},
    {"q6_K", GgmlType::kQ6_K, true},    {"iq4_nl", GgmlType::kIQ4_NL, true},
    {"iq4_xs", GgmlType::kIQ4_XS, true},
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

const TypeRow* find_type(std::string_view name) {
  for (const auto& t : kTypes)
    if (iequals(t.name, name)) return &t;
  return nullptr;
}

std::string known_types() {
  std::string s;
  for (const auto& t : kTypes) {
    if (!s.empty()) s += ' ';
    s += t.name;
  }
  return s;
}

const TypeRow& type_row(std::string_view name) {
  const TypeRow* t = find_type(name);
  if (!t) fail("unknown ggml type '{}' (known: {})", name, known_types());
  return *t;
}

int64_t block_of(std::string_view name) { return gguf::type_traits(type_row(name).type).block_size; }

// ---- mixes ----

enum class Mix {
  kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ2_K, kQ3_K_S, kQ3_K_M, kQ3_K_L, kQ4_K_S, kQ4_K_M,
  kQ5_K_S, kQ5_K_M, kQ6_K, kIQ4_NL, kIQ4_XS, kF16, kBF16, kF32,
};
struct MixRow {
  std::string_view name;
  Mix mix;
  std::string_view base;
};
constexpr MixRow kMixes[] = {
    {"Q4_0", Mix::kQ4_0, "q4_0"},       {"Q4_1", Mix::kQ4_1, "q4_1"},
    {"Q5_0", Mix::kQ5_0, "q5_0"},       {"Q5_1", Mix::kQ5_1, "q5_1"},
    {"Q8_0", Mix::kQ8_0, "q8_0"},       {"Q2_K", Mix::kQ2_K, "q2_K"},
    {"Q3_K_S", Mix::kQ3_K_S, "q3_K"},   {"Q3_K_M", Mix::kQ3_K_M, "q3_K"},
    {"Q3_K_L", Mix::kQ3_K_L, "q3_K"},   {"Q4_K_S", Mix::kQ4_K_S, "q4_K"},
    {"Q4_K_M", Mix::kQ4_K_M, "q4_K"},   {"Q5_K_S", Mix::kQ5_K_S, "q5_K"},
    {"Q5_K_M", Mix::kQ5_K_M, "q5_K"},   {"Q6_K", Mix::kQ6_K, "q6_K"},
    {"IQ4_NL", Mix::kIQ4_NL, "iq4_nl"}, {"IQ4_XS", Mix::kIQ4_XS, "iq4_xs"},
    {"F16", Mix::kF16, "f16"},          {"BF16", Mix::kBF16, "bf16"},
    {"F32", Mix::kF32, "f32"},
};

const MixRow& mix_row(std::string_view name) {
  // llama-quantize's aliases (tools/quantize/quantize.cpp QUANT_OPTIONS).
  std::string_view n = name;
  if (iequals(n, "Q3_K")) n = "Q3_K_M";
  if (iequals(n, "Q4_K")) n = "Q4_K_M";
  if (iequals(n, "Q5_K")) n = "Q5_K_M";
  for (const auto& m : kMixes)
    if (iequals(m.name, n)) return m;
  std::string all;
  for (const auto& m : kMixes) {
    if (!all.empty()) all += ' ';
    all += m.name;
  }
  throw UsageError(fmt::format("unknown llama-quantize mix '{}' (known here: {})", name, all));
}

// ---- names and order ----

// sscanf(name, "blk.%d.", &layer) == 1
std::optional<int> blk_layer(std::string_view name) {
  if (name.rfind("blk.", 0) != 0) return std::nullopt;
  size_t i = 4;
  bool neg = false;
  if (i < name.size() && (name[i] == '-' || name[i] == '+')) neg = name[i++] == '-';
  const size_t start = i;
  long long v = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && i - start < 9)
    v = v * 10 + (name[i++] - '0');
  if (i == start) return std::nullopt;
  return static_cast<int>(neg ? -v : v);
}

// weight_name_comparer: layer first, then strcmp on the full name.
template <typename T, typename KeyFn>
void sort_walk(std::vector<T>& v, KeyFn layer_key) {
  std::stable_sort(v.begin(), v.end(), [&](const T& a, const T& b) {
    const int la = layer_key(a), lb = layer_key(b);
    if (la != lb) return la < lb;
    return std::strcmp(a.gguf_name.c_str(), b.gguf_name.c_str()) < 0;
  });
}

// ---- eligibility and categories ----

enum class Cat { kTokenEmbd, kOutput, kAttnV, kAttnK, kAttnQ, kAttnOutput, kFfnUp, kFfnGate, kFfnDown, kOther };

std::string_view cat_name(Cat c) {
  switch (c) {
    case Cat::kTokenEmbd: return "token_embd";
    case Cat::kOutput: return "output";
    case Cat::kAttnV: return "attn_v";
    case Cat::kAttnK: return "attn_k";
    case Cat::kAttnQ: return "attn_q";
    case Cat::kAttnOutput: return "attn_output";
    case Cat::kFfnUp: return "ffn_up";
    case Cat::kFfnGate: return "ffn_gate";
    case Cat::kFfnDown: return "ffn_down";
    case Cat::kOther: return "other";
  }
  return "other";
}

// Why llama-quantize never quantizes a tensor of this role ("" when it may).
std::string_view ineligible_reason(Role role) {
  switch (role) {
    case Role::kConv1d: return "conv1d: llama-quantize never quantizes ssm_conv1d";
    case Role::kRouter: return "MoE router: llama-quantize never quantizes ffn_gate_inp";
    case Role::kNorm: return "norm: llama-quantize never quantizes *_norm.weight or 1-D tensors";
    case Role::kBias: return "bias: not a *.weight tensor";
    case Role::kSsmA: return "A_log (ssm_a): not a *.weight tensor";
    case Role::kSsmD: return "D (ssm_d): not a *.weight tensor";
    case Role::kDtBias: return "dt bias: not a *.weight tensor";
    case Role::kMetaTokens: return "meta tokens: not a *.weight tensor";
    default: return "";
  }
}

Cat category(Role role) {
  switch (role) {
    case Role::kEmbed: return Cat::kTokenEmbd;
    case Role::kHead: return Cat::kOutput;
    case Role::kV: return Cat::kAttnV;
    case Role::kK: return Cat::kAttnK;
    case Role::kQ: return Cat::kAttnQ;
    case Role::kO: return Cat::kAttnOutput;
    case Role::kUp: return Cat::kFfnUp;
    case Role::kGate: return Cat::kFfnGate;
    case Role::kDown: return Cat::kFfnDown;
    default: return Cat::kOther;
  }
}

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

struct State {
  const LlamaModelFacts& facts;
  Mix mix;
  bool imatrix;
  bool tied;
  int n_attention_wv = 0, n_ffn_down = 0, n_ffn_gate = 0, n_ffn_up = 0;
  int i_attention_wv = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool falcon() const { return facts.arch == "falcon"; }
  int n_expert() const { return static_cast<int>(facts.n_expert); }
};

bool is(Mix m, std::initializer_list<Mix> set) { return std::find(set.begin(), set.end(), m) != set.end(); }

// layer_info: with experts, the block number of the tensor (its name's, or kllens' layer in
// kllens' own layout); otherwise the running counter. n = n_layer.
std::pair<int, int> layer_info(const State& s, int counter, int n, const LlamaMixTensor& t) {
  if (std::max<int64_t>(1, s.facts.n_expert) <= 1) return {counter, n};
  int layer = t.layer;
  if (s.facts.llama_cpp_layout) {
    const auto l = blk_layer(t.gguf_name);
    if (!l) fail("llama-quantize cannot determine the layer of {} (no blk.N. prefix)", t.gguf_name);
    layer = *l;
  }
  if (layer < 0 || layer >= n)
    fail("llama-quantize: bad layer {} for tensor {}: must be in [0, {})", layer, t.gguf_name, n);
  return {layer, n};
}

// llama_tensor_get_type_impl for the mixes of kMixes. `type` enters as the base type.
std::string mix_rule(State& s, const LlamaMixTensor& t, Cat cat, std::string type, std::string* why) {
  const Mix m = s.mix;
  const auto set = [&](std::string_view to, std::string text) {
    type = std::string(to);
    *why = std::move(text);
  };
  if (cat == Cat::kOutput || (s.tied && cat == Cat::kTokenEmbd)) {
    const std::string what = cat == Cat::kOutput ? "output" : "tied token_embd (used as output)";
    if (s.falcon()) {
      set("q8_0", what + ": q8_0 for arch falcon");
    } else if (t.cols % block_of(type) != 0) {
      set("q8_0", fmt::format("{}: ne0 {} is not a multiple of the base type {}'s block {}: q8_0",
                              what, t.cols, type, block_of(type)));
    } else if (type != "q8_0") {
      set("q6_K", what + ": q6_K");
    } else {
      *why = what + ": q8_0 (the base type)";
    }
    return type;
  }
  if (cat == Cat::kTokenEmbd) {
    *why = "token_embd (untied): base type";
    return type;
  }
  if (cat == Cat::kAttnV) {
    const int i = s.i_attention_wv, n = s.n_attention_wv;
    const std::string at = fmt::format("attn_v #{} of {}", i, n);
    *why = at + ": base type";
    if (m == Mix::kQ2_K) {
      set(s.facts.n_gqa >= 4 ? "q4_K" : "q3_K",
          fmt::format("{}: Q2_K gives {} (n_gqa {})", at, s.facts.n_gqa >= 4 ? "q4_K" : "q3_K",
                      s.facts.n_gqa));
    } else if (m == Mix::kQ3_K_M) {
      set(i < 2 ? "q5_K" : "q4_K", fmt::format("{}: Q3_K_M gives the first two q5_K, the rest q4_K", at));
    } else if (m == Mix::kQ3_K_L) {
      set("q5_K", at + ": Q3_K_L gives q5_K");
    } else if (is(m, {Mix::kIQ4_NL, Mix::kIQ4_XS}) && s.facts.n_gqa >= 4) {
      set("q5_K", fmt::format("{}: q5_K for n_gqa {} >= 4", at, s.facts.n_gqa));
    } else if (is(m, {Mix::kQ4_K_M, Mix::kQ5_K_M}) && use_more_bits(i, n)) {
      set("q6_K", at + ": use_more_bits: q6_K");
    } else if (m == Mix::kQ4_K_S && i < 4) {
      set("q5_K", at + ": Q4_K_S gives the first four q5_K");
    }
    if (s.facts.llm_type_70b && (type == "q3_K" || type == "q4_K")) {
      type = "q5_K";
      *why += "; raised to q5_K for a 70B llama";
    }
    if (s.facts.n_expert == 8) set("q8_0", at + ": q8_0 for 8 experts");
    ++s.i_attention_wv;
    return type;
  }
  if (cat == Cat::kAttnK) {
    if (s.facts.n_expert == 8)
      set("q8_0", "attn_k: q8_0 for 8 experts");
    else
      *why = "attn_k: base type";
    return type;
  }
  if (cat == Cat::kAttnQ) {
    *why = "attn_q: base type";
    return type;
  }
  if (cat == Cat::kFfnDown) {
    const auto [i, n] = layer_info(s, s.i_ffn_down, s.n_ffn_down, t);
    const std::string at = s.facts.n_expert > 1 ? fmt::format("ffn_down of layer {} of {}", i, n)
                                                : fmt::format("ffn_down #{} of {}", i, n);
    *why = at + ": base type";
    const bool umb = use_more_bits(i, n);
    if (m == Mix::kQ2_K) {
      set("q3_K", at + ": Q2_K gives q3_K");
    } else if (m == Mix::kQ3_K_M) {
      if (i < n / 16)
        set("q5_K", fmt::format("{}: Q3_K_M gives q5_K below n/16 = {}", at, n / 16));
      else if (!s.falcon() || umb)
        set("q4_K", at + ": Q3_K_M gives q4_K");
      else
        set("q3_K", at + ": Q3_K_M gives falcon q3_K");
    } else if (m == Mix::kQ3_K_L) {
      set(s.falcon() ? "q4_K" : "q5_K", at + ": Q3_K_L");
    } else if (m == Mix::kQ4_K_M) {
      if (s.falcon()) {
        set(i < n / 16 ? "q6_K" : umb ? "q5_K" : "q4_K", at + ": Q4_K_M falcon rule");
      } else if (umb) {
        set("q6_K", at + ": use_more_bits: q6_K");
      }
    } else if (i < n / 8 && is(m, {Mix::kIQ4_NL, Mix::kIQ4_XS}) && !s.imatrix) {
      set("q5_K", fmt::format("{}: q5_K below n/8 = {} without an imatrix", at, n / 8));
    } else if (m == Mix::kQ5_K_M && umb) {
      set("q6_K", at + ": use_more_bits: q6_K");
    } else if (m == Mix::kQ4_K_S && !s.falcon() && i < n / 8) {
      set("q5_K", fmt::format("{}: Q4_K_S gives q5_K below n/8 = {}", at, n / 8));
    } else if (is(m, {Mix::kQ4_0, Mix::kQ5_0}) && s.imatrix && i < n / 8) {
      set(m == Mix::kQ4_0 ? "q4_1" : "q5_1",
          fmt::format("{}: with an imatrix, {} below n/8 = {}", at, m == Mix::kQ4_0 ? "q4_1" : "q5_1", n / 8));
    }
    ++s.i_ffn_down;
    return type;
  }
  if (cat == Cat::kAttnOutput) {
    *why = "attn_output: base type";
    if (!s.falcon()) {
      if (s.facts.n_expert == 8) {
        if (is(m, {Mix::kQ2_K, Mix::kQ3_K_S, Mix::kQ3_K_M, Mix::kIQ4_NL, Mix::kQ4_K_S, Mix::kQ4_K_M,
                   Mix::kIQ4_XS}))
          set("q5_K", "attn_output: q5_K for 8 experts");
      } else if (m == Mix::kQ2_K) {
        set("q3_K", "attn_output: Q2_K gives q3_K");
      } else if (m == Mix::kQ3_K_M) {
        set("q4_K", "attn_output: Q3_K_M gives q4_K");
      } else if (m == Mix::kQ3_K_L) {
        set("q5_K", "attn_output: Q3_K_L gives q5_K");
      }
    } else if (m == Mix::kQ3_K_L) {
      set("q4_K", "attn_output: Q3_K_L falcon gives q4_K");
    }
    return type;
  }
  if (cat == Cat::kFfnGate || cat == Cat::kFfnUp) {
    // Only IQ3_XS changes these; the counters still advance (and layer_info still checks).
    int& counter = cat == Cat::kFfnGate ? s.i_ffn_gate : s.i_ffn_up;
    layer_info(s, counter, cat == Cat::kFfnGate ? s.n_ffn_gate : s.n_ffn_up, t);
    ++counter;
    *why = std::string(cat_name(cat)) + ": base type";
    return type;
  }
  *why = "other: base type";
  return type;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const std::vector<std::string>& llama_mix_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& m : kMixes) v.emplace_back(m.name);
    return v;
  }();
  return names;
}

std::string llama_mix_base_type(std::string_view mix) { return std::string(mix_row(mix).base); }
std::string llama_mix_canonical(std::string_view mix) { return std::string(mix_row(mix).name); }

int64_t llama_type_block_size(std::string_view type_name) { return block_of(type_name); }
std::string llama_type_name(std::string_view type_name) { return std::string(type_row(type_name).name); }

std::string llama_shape_fallback(std::string_view type_name, int64_t ne0, std::string* why) {
  const std::string type(type_row(type_name).name);
  if (why) why->clear();
  const int64_t qk = block_of(type);
  if (ne0 % qk == 0) return type;
  // The chain itself is the traits table's (quant/formats.h), one place for every format.
  const BlockFormatTraits* t = block_traits_by_name(type);
  if (!t || t->shape_fallback == QuantFormat::kF32)
    fail("ne0 {} is not a multiple of {} (the block of {}) and llama-quantize has no fallback for "
         "{}: it stops with \"no tensor type fallback is defined for type {}\"",
         ne0, qk, type, type, type);
  const std::string next(block_traits(t->shape_fallback)->name);
  const std::string to = llama_shape_fallback(QuantScheme::parse(type), ne0).to_string();
  std::string text = fmt::format("ne0 {} is not a multiple of {} ({}): falls back to {}", ne0, qk, type, next);
  if (to != next) text += fmt::format(", whose block {} does not divide it either: f16", block_of(next));
  if (why) *why = std::move(text);
  return to;
}

const LlamaMixDecision* LlamaMixResult::find(const std::string& hf_name) const {
  for (const auto& d : tensors) {
    if (d.hf_name == hf_name) return &d;
    for (const auto& m : d.members)
      if (m == hf_name) return &d;
  }
  return nullptr;
}

std::map<std::string, std::string> LlamaMixResult::types() const {
  std::map<std::string, std::string> out;
  for (const auto& d : tensors) {
    out[d.hf_name] = d.type;
    for (const auto& m : d.members) out[m] = d.type;
  }
  return out;
}

LlamaMixResult llama_mix(const std::vector<LlamaMixTensor>& tensors, const LlamaModelFacts& facts,
                         const LlamaMixOptions& options) {
  const MixRow& mix = mix_row(options.mix);
  LlamaMixResult res;
  res.mix = std::string(mix.name);
  res.base_type = std::string(mix.base);
  res.imatrix = options.imatrix;
  if (facts.n_layer <= 0) fail("llama_mix: n_layer must be positive (got {})", facts.n_layer);

  // Input checks.
  std::set<std::string> names;
  bool has_head = false;
  for (const auto& t : tensors) {
    if (t.gguf_name.empty()) fail("{}: no GGUF name", t.hf_name);
    if (!names.insert(t.gguf_name).second) fail("two tensors are named {} in the GGUF file", t.gguf_name);
    type_row(t.input_type);
    if (t.rows < 0 || t.cols < 0) fail("{}: negative shape", t.gguf_name);
    has_head |= t.role == Role::kHead;
  }
  if (has_head && facts.tied_embeddings)
    fail("the model facts say the embedding is tied, but there is an lm_head tensor (role head)");
  if (!has_head && !facts.tied_embeddings)
    fail("the model facts say the embedding is untied, but there is no lm_head tensor (role head): "
         "llama.cpp treats a file without output.weight as tied");
  res.tied_embeddings = facts.tied_embeddings;

  std::vector<LlamaMixTensor> walk = tensors;
  const auto layer_key = [&](const LlamaMixTensor& t) {
    const auto l = blk_layer(t.gguf_name);
    if (l) return *l;
    return facts.llama_cpp_layout ? -1 : t.layer;
  };
  sort_walk(walk, layer_key);
  if (!facts.llama_cpp_layout)
    res.notes.push_back(fmt::format(
        "llama.cpp has no layout for {}: llama-quantize's rules are applied by role, walking the "
        "tensors by kllens' layer number, then name (llama-quantize itself cannot read such a file)",
        facts.arch));

  State s{facts, mix.mix, options.imatrix, facts.tied_embeddings};
  for (const auto& t : walk)
    if (ineligible_reason(t.role).empty() && t.rows > 1 && category(t.role) == Cat::kAttnV)
      ++s.n_attention_wv;
  s.n_ffn_down = s.n_ffn_gate = s.n_ffn_up = static_cast<int>(facts.n_layer);
  res.n_attention_wv = s.n_attention_wv;
  res.n_ffn_down = s.n_ffn_down;
  const bool base_quantized = type_row(res.base_type).quantized;

  for (const auto& t : walk) {
    LlamaMixDecision d;
    d.hf_name = t.hf_name;
    d.gguf_name = t.gguf_name;
    d.members = t.members;
    d.role = t.role;
    d.layer = t.layer;
    d.rows = t.rows;
    d.cols = t.cols;
    const std::string input = llama_type_name(t.input_type);
    const std::string_view no = ineligible_reason(t.role);
    if (!no.empty() || t.rows <= 1) {
      d.quantized = false;
      d.rule_type = d.type = input;
      d.reason = fmt::format("not quantized ({}): keeps its {}",
                             !no.empty() ? std::string(no) : "1-D in ggml (one row)", input);
      res.tensors.push_back(std::move(d));
      continue;
    }
    d.quantized = true;
    const Cat cat = category(t.role);
    d.category = std::string(cat_name(cat));
    if (!base_quantized) {
      d.rule_type = d.type = res.base_type;
      d.reason = fmt::format("{} is not a quantized mix: every tensor it may convert is {}", res.mix,
                             res.base_type);
      res.tensors.push_back(std::move(d));
      continue;
    }
    std::string why;
    d.rule_type = mix_rule(s, t, cat, res.base_type, &why);
    std::string fb;
    try {
      d.type = llama_shape_fallback(d.rule_type, t.cols, &fb);
    } catch (const Error& e) {
      fail("llama-quantize {} would stop at {} ({}, rule type {}): {}", res.mix, t.gguf_name,
           why, d.rule_type, e.what());
    }
    d.fallback = d.type != d.rule_type;
    if (d.fallback) ++res.n_fallback;
    d.reason = d.fallback ? why + "; " + fb : why;
    res.tensors.push_back(std::move(d));
  }
  if (res.n_fallback > 0)
    res.notes.push_back(fmt::format("{} tensor(s) fell back to another type for their row length",
                                    res.n_fallback));
  return res;
}

// ---- recipe ----

std::string llama_name_regex(std::string_view gguf_name) {
  if (gguf_name.empty()) fail("an empty tensor name cannot be written as a --tensor-type pattern");
  std::string out = "^";
  for (char c : gguf_name) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isupper(u))
      fail("tensor {} has upper-case letters: llama-quantize lower-cases every --tensor-type "
           "pattern, so no pattern can match it",
           gguf_name);
    if (std::isspace(u) || c == '=' || u < 0x20)
      fail("tensor {} contains whitespace, a control character or '=', which llama-quantize's "
           "--tensor-type-file parser cannot carry",
           gguf_name);
    if (std::strchr("\\^$.|?*+()[]{}", c)) out += '\\';
    out += c;
  }
  out += '$';
  return out;
}

LlamaRecipe llama_recipe(const std::map<std::string, std::string>& plan,
                         const std::vector<LlamaMixTensor>& tensors) {
  LlamaRecipe r;
  std::map<std::string, const LlamaMixTensor*> by_hf;
  std::set<std::string> gguf_names;
  for (const auto& t : tensors) {
    if (!by_hf.emplace(t.hf_name, &t).second) fail("the tensor table lists {} twice", t.hf_name);
    for (size_t i = 1; i < t.members.size(); ++i)
      if (!by_hf.emplace(t.members[i], &t).second)
        fail("the tensor table lists {} twice", t.members[i]);
    if (!gguf_names.insert(t.gguf_name).second) fail("two tensors are named {} in the GGUF file", t.gguf_name);
  }
  for (const auto& [name, type] : plan)
    if (!by_hf.count(name)) fail("the plan names {}, which is not a tensor of this model", name);

  std::vector<LlamaMixTensor> walk = tensors;
  sort_walk(walk, [](const LlamaMixTensor& t) { return blk_layer(t.gguf_name).value_or(t.layer); });

  std::map<std::string, int64_t> params_by_type;
  // A stack of experts holds one type: the largest its experts are planned (what export_gguf
  // stores).
  std::map<std::string, std::string> stacked_plan;
  for (const auto& t : tensors) {
    if (t.members.empty()) continue;
    const TypeRow* best = nullptr;
    for (const auto& m : t.members) {
      const auto it = plan.find(m);
      if (it == plan.end()) continue;
      const TypeRow* row = find_type(it->second);
      if (!row)
        fail("the plan gives {} '{}', which is not a ggml type kllens can write a recipe for ({})",
             m, it->second, known_types());
      const auto bits = [](const TypeRow* r) {
        const auto tt = gguf::type_traits(r->type);
        return static_cast<double>(tt.type_size) / static_cast<double>(tt.block_size);
      };
      if (!best || bits(row) > bits(best)) best = row;
    }
    if (best) stacked_plan[t.hf_name] = std::string(best->name);
  }
  for (const auto& t : walk) {
    const std::string* planned = nullptr;
    if (const auto st = stacked_plan.find(t.hf_name); st != stacked_plan.end())
      planned = &st->second;
    else if (const auto pl = plan.find(t.hf_name); pl != plan.end())
      planned = &pl->second;
    const bool eligible = ineligible_reason(t.role).empty() && t.rows > 1;
    if (!eligible) {
      const std::string input = llama_type_name(t.input_type);
      r.kept.emplace_back(t.gguf_name, input);
      if (planned) {
        const std::string asked = llama_type_name(*planned);
        const std::string_view no = ineligible_reason(t.role);
        const std::string why = !no.empty() ? std::string(no) : "1-D in ggml (one row)";
        if (type_row(asked).quantized)
          fail("the plan gives {} ({}) {}, but llama-quantize never quantizes it ({}): it would stay "
               "{}",
               t.hf_name, t.gguf_name, asked, why, input);
        if (asked != input)
          r.notes.push_back(fmt::format("{}: the plan says {}, but llama-quantize copies it as {} ({})",
                                        t.gguf_name, asked, input, why));
      }
      continue;
    }
    if (!planned)
      fail("the plan does not name {} ({}), which llama-quantize quantizes: without an entry it "
           "would get the base mix's rule, not a planned type",
           t.hf_name, t.gguf_name);
    const TypeRow* row = find_type(*planned);
    if (!row)
      fail("the plan gives {} '{}', which is not a ggml type kllens can write a recipe for ({})",
           t.hf_name, *planned, known_types());
    const std::string type(row->name);
    const int64_t qk = gguf::type_traits(row->type).block_size;
    if (t.cols % qk != 0) {
      std::string fb;
      std::string got;
      try {
        got = "it would store " + llama_shape_fallback(type, t.cols, &fb);
      } catch (const Error&) {
        got = "it would stop (no fallback for " + type + ")";
      }
      fail("{} ({}): rows of {} elements cannot hold {} (blocks of {}); llama-quantize would not "
           "store {}: {}",
           t.hf_name, t.gguf_name, t.cols, type, qk, type, got);
    }
    r.entries.push_back({t.hf_name, t.gguf_name, llama_name_regex(t.gguf_name), type});
    if (row->quantized) params_by_type[type] += t.rows * t.cols;
  }

  // The mix whose base type holds most listed parameters (ties: the first in kMixes order).
  r.base_type = "Q8_0";
  int64_t best = 0;
  for (const auto& m : kMixes) {
    if (m.mix == Mix::kQ3_K_S || m.mix == Mix::kQ3_K_L || m.mix == Mix::kQ4_K_S || m.mix == Mix::kQ5_K_S)
      continue;  // one mix per base type: the _M one
    const auto it = params_by_type.find(std::string(m.base));
    if (it != params_by_type.end() && it->second > best) {
      best = it->second;
      r.base_type = std::string(m.name);
    }
  }
  for (const auto& e : r.entries) r.text += e.pattern + "=" + e.type + "\n";
  return r;
}

}  // namespace kllens
