#include "eval/packed_model.h"

#include <memory>

#include "models/model.h"
#include "quant/formats.h"
#include "quant/qmatmul.h"
#include "quant/quantize.h"

namespace kllens {

PackResult pack_model(Model& model, const SchemeAssignment& assignment,
                      const ImportanceFn& importance) {
  validate_assignment(model, assignment);
  PackResult res;
  res.weight_bytes_before = resident_weight_bytes(model.weights());
  for (const auto& [name, requested] : assignment) {
    Param& p = model.weights().get(name);
    const QuantScheme scheme = stored_scheme(requested, p.cols());
    if (p.is_packed() || scheme.format == QuantFormat::kF32) continue;
    const float* qw = importance ? importance(p) : nullptr;
    if (packable_role(p.role)) {
      // q8_0/q4_0 run in kllens' int8/int4:g32 layout: the same values, faster kernels.
      p.packed = std::make_shared<const QTensor>(
          blocks_as_int_layout(quantize(scheme, p.value.data(), p.rows(), p.cols(), qw)));
      p.value = {};
      ++res.packed;
    } else {
      fake_quantize(scheme, p.value.data(), p.rows(), p.cols(), qw);
      ++res.fake_quantized;
    }
  }
  res.weight_bytes_after = resident_weight_bytes(model.weights());
  return res;
}

}  // namespace kllens
