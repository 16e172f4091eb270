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
    kllens::fuzz::read_every_tensor(st.tensors());
    (void)st.metadata().size();
  } catch (const kllens::Error&) {
  }
  return 0;
}
