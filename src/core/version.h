#pragma once

#include <string_view>

namespace kllens {

// The project version from CMakeLists.txt: `kllens --version`, and what a sweep journal records
// so that a journal written by another version (other kernels, other numbers) is refused.
std::string_view kllens_version();

}  // namespace kllens
