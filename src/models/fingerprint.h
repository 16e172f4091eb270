// What identifies a model's weights independently of where they are stored: two folders with the
// same path, architecture and parameter count but other weights (retrained, re-downloaded) must
// not share a sweep journal or a sensitivity file.
#pragma once

#include <string>

#include "models/model.h"

namespace kllens {

// SHA-256 over every parameter in table order: its name, shape and values as the model holds
// them (float32, or a packed matrix's stored bytes and scheme). About 1.3 GB/s here, so a few
// seconds for a 1.5B model, against hours of sweep.
std::string weights_sha256(const Model& model);

}  // namespace kllens
