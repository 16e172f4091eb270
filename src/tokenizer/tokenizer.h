// Hugging Face `tokenizer.json` tokenizers: BPE models with the pieces that GPT-2 / GPT-NeoX
// style byte-level tokenizers and Llama style SentencePiece-BPE tokenizers use. Encoding and
// decoding reproduce HF `tokenizers` (0.23) exactly for the supported components:
//   normalizer:     NFC, NFD, NFKC, NFKD, Prepend, Replace (string pattern), Sequence, null
//   pre_tokenizer:  ByteLevel (add_prefix_space, use_regex), null
//   model:          BPE (merges by rank, unk_token, fuse_unk, byte_fallback, ignore_merges)
//   post_processor: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing,
//                   Sequence, null (applied only when add_special_tokens is true)
//   decoder:        ByteLevel, Replace (string pattern), ByteFallback, Fuse, Strip, Sequence, null
//   added_tokens:   special and non-special, normalized or not, lstrip / rstrip / single_word
// Anything else makes load() throw, naming the file and the unsupported component.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kllens {

class Tokenizer {
 public:
  // Reads a tokenizer.json. Throws kllens::Error on a missing, malformed or unsupported file.
  static Tokenizer load(const std::string& tokenizer_json_path);
  // The same from the text of a tokenizer.json; `origin` names it in error messages.
  static Tokenizer from_json_text(const std::string& text, const std::string& origin);

  // HF `encode(text, add_special_tokens)`.ids. `text` must be valid UTF-8 (else Error).
  // add_special_tokens applies the post-processor (e.g. Llama's BOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  // HF `decode(ids, skip_special_tokens)`. Unknown ids are skipped; invalid UTF-8 produced by
  // byte tokens becomes U+FFFD as in HF.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Max id + 1 over the model vocabulary and the added tokens.
  int32_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token of an id (added tokens first, then the model vocabulary).
  std::optional<std::string> id_to_token(int32_t id) const;
  // The special token the TemplateProcessing post-processor puts before the text, if any.
  std::optional<int32_t> bos_id() const;
  // The special token it puts after the text, else "</s>", "<|endoftext|>", "<|end_of_text|>"
  // or "<eos>" when present.
  std::optional<int32_t> eos_id() const;

  // Copies share the (immutable) tokenizer data.
  Tokenizer(const Tokenizer&) = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

// The text of a tokenizer.json for a byte-level BPE without merges: ids 0..255 are the 256
// bytes (as GPT-2's byte characters), the GPT-2 pre-tokenizer and byte-level decoder. Any text
// encodes (one token per byte) and decodes back exactly; llama.cpp loads it as "gpt2" with the
// "gpt-2" pre-tokenizer. `kllens synth` writes it so that random-weight folders tokenize and their
// GGUF files carry a vocabulary.
std::string byte_level_tokenizer_json();

}  // namespace kllens
