#include "io/read_file.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kllens {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read", path);
  return std::move(text).str();
}

}  // namespace kllens
