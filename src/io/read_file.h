#pragma once

#include <string>

namespace kllens {

// The whole file's bytes. Error "PATH: cannot open" or "PATH: cannot read".
std::string read_file(const std::string& path);

}  // namespace kllens
