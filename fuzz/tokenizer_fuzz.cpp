// tokenizer.json load (tokenizer/tokenizer.h: Tokenizer::from_json_text: BPE model, normalizers,
// pre-tokenizer, added tokens, post-processors, decoders), then the loaded tokenizer used: a few
// texts encoded with and without special tokens and decoded back, every id looked up; and the
// same file read as `kllens quantize` writes it into a GGUF file (export/gguf_vocab.h:
// read_gguf_vocab, which reads the JSON again after Tokenizer::load accepted it).
#include "core/error.h"
#include "export/gguf_vocab.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kllens::Tokenizer tok =
        kllens::Tokenizer::from_json_text(std::string(kllens::fuzz::as_text(data, size)),
                                          "tokenizer.json");
    static const char* const kTexts[] = {"", "Hello world", " a  b\n\n\tc", "l'été 123 ¡ñ! 😀",
                                         "<s></s><|endoftext|> <unk>x"};
    for (const char* text : kTexts) {
      for (bool special : {false, true}) {
        const std::vector<int32_t> ids = tok.encode(text, special);
        (void)tok.decode(ids, false);
        (void)tok.decode(ids, true);
      }
    }
    const int32_t n = tok.vocab_size();
    for (int32_t id = -1; id <= std::min<int32_t>(n, 512); ++id) (void)tok.id_to_token(id);
    (void)tok.bos_id();
    (void)tok.eos_id();
    (void)tok.token_to_id("a");
    static kllens::fuzz::InputFile file("tokenizer");
    (void)kllens::read_gguf_vocab(file.write(data, size), n, nlohmann::json::object());
  } catch (const kllens::Error&) {
  }
  return 0;
}
