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
#include <map>
#include <string>
#include <string_view>

#include "core/error.h"
#include "io/safetensors.h"

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

// Reads every tensor the way loading reads it (to_f32, read_int_tensor), so a view that passed a
// parser's validation but points outside its file shows up as an ASan report.
inline void read_every_tensor(const std::map<std::string, TensorView>& tensors) {
  for (const auto& [name, view] : tensors) {
    try {
      const auto t = view.dtype;
      if (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || t == DType::kF64)
        (void)view.to_f32();
      else (void)read_int_tensor(view);
    } catch (const Error&) {
    }
  }
}

}  // namespace kllens::fuzz
