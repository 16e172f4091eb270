#include "io/durable_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace kllens {

namespace {

// Closes on every path out, so an Error thrown halfway leaks no descriptor.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The rename and the directory's fsync, once TMP is on disk.
void rename_into_place(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot move the written file into place: {}", path, std::strerror(err));
  }
  fsync_parent_directory(path);
}

}  // namespace

void write_all(int fd, std::string_view bytes, const std::string& what) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {}", what, std::strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string temporary_name_for(const std::string& path) {
  // A writer killed mid-write (kill -9, power loss) leaves PATH.tmp.PID behind; the next writer
  // of PATH removes those whose process is gone, so they do not pile up. A live process's
  // temporary (another writer now) is left alone: kill(pid, 0) fails with ESRCH only for the gone.
  namespace fs = std::filesystem;
  const fs::path p(path);
  const std::string prefix = p.filename().string() + ".tmp.";
  std::error_code ec;
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH)
      ::unlink(it->path().c_str());
  }
  return path + ".tmp." + std::to_string(::getpid());
}

void fsync_parent_directory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  // A directory that cannot be opened for reading (unusual permissions) cannot be fsynced either;
  // the rename has happened and is visible, only its durability is then the file system's.
  if (d.fd < 0) return;
  if (::fsync(d.fd) != 0 && errno != EINVAL)
    fail("{}: cannot sync the directory: {}", dir.string(), std::strerror(errno));
}

void commit_temporary_file(const std::string& tmp, const std::string& path) {
  try {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CLOEXEC)};
    if (f.fd < 0) fail("{}: cannot open: {}", tmp, std::strerror(errno));
    if (::fsync(f.fd) != 0) fail("{}: cannot sync: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  rename_into_place(tmp, path);
}

void write_file_durably(const std::string& path, std::string_view bytes) {
  const std::string tmp = temporary_name_for(path);
  try {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (f.fd < 0) fail("{}: cannot write: {}", path, std::strerror(errno));
    write_all(f.fd, bytes, path);
    if (::fsync(f.fd) != 0) fail("{}: cannot sync: {}", path, std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  rename_into_place(tmp, path);  // synced above: no second open and fsync
}

void write_stream_durably(const std::string& path,
                          const std::function<void(std::ostream&)>& write) {
  const std::string tmp = temporary_name_for(path);
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot write: {}", path, std::strerror(errno));
    write(out);
    out.close();
    if (!out) fail("{}: write failed", path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  commit_temporary_file(tmp, path);
}

}  // namespace kllens
