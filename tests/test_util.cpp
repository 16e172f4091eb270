#include "test_util.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <vector>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "core/error.h"

namespace kllens::test {

std::string repo_path(std::string_view relative) {
  return (std::filesystem::path(KLLENS_REPO) / relative).string();
}

namespace {
// Every folder fresh_temp_dir made in this process, removed when the process exits (ctest runs
// each test in its own process), so tests that do not clean up leave nothing in /tmp.
struct TempDirs {
  std::mutex mutex;
  std::vector<std::filesystem::path> paths;
  ~TempDirs() {
    std::error_code ec;
    for (const auto& p : paths) std::filesystem::remove_all(p, ec);
  }
};
TempDirs& temp_dirs() {
  static TempDirs dirs;
  return dirs;
}
}  // namespace

std::filesystem::path fresh_temp_dir(std::string_view tag) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("kllens-test-" + std::to_string(getpid()) + "-" + std::string(tag) + "-" +
              std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    TempDirs& dirs = temp_dirs();
    std::lock_guard<std::mutex> lock(dirs.mutex);
    dirs.paths.push_back(dir);
  }
  return dir;
}

std::string weights_with_config(const std::string& weights_folder, std::string_view config_text) {
  const auto dir = fresh_temp_dir("weights-with-config");
  std::filesystem::copy_file(std::filesystem::path(weights_folder) / "model.safetensors",
                             dir / "model.safetensors");
  write_file(dir / "config.json", config_text);
  return dir.string();
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string cli_binary() { return KLLENS_CLI; }

CliResult run_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {cli_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

pid_t spawn_program(const std::vector<std::string>& args, const std::string& out_path,
                    const std::string& err_path) {
  // The child would otherwise write out what the test printed but had not flushed yet.
  std::cout.flush();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    std::FILE* out = std::freopen(out_path.c_str(), "w", stdout);
    std::FILE* err = std::freopen(err_path.c_str(), "w", stderr);
    std::FILE* in = std::freopen("/dev/null", "r", stdin);
    (void)out, (void)err, (void)in;
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

CliResult run_program(const std::vector<std::string>& args) {
  auto dir = fresh_temp_dir("cli");
  const auto out_path = dir / "stdout";
  const auto err_path = dir / "stderr";
  const pid_t pid = spawn_program(args, out_path.string(), err_path.string());
  int status = 0;
  waitpid(pid, &status, 0);
  CliResult result;
  if (WIFSIGNALED(status)) {
    result.signaled = true;
    result.signal = WTERMSIG(status);
  } else {
    result.exit_code = WEXITSTATUS(status);
  }
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  std::filesystem::remove_all(dir);
  return result;
}

void expect_cli_error(const CliResult& r, int code, const std::string& part) {
  EXPECT_FALSE(r.signaled) << "signal " << r.signal;
  EXPECT_EQ(r.exit_code, code) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(part), std::string::npos) << r.err;
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts,
                  const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error" << (what.empty() ? "" : ": ") << what;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.exit_code(), 1);
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double time_limit(double seconds) {
#ifdef KLLENS_SANITIZED
  return 20 * seconds;
#else
  return seconds;
#endif
}

double max_abs_diff(std::span<const float> a, const float* b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

}  // namespace kllens::test
