// PyTorch checkpoints (io/pytorch_checkpoint.h: the ZIP archive, its restricted pickle reader),
// then every tensor read the way loading reads it, so a view that passed validation but points
// outside its storage shows up as an ASan report.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/pytorch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kllens::fuzz::InputFile file("pytorch");
  const std::string& path = file.write(data, size);
  try {
    const kllens::PytorchCheckpoint ckpt(path);
    for (const auto& [name, view] : ckpt.tensors()) {
      try {
        const auto t = view.dtype;
        if (t == kllens::DType::kF32 || t == kllens::DType::kF16 || t == kllens::DType::kBF16 ||
            t == kllens::DType::kF64)
          (void)view.to_f32();
        else (void)kllens::read_int_tensor(view);
      } catch (const kllens::Error&) {
      }
    }
  } catch (const kllens::Error&) {
  }
  return 0;
}
