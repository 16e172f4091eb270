#include "sensitivity/journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/sha256.h"
#include "core/version.h"
#include "io/durable_file.h"
#include "io/json_file.h"
#include "io/read_file.h"

namespace kllens {

using json = nlohmann::json;

namespace {

constexpr int kJournalFormat = 2;  // 1: plain JSON lines without checksums (before 0.7.0)
constexpr size_t kChecksumDigits = 16;

std::string checksum(std::string_view text) {
  return sha256_hex(text).substr(0, kChecksumDigits);
}

json header_record(const json& sweep) {
  return {{"kllens_journal", kJournalFormat},
          {"kllens_version", std::string(kllens_version())},
          {"sweep", sweep}};
}

// The top-level fields in which two sweep descriptions differ, for the error message.
std::string differing_fields(const json& found, const json& wanted) {
  if (!found.is_object() || !wanted.is_object()) return "the description";
  std::set<std::string> keys;
  for (const auto& [key, value] : wanted.items()) keys.insert(key);
  for (const auto& [key, value] : found.items()) keys.insert(key);
  std::string out;
  for (const auto& key : keys)
    if (!found.contains(key) || !wanted.contains(key) || found[key] != wanted[key])
      out += (out.empty() ? "'" : ", '") + key + "'";
  return out;
}

}  // namespace

std::string journal_line(const json& record) {
  const std::string text = record.dump();  // compact: never a raw tab or newline in it
  return text + "\t" + checksum(text) + "\n";
}

std::optional<json> parse_journal_line(std::string_view line) {
  const size_t tab = line.rfind('\t');
  if (tab == std::string_view::npos || line.size() - tab - 1 != kChecksumDigits) return std::nullopt;
  const std::string_view text = line.substr(0, tab);
  if (checksum(text) != line.substr(tab + 1)) return std::nullopt;
  try {
    return parse_json_text(text, "journal line");  // with the nesting limit of every JSON read
  } catch (const Error&) {
    return std::nullopt;  // a checksum that matches text that is not JSON: damage all the same
  }
}

SweepJournal::SweepJournal(std::string path, const json& sweep, bool resume) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  if (path_.empty()) return;
  lock();
  try {
    const bool exists = fs::exists(path_);
    if (exists && !resume)
      fail("{} exists from an earlier run of this sweep: pass --resume to continue it, or "
           "delete it to start again", path_);
    const json header = header_record(sweep);
    if (exists) {
      recover(header);
    } else {
      write_file_durably(path_, journal_line(header));
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd_ < 0) fail("{}: cannot open the journal for writing: {}", path_, std::strerror(errno));
  } catch (...) {
    if (lock_fd_ >= 0) ::close(lock_fd_);
    lock_fd_ = -1;
    throw;
  }
}

SweepJournal::~SweepJournal() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void SweepJournal::lock() {
  const std::string lock_path = path_ + ".lock";
  // The lock file may be unlinked by a finishing sweep between our open and our flock; then we
  // would hold a lock on a file nobody else sees. Re-check that the path is still our file.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail("{}: cannot create the lock file: {}", lock_path, std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
      ::close(fd);
      if (err == EWOULDBLOCK) {
        const std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "?";
        fail("{} is in use by another kllens process (pid {}): wait for it to finish, or stop it "
             "and then --resume", path_, holder);
      }
      fail("{}: cannot lock: {}", lock_path, std::strerror(err));
    }
    struct stat held {}, named {};
    if (::fstat(fd, &held) == 0 && ::stat(lock_path.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
      const std::string pid = std::to_string(::getpid());
      // The pid is only for the message above: failing to record it is harmless.
      [[maybe_unused]] const bool recorded =
          ::ftruncate(fd, 0) == 0 &&
          ::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size());
      lock_fd_ = fd;
      return;
    }
    ::close(fd);
  }
  fail("{}: cannot lock: the lock file keeps being replaced", lock_path);
}

void SweepJournal::recover(const json& header) {
  const std::string content = read_file(path_);
  // Whole lines: checksummed records. What follows the last '\n' is a write that never
  // finished (or, after a power loss, zeros the file system allocated but never filled).
  std::vector<std::optional<json>> lines;
  std::string_view rest = content;
  while (!rest.empty()) {
    const size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) {
      lines.push_back(std::nullopt);
      recovery_.dropped_bytes += static_cast<int64_t>(rest.size());
      ++recovery_.dropped_lines;
      break;
    }
    auto record = parse_journal_line(rest.substr(0, nl));
    if (!record) {
      recovery_.dropped_bytes += static_cast<int64_t>(nl + 1);
      ++recovery_.dropped_lines;
    }
    lines.push_back(std::move(record));
    rest.remove_prefix(nl + 1);
  }

  bool any_entry = false;
  for (size_t i = 1; i < lines.size(); ++i) any_entry |= lines[i].has_value();
  if (lines.empty() || !lines[0]) {
    if (!content.empty()) {
      // A journal of the format without checksums says so in its first line.
      const std::string first = content.substr(0, content.find('\n'));
      json old_header;
      try {
        old_header = parse_json_text(first, path_);
      } catch (const Error&) {
      }
      if (old_header.is_object() && old_header.contains("journal"))
        fail("{}: written by an earlier kllens (a journal without checksums); delete it to "
             "start again", path_);
    }
    if (any_entry)
      fail("{}: the journal's header is damaged, so its entries cannot be matched to this "
           "sweep; delete it to start again", path_);
    // Killed while writing the header: nothing was finished, start afresh.
    write_file_durably(path_, journal_line(header));
    return;
  }
  const json& found = *lines[0];
  // Anyone can write a line with a matching checksum: read the header defensively.
  auto text_field = [&](const char* key) {
    return found.is_object() && found.contains(key) && found[key].is_string()
               ? found[key].get<std::string>()
               : std::string("?");
  };
  if (!found.is_object() || !found.contains("kllens_journal") ||
      found["kllens_journal"] != kJournalFormat || !found.contains("sweep"))
    fail("{}: not a kllens sweep journal of format {}; delete it to start again", path_,
         kJournalFormat);
  const std::string version = text_field("kllens_version");
  if (version != kllens_version())
    fail("{}: written by kllens {} and this is kllens {}, whose numbers may differ; delete it to "
         "start again, or finish it with kllens {}",
         path_, version, kllens_version(), version);
  if (found["sweep"] != header["sweep"])
    fail("{}: the journal belongs to a different sweep ({} differ); delete it or write to "
         "another --out", path_, differing_fields(found["sweep"], header["sweep"]));

  std::string intact = journal_line(found);
  for (size_t i = 1; i < lines.size(); ++i) {
    if (!lines[i]) continue;
    records_.push_back(*lines[i]);
    intact += journal_line(*lines[i]);
  }
  recovery_.records = static_cast<int64_t>(records_.size());
  // Rewritten whole (durably: old file or new, never half) rather than patched in place, so a
  // damaged line in the middle goes too, and appends never continue a torn line.
  if (recovery_.dropped_lines > 0) write_file_durably(path_, intact);
}

void SweepJournal::append(const json& record) {
  if (fd_ < 0) return;
  write_all(fd_, journal_line(record), path_);
  if (::fsync(fd_) != 0) fail("{}: journal sync failed: {}", path_, std::strerror(errno));
}

void SweepJournal::remove() {
  if (path_.empty()) return;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
  // While the lock is still held, so no other process can have taken it on this lock file.
  ::unlink((path_ + ".lock").c_str());
  fsync_parent_directory(path_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

}  // namespace kllens
