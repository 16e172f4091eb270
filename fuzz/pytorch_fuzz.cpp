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
    kllens::fuzz::read_every_tensor(ckpt.tensors());
  } catch (const kllens::Error&) {
  }
  return 0;
}
