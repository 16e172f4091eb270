// Encoding and decoding arbitrary text with the repository's real tokenizers (tokenizer/
// tokenizer.h): GPT-NeoX's byte-level BPE (the demo models') and Hymba's Llama-style
// SentencePiece BPE with byte fallback. The first input byte picks the tokenizer and whether
// special tokens are added; the rest is the text (invalid UTF-8 must be one Error). The same
// bytes are also decoded as a list of ids (unknown ids are skipped, never read out of bounds).
#include <cstring>

#include "core/error.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kllens::Tokenizer tokenizers[] = {
      kllens::Tokenizer::load(KLLENS_REPO "/data/models/demo-mamba/tokenizer.json"),
      kllens::Tokenizer::load(KLLENS_REPO "/data/tokenizers/llama-hymba.tokenizer.json"),
  };
  if (size == 0) return 0;
  const kllens::Tokenizer& tok = tokenizers[data[0] % 2];
  const bool special = (data[0] & 2) != 0;
  const std::string_view text = kllens::fuzz::as_text(data + 1, size - 1);
  try {
    const std::vector<int32_t> ids = tok.encode(text, special);
    (void)tok.decode(ids, (data[0] & 4) != 0);
  } catch (const kllens::Error&) {
  }
  std::vector<int32_t> ids((size - 1) / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data + 1, ids.size() * 4);
  (void)tok.decode(ids, false);
  (void)tok.decode(ids, true);
  return 0;
}
