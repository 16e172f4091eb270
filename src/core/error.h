// Errors. Bad input (files, configs, CLI arguments, plans) throws kllens::Error with a sentence
// naming the file, the tensor and the numbers involved; cli/main.cpp catches it once, prints
// "error: ..." and exits with its code (2 = usage, 1 = everything else). Programmer errors
// (broken invariants) use KLLENS_CHECK, which aborts with the values involved.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kllens {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int exit_code = 1)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Usage errors (bad flags or argument values) exit with 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message, 2) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* condition,
                               const std::string& message);
}  // namespace detail

}  // namespace kllens

#define KLLENS_CHECK(cond, ...)                                                              \
  do {                                                                                       \
    if (!(cond)) ::kllens::detail::check_failed(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)
