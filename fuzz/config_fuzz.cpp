// config.json of every family: HfConfig (io/hf_config.h, with Python's Infinity/NaN literals)
// and the tensor table the config implies (models/model.h: tensor_specs), i.e. each family's
// config validation, without any weights.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/hf_config.h"
#include "models/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kllens::HfConfig config =
        kllens::HfConfig::from_text(kllens::fuzz::as_text(data, size), "config.json");
    const std::vector<kllens::TensorSpec> specs = kllens::tensor_specs(config);
    for (const auto& s : specs) (void)s.name.size();
  } catch (const kllens::Error&) {
  }
  return 0;
}
