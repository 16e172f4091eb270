// llama-quantize's per-tensor type selection (llama.cpp src/llama-quant.cpp at commit
// kLlamaQuantCommit), reproduced for kllens' components: which ggml type `llama-quantize F32.gguf
// OUT.gguf MIX` gives each tensor, and why; plus the `--tensor-type-file` recipe that makes
// llama-quantize store a kllens plan exactly. Pure: no model, no files (callers pass the tensor
// table and the few model facts the rules read). The full description of the rules, with line
// numbers, is shared/docs/llamacpp-formats-and-hybrids.md §2.
//
// What is reproduced:
//  * the walk order (weight_name_comparer): layer number parsed from "blk.%d." first (tensors
//    without one are layer -1, so they come first), then the GGUF name by strcmp. The counters
//    i_attention_wv and i_ffn_down advance in that order;
//  * eligibility (tensor_allows_quantization) by role: norms, biases, A_log, D, dt_bias, conv1d,
//    the MoE router and Hymba's meta tokens are never quantized (they keep their input type), nor
//    is any tensor that is 1-D in ggml (rows == 1);
//  * categories (tensor_get_category) by role: kEmbed = token_embd (treated as output when the
//    embedding is tied), kHead = output, kV = attn_v, kK = attn_k, kQ = attn_q, kO = attn_output,
//    kUp / kGate / kDown = ffn_up / ffn_gate / ffn_down (MoE experts included), anything else
//    (in_proj, x_proj, dt_proj, out_proj) = other, which gets the base type;
//  * the mix rules (llama_tensor_get_type_impl) for the mixes of llama_mix_names(), with or
//    without an importance matrix, and the shape fallback (tensor_type_fallback) after them.
// Not reproduced: --token-embedding-type / --output-tensor-type / --pure / --leave-output-tensor
// / --keep-split / --prune-layers, regex overrides (see llama_recipe for writing them), the
// IQ1/IQ2/IQ3/TQ/MXFP4 mixes.
//
// Families llama.cpp has no layout for (hymba, jamba, falcon_h1, llama in kllens' own layout):
// the same rules are applied by role, walking the tensors by kllens' layer number then name, and
// the result says so in its notes; llama-quantize itself cannot read such a file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.h"

namespace kllens {

// The llama.cpp commit whose src/llama-quant.cpp these rules were read from and checked against.
inline constexpr const char* kLlamaQuantCommit = "3f545becc";

// One tensor of the file llama-quantize reads.
struct LlamaMixTensor {
  std::string hf_name;     // kllens / Hugging Face name
  std::string gguf_name;   // its name in kllens' GGUF export ("blk.3.ssm_in.weight")
  Role role = Role::kOther;
  int layer = -1;          // kllens' layer (-1: not in a layer)
  int64_t rows = 1;        // product of every dimension but the row: ggml's ne1 * ne2 * ...
  int64_t cols = 0;        // the row length: ggml's ne0
  std::string input_type = "f32";  // ggml type name it holds in the input file (kept if not quantized)
  // A stack of experts (llama.cpp's ffn_*_exps): the HF names of its experts in order (hf_name is
  // the first); empty for an ordinary tensor.
  std::vector<std::string> members;
};

// The model facts the rules read.
struct LlamaModelFacts {
  // general.architecture in llama.cpp's layout ("mamba", "mamba2", ...), else kllens'
  // model_type. Only "falcon" (the original Falcon, not falcon_h1) changes a rule.
  std::string arch;
  bool llama_cpp_layout = true;  // the GGUF names are llama.cpp's (blk.N.*); false: kllens' own
  int64_t n_layer = 0;           // GGUF block_count (llama.cpp's n_layer_all)
  int64_t n_expert = 0;          // expert_count (0: dense)
  int64_t n_gqa = 0;             // n_head / n_head_kv of layer 0; 0 when layer 0 has no attention
  // Whether the token embedding is also the output (llama.cpp: no tensor named output.weight).
  // Must agree with the tensors: untied iff a kHead tensor is present.
  bool tied_embeddings = false;
  bool llm_type_70b = false;     // llama.cpp's LLM_TYPE_70B (llama, 80 layers, n_head != n_head_kv)
};

struct LlamaMixOptions {
  std::string mix = "Q4_K_M";  // llama-quantize's type argument (llama_mix_names())
  bool imatrix = false;        // --imatrix given
};

struct LlamaMixDecision {
  std::string hf_name, gguf_name;
  Role role = Role::kOther;
  int layer = -1;
  int64_t rows = 0, cols = 0;
  bool quantized = false;   // llama-quantize chooses a type for it (eligible); false: copied as is
  std::string category;     // "token_embd", "output", "attn_v", "attn_k", "attn_q",
                            // "attn_output", "ffn_up", "ffn_gate", "ffn_down", "other"; "" if not quantized
  std::string rule_type;    // the mix rules' type, before the shape fallback
  std::string type;         // the type the file holds (lower-case ggml name: "q4_K", "q5_0", "f16")
  bool fallback = false;    // type != rule_type because of the row length
  std::string reason;       // the rule (and fallback) that decided, in words
  std::vector<std::string> members;  // LlamaMixTensor::members
};

struct LlamaMixResult {
  std::string mix;          // as llama-quantize spells it ("Q4_K_M")
  std::string base_type;    // llama_ftype_get_default_type ("q4_K")
  bool imatrix = false;
  std::string commit = kLlamaQuantCommit;
  bool tied_embeddings = false;
  int n_attention_wv = 0;   // tensors in category attn_v
  int n_ffn_down = 0;       // = n_layer
  int n_fallback = 0;
  std::vector<LlamaMixDecision> tensors;  // in llama-quantize's walk order
  std::vector<std::string> notes;

  const LlamaMixDecision* find(const std::string& hf_name) const;  // nullptr when absent
  std::map<std::string, std::string> types() const;  // HF name -> type, every tensor
};

// The mixes these rules know, as llama-quantize spells them: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K
// Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32.
const std::vector<std::string>& llama_mix_names();
// The mix's base type (llama_ftype_get_default_type), e.g. "q4_K" for Q4_K_M. Case-insensitive;
// llama-quantize's aliases Q3_K, Q4_K, Q5_K (= the _M mixes) are accepted. UsageError otherwise.
std::string llama_mix_base_type(std::string_view mix);
// The canonical spelling of a mix ("q4_k_m" -> "Q4_K_M", "Q4_K" -> "Q4_K_M"); UsageError.
std::string llama_mix_canonical(std::string_view mix);

// What llama-quantize gives every tensor. Throws Error for inconsistent input (duplicate names,
// tied_embeddings disagreeing with the tensors, a layer outside [0, n_layer) where the rules
// read it, an unknown input type) and where llama-quantize itself would stop (a row length no
// type of the chain can hold, e.g. output at q8_0 with ne0 % 32 != 0).
LlamaMixResult llama_mix(const std::vector<LlamaMixTensor>& tensors, const LlamaModelFacts& facts,
                         const LlamaMixOptions& options);

// llama-quantize's tensor_type_fallback for a row of ne0 elements: the type itself when its
// block divides ne0; else q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, q2_K / q3_K -> q4_0,
// iq4_xs -> iq4_nl, and f16 when that still does not divide ne0 (ne0 % 32 != 0). q4_0, q4_1,
// q5_0, q5_1, q8_0 and iq4_nl have no fallback: Error, as llama-quantize throws. Float types
// (f32, f16, bf16) are returned unchanged. `why` (optional) receives the steps in words ("" when
// nothing changed). Type names are ggml's, matched case-insensitively; the result is spelled as
// ggml does ("q5_0", "q4_K").
std::string llama_shape_fallback(std::string_view type_name, int64_t ne0, std::string* why = nullptr);

// Elements per block of a ggml type (32 for q4_0..q8_0 and iq4_nl, 256 for the K-quants and
// iq4_xs, 1 for f32 / f16 / bf16); Error for a type these rules do not know.
int64_t llama_type_block_size(std::string_view type_name);
// The ggml spelling of a type name given in any case ("Q4_k" -> "q4_K"); Error when unknown.
std::string llama_type_name(std::string_view type_name);

// ---- --tensor-type-file ----

// An anchored, escaped regex matching exactly this GGUF name: "^blk\.7\.ssm_in\.weight$".
// Error when llama-quantize could not use it (upper-case letters, which it lower-cases away;
// whitespace or '=', which break its file parser).
std::string llama_name_regex(std::string_view gguf_name);

struct LlamaRecipeEntry {
  std::string hf_name, gguf_name;
  std::string pattern;  // llama_name_regex(gguf_name)
  std::string type;     // ggml type name
};

struct LlamaRecipe {
  std::string text;       // the file: one "PATTERN=TYPE" token per line (no comment syntax exists)
  // llama-quantize's type argument: the _M / plain mix whose base type holds most of the listed
  // parameters (e.g. "Q4_K_M"; "Q8_0" when no quantized type is listed). Every quantized tensor
  // has an entry, so the mix only sets general.file_type; it must be a quantized mix because
  // llama-quantize ignores overrides otherwise.
  std::string base_type;
  std::string commit = kLlamaQuantCommit;  // the llama.cpp commit the rules were checked against
  std::vector<LlamaRecipeEntry> entries;   // in llama-quantize's walk order
  // Tensors llama-quantize copies unchanged (not eligible): GGUF name -> the type they keep.
  std::vector<std::pair<std::string, std::string>> kept;
  std::vector<std::string> notes;          // e.g. a plan type for a copied tensor that is not its type
};

// The recipe that makes llama-quantize store `plan` (HF name -> ggml type name) exactly: every
// tensor llama-quantize quantizes must be in the plan, with a type its row length holds (ne0 a
// multiple of 32 for q4_0..q8_0 / iq4_nl, of 256 for the K-quants and iq4_xs), since
// llama-quantize would silently fall back otherwise. Throws one Error naming the tensor for: a
// plan name that is not a tensor, a quantized tensor the plan omits, a type that is not a ggml
// type kllens knows, a row length the type cannot hold, a quantized type for a tensor
// llama-quantize never quantizes (conv1d, norms, router, ...). A float type for such a tensor is
// not an error: the tensor is listed in `kept` with the type it really keeps, and a note says so
// when that differs from the plan.
LlamaRecipe llama_recipe(const std::map<std::string, std::string>& plan,
                         const std::vector<LlamaMixTensor>& tensors);

}  // namespace kllens
