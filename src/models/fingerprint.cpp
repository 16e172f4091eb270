#include "models/fingerprint.h"

#include <cstdint>

#include "core/sha256.h"

namespace kllens {

namespace {

// Lengths before variable-size fields, so that no two different parameter lists hash the same
// concatenation.
void update_sized(Sha256& h, const void* data, uint64_t bytes) {
  h.update(&bytes, sizeof bytes);
  h.update(data, static_cast<size_t>(bytes));
}

}  // namespace

std::string weights_sha256(const Model& model) {
  Sha256 h;
  for (const auto& p : model.weights().all()) {
    update_sized(h, p->name.data(), p->name.size());
    update_sized(h, p->shape.data(), p->shape.size() * sizeof(int64_t));
    if (p->packed) {
      const QTensor& q = *p->packed;
      const std::string scheme = q.scheme.to_string();
      update_sized(h, scheme.data(), scheme.size());
      update_sized(h, q.data.data(), q.data.size());
      update_sized(h, q.scales_f16.data(), q.scales_f16.size() * sizeof(uint16_t));
      update_sized(h, q.scales_f32.data(), q.scales_f32.size() * sizeof(float));
      update_sized(h, q.zero_points.data(), q.zero_points.size());
    } else {
      update_sized(h, p->value.data(), p->value.size() * sizeof(float));
    }
  }
  return h.hex();
}

}  // namespace kllens
