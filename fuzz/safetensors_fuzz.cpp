// safetensors header + tensor table (io/safetensors.h: SafetensorsFile), then every tensor read
// the way loading reads it (to_f32 / read_int_tensor), so a view that passed validation but
// points outside the file shows up as an ASan report.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kllens::fuzz::InputFile file("safetensors");
  const std::string& path = file.write(data, size);
  try {
    const kllens::SafetensorsFile st(path);
    for (const auto& [name, view] : st.tensors()) {
      try {
        const auto t = view.dtype;
        if (t == kllens::DType::kF32 || t == kllens::DType::kF16 || t == kllens::DType::kBF16 ||
            t == kllens::DType::kF64)
          (void)view.to_f32();
        else (void)kllens::read_int_tensor(view);
      } catch (const kllens::Error&) {
      }
    }
    (void)st.metadata().size();
  } catch (const kllens::Error&) {
  }
  return 0;
}
