// GGUF container: header, metadata (every value type, arrays), tensor infos, alignment and the
// data section (io/gguf.h: gguf::File); then what kllens reads out of a llama.cpp file's
// metadata before it loads any weight: the config rebuilt from {arch}.* keys and the
// tokenizer.json rebuilt from tokenizer.ggml.* (export/gguf_import.h, export/gguf_vocab.h), and
// the small tensors converted to float32.
#include "core/error.h"
#include "export/gguf_import.h"
#include "export/gguf_vocab.h"
#include "fuzz_util.h"
#include "io/gguf.h"

namespace {

template <typename F>
void expect_kllens_error_or_success(F&& f) {
  try {
    f();
  } catch (const kllens::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace gguf = kllens::gguf;
  static kllens::fuzz::InputFile input("gguf");
  const std::string& path = input.write(data, size);
  std::unique_ptr<gguf::File> file;
  try {
    file = std::make_unique<gguf::File>(path);
  } catch (const kllens::Error&) {
    return 0;
  }
  for (const auto& [key, value] : file->metadata()) (void)value.to_display();
  for (const auto& t : file->tensors()) {
    expect_kllens_error_or_success([&] {
      std::vector<float> out(static_cast<size_t>(t.numel()));
      gguf::to_f32(t.type, t.data, t.numel(), out.data());
    });
  }
  expect_kllens_error_or_success([&] { (void)kllens::hf_config_from_llama_cpp(*file); });
  expect_kllens_error_or_success([&] { (void)kllens::gguf_tokenizer_json(*file); });
  return 0;
}
