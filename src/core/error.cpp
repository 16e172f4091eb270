#include "core/error.h"

#include <cstdio>
#include <cstdlib>

namespace kllens::detail {

void check_failed(const char* file, int line, const char* condition, const std::string& message) {
  std::fprintf(stderr, "internal error: %s:%d: check '%s' failed: %s\n", file, line, condition,
               message.c_str());
  std::abort();
}

}  // namespace kllens::detail
