// Shared by the libFuzzer targets (fuzz/*_fuzz.cpp, built with -DKLLENS_FUZZ=ON by scripts/fuzz).
// A target calls one parser on the input and catches exactly kllens::Error, the way bad input is
// reported; anything else (another exception, an ASan/UBSan report, an abort, a timeout, a huge
// allocation) is a crash libFuzzer records.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace kllens::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// For parsers that map a file: one file per process (libFuzzer's -jobs/-workers run several),
// rewritten for every input and removed at exit. /dev/shm keeps it off the disk when present.
class InputFile {
 public:
  explicit InputFile(std::string_view tag) {
    const char* dir = std::getenv("KLLENS_FUZZ_TMP");
    if (!dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    path_ = std::string(dir) + "/kllens-fuzz-" + std::string(tag) + "-" +
            std::to_string(getpid());
  }
  ~InputFile() { std::remove(path_.c_str()); }
  const std::string& write(const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(path_.c_str());
      std::abort();  // the harness, not the parser, failed
    }
    return path_;
  }

 private:
  std::string path_;
};

}  // namespace kllens::fuzz
