// config.json of every family: HfConfig (io/hf_config.h, with Python's Infinity/NaN literals),
// mamba_ssm's own configs translated (models/checkpoint.h), and the tensor table the config
// implies (models/model.h: tensor_specs), i.e. each family's config validation, without weights.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/hf_config.h"
#include "models/checkpoint.h"
#include "models/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kllens::CheckpointConfig checkpoint = kllens::checkpoint_config_from_text(
        std::string(kllens::fuzz::as_text(data, size)), "config.json");
    const std::vector<kllens::TensorSpec> specs = kllens::tensor_specs(checkpoint.config);
    for (const auto& s : specs) (void)s.name.size();
  } catch (const kllens::Error&) {
  }
  return 0;
}
