#include "core/version.h"

namespace kllens {

std::string_view kllens_version() { return KLLENS_VERSION; }

}  // namespace kllens
