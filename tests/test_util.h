// Helpers shared by every test binary: where the repository's fixtures are, running the CLI.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kllens::test {

// Absolute path of a file in the repository, e.g. repo_path("data/fixtures/oracles/mamba").
std::string repo_path(std::string_view relative);

// A fresh empty directory under the temporary area, unique per call; removed when the test
// process exits.
std::filesystem::path fresh_temp_dir(std::string_view tag);
// A fresh folder holding `weights_folder`'s model.safetensors and `config_text` as its
// config.json: a checkpoint's weights under an edited or variant config.
std::string weights_with_config(const std::string& weights_folder, std::string_view config_text);

struct CliResult {
  int exit_code = -1;      // valid when !signaled
  bool signaled = false;   // the process died of a signal (a crash): always a test failure
  int signal = 0;
  std::string out;         // stdout
  std::string err;         // stderr
};

// Runs the built `kllens` binary with these arguments (no shell), capturing its output.
CliResult run_cli(const std::vector<std::string>& args);
// Runs argv[0] (searched in PATH) with the rest as arguments, the same way.
CliResult run_program(const std::vector<std::string>& argv);
// Starts it without waiting, stdout and stderr to these files; the caller waitpid()s.
pid_t spawn_program(const std::vector<std::string>& argv, const std::string& out_path,
                    const std::string& err_path);
// The built `kllens` binary.
std::string cli_binary();

// A bad-input run: no signal, exit `code`, stderr starting "error: " and containing `part`.
void expect_cli_error(const CliResult& r, int code, const std::string& part);

// A gtest parameter name from a model name: "demo-mamba" -> "demo_mamba" (names may not hold '-').
struct ModelParamName {
  template <typename Info>
  std::string operator()(const Info& info) const {
    std::string n = info.param;
    for (char& c : n)
      if (c == '-') c = '_';
    return n;
  }
};

// Runs f, expecting a kllens::Error of exit code 1 whose one-line message holds every part;
// `what` (e.g. the input) is printed when f throws none.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts,
                  const std::string& what = "");
// The message of the kllens::Error f throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f);

// A test's time limit: `seconds` in the optimized build; 20 times more in the sanitized one
// (scripts/test-sanitized: -O1 and every memory access instrumented), where what is under test is
// that nothing is reported, not the speed.
double time_limit(double seconds);

// max |a[i] - b[i]| over a's elements, in double; NaN anywhere counts as infinite.
double max_abs_diff(std::span<const float> a, const float* b);

// Writes a small file, creating directories.
void write_file(const std::filesystem::path& path, std::string_view bytes);
std::string read_file(const std::filesystem::path& path);

}  // namespace kllens::test
