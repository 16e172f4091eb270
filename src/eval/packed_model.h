// Turning a loaded float32 model into the quantized model it would be on a device: every
// component of an assignment is quantized and, when its role is packable (models/model.h), kept
// packed (a QTensor read by the packed kernels, its float32 copy freed); other components
// (conv1d, ...) are fake-quantized in place, since they are read element-wise. This is what
// `bench --plan/--uniform` and `deploy-table` measure without writing a GGUF file; a GGUF file
// loads into the same state (export/gguf_import.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/quantized_eval.h"

namespace kllens {

class Model;

struct PackResult {
  int64_t packed = 0;             // components now packed
  int64_t fake_quantized = 0;     // components quantized in float32 (not packable)
  int64_t weight_bytes_before = 0, weight_bytes_after = 0;  // resident_weight_bytes
};

// Validates first (Error). A component at "f32" stays float32. Irreversible: reload the model to
// get the float weights back.
// Every scheme has packed kernels (quant/qmatmul.h); only non-packable roles are fake-quantized.
PackResult pack_model(Model& model, const SchemeAssignment& assignment,
                      const ImportanceFn& importance = {});

}  // namespace kllens
