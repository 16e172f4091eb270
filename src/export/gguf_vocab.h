// llama.cpp's tokenizer keys from a Hugging Face tokenizer.json (BPE, byte-level), as its
// converter's _set_vocab_gpt2 writes them: tokenizer.ggml.model = "gpt2", tokens by id, token
// types (1 normal, 3 control = special added token, 4 user-defined = other added token,
// 5 unused = "[PAD<i>]" filler up to the embedding's row count), merges as "a b" strings, and the
// special ids.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace kllens {

struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;
  std::optional<uint32_t> bos, eos, pad, unk;
  bool add_bos = false;
  std::string pre;                 // tokenizer.ggml.pre; empty: not written
  std::vector<std::string> notes;  // what llama.cpp will do differently
};

// n_vocab: rows of the embedding (the token list is padded to it, as llama.cpp requires
// tokens.size() == token_embd ne[1]). config: the model's config.json, for bos/eos/pad ids.
// Throws Error for a tokenizer.json that is not byte-level BPE or has more ids than n_vocab.
GgufVocab read_gguf_vocab(const std::string& tokenizer_json, int64_t n_vocab,
                          const nlohmann::json& config);

void add_vocab_keys(gguf::Writer& writer, const GgufVocab& vocab);

// The inverse, for files written by llama.cpp (which carry no tokenizer.json): an HF
// tokenizer.json rebuilt from tokenizer.ggml.* for model "gpt2" (byte-level BPE): the tokens by id
// (unused "[PAD<id>]" fillers, type 5, left out), control tokens (type 3) as special added tokens
// and user-defined ones (type 4) as non-special added tokens, the merges in order, the ByteLevel
// pre-tokenizer with GPT-2's split regex and no prefix space, no normalizer (llama.cpp applies
// none) and, when tokenizer.ggml.add_bos_token / add_eos_token say so, a TemplateProcessing that
// adds them. Only the pre-tokenizers llama.cpp runs with exactly GPT-2's regex (tokenizer.ggml.pre
// "gpt-2", "mpt", "olmo") can be rebuilt; any other, or a missing one (llama.cpp's "default",
// several regexes), is an Error rather than a tokenizer that splits differently. Error naming
// the key for a missing or malformed key.
nlohmann::json tokenizer_json_from_llama_keys(const gguf::File& file);

// The tokenizer.json of a GGUF file: kllens.tokenizer_json (written by `kllens quantize`) when
// present, else the one rebuilt from llama.cpp's keys. origin names the source in messages.
struct GgufTokenizerJson {
  std::string text;
  std::string origin;
};
GgufTokenizerJson gguf_tokenizer_json(const gguf::File& file);

}  // namespace kllens
