// llama.cpp imatrix GGUF files (eval/imatrix.h: read_imatrix) against the two demo models the
// committed imatrix files belong to: demo-mamba (llama.cpp's tensor names) and demo-mamba2.
#include <memory>

#include "core/error.h"
#include "eval/imatrix.h"
#include "fuzz_util.h"
#include "models/model.h"

namespace {
struct Models {
  std::unique_ptr<kllens::Model> mamba = kllens::load_model(KLLENS_REPO "/data/models/demo-mamba");
  std::unique_ptr<kllens::Model> mamba2 =
      kllens::load_model(KLLENS_REPO "/data/models/demo-mamba2");
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Models models;
  static kllens::fuzz::InputFile input("imatrix");
  const std::string& path = input.write(data, size);
  for (const kllens::Model* m : {models.mamba.get(), models.mamba2.get()}) {
    try {
      const kllens::ImportanceMatrix im = kllens::read_imatrix(path, *m);
      (void)kllens::imatrix_description(im).dump();
      for (const auto& [name, e] : im.entries) (void)im.importance(name, e.cols);
    } catch (const kllens::Error&) {
    }
  }
  return 0;
}
