// The sweep's journal: finished entries, one checksummed record a line, durable when append()
// returns, so that a sweep killed at any instant (inside a write included) or a machine that lost
// power resumes with every entry it had finished and nothing that was damaged.
//
// Format: each line is a record's compact JSON, a tab, and the first 16 hex digits of the JSON's
// SHA-256. The first record is the header: {"kllens_journal": 2, "kllens_version", "sweep"}
// where "sweep" says what was measured (model, calibration, schemes, components).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kllens {

std::string journal_line(const nlohmann::json& record);  // with its '\n'
// The record of one line (without its '\n'); nullopt when the line is damaged: no tab, a
// checksum that does not match, or JSON that does not parse.
std::optional<nlohmann::json> parse_journal_line(std::string_view line);

struct JournalRecovery {
  int64_t records = 0;        // records found intact (the header not counted)
  int64_t dropped_lines = 0;  // damaged lines dropped (torn, zero-filled or corrupted)
  int64_t dropped_bytes = 0;
};

class SweepJournal {
 public:
  SweepJournal() = default;  // no journal: append() and remove() do nothing
  // Takes PATH.lock first (Error when another process holds it: a second sweep on the same
  // journal fails fast instead of interleaving with the first). Without `resume` the journal must
  // not exist yet and is created with `sweep` in its header. With `resume` an existing journal is
  // read back: its header must be intact and name this kllens version and exactly `sweep` (Error
  // naming what differs otherwise); damaged lines are dropped and the journal rewritten durably
  // without them, so their entries are computed again.
  SweepJournal(std::string path, const nlohmann::json& sweep, bool resume);
  ~SweepJournal();
  SweepJournal(const SweepJournal&) = delete;
  SweepJournal& operator=(const SweepJournal&) = delete;

  const std::vector<nlohmann::json>& records() const { return records_; }  // resumed, in order
  const JournalRecovery& recovery() const { return recovery_; }
  void append(const nlohmann::json& record);  // on disk (fsynced) when it returns
  // The result is written: deletes the journal, then its lock file, then releases the lock.
  void remove();

 private:
  void lock();
  void recover(const nlohmann::json& header);

  std::string path_;
  int fd_ = -1;
  int lock_fd_ = -1;
  std::vector<nlohmann::json> records_;
  JournalRecovery recovery_;
};

}  // namespace kllens
