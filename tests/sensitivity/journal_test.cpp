// The sweep journal on its own: checksummed lines, what a resume keeps of a torn, zero-filled or
// corrupted file, the refusals (another sweep, another kllens, the old format, a damaged header)
// and the lock. No model: records are small JSON objects, so the byte-by-byte cases run fast.
#include "sensitivity/journal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/version.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const json kSweep = {{"journal", "kllens-sensitivity"},
                     {"model", {{"arch", "mamba"}, {"weights_sha256", "ab12"}}},
                     {"schemes", {"int4:g32", "q4_K"}}};

json record(int i) {
  return {{"component", "backbone.layers." + std::to_string(i) + ".mixer.in_proj.weight"},
          {"scheme", "q4_K"},
          {"kl", 1e-3 * i + 1.0 / 3}};
}

// The header line as a journal made for kSweep starts, taken from a real one.
std::string header_line(const fs::path& dir) {
  const fs::path p = dir / "header-probe";
  { SweepJournal j(p.string(), kSweep, false); }
  std::string line = test::read_file(p);
  fs::remove(p);
  return line;
}

using test::error_of;

class Journal : public ::testing::Test {
 protected:
  void SetUp() override { dir = test::fresh_temp_dir("sweep-journal"); }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
  std::string path() const { return (dir / "S.json.journal").string(); }
};

TEST(JournalLine, RoundTripsAndNoticesEveryChangedByte) {
  const json r = record(7);
  const std::string line = journal_line(r);
  ASSERT_EQ(line.back(), '\n');
  const std::string body = line.substr(0, line.size() - 1);
  ASSERT_TRUE(parse_journal_line(body).has_value());
  EXPECT_EQ(*parse_journal_line(body), r);
  for (size_t i = 0; i < body.size(); ++i) {
    for (const char flip : {'\x01', '\x20', '\x80'}) {
      std::string bad = body;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      EXPECT_FALSE(parse_journal_line(bad).has_value()) << "byte " << i << " changed unnoticed";
    }
  }
  EXPECT_FALSE(parse_journal_line(body.substr(0, body.size() - 1)).has_value());
  EXPECT_FALSE(parse_journal_line(std::string(body.size(), '\0')).has_value());
  EXPECT_FALSE(parse_journal_line(r.dump()).has_value()) << "a line without its checksum";
}

TEST_F(Journal, AppendsAreReadBackInOrder) {
  {
    SweepJournal j(path(), kSweep, false);
    EXPECT_TRUE(j.records().empty());
    for (int i = 0; i < 3; ++i) j.append(record(i));
  }
  SweepJournal j(path(), kSweep, true);
  ASSERT_EQ(j.records().size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(j.records()[static_cast<size_t>(i)], record(i));
  EXPECT_EQ(j.recovery().dropped_lines, 0);
}

TEST_F(Journal, WithoutResumeAnExistingJournalIsRefused) {
  { SweepJournal j(path(), kSweep, false); }
  const std::string e = error_of([&] { SweepJournal j(path(), kSweep, false); });
  EXPECT_NE(e.find("--resume"), std::string::npos) << e;
}

// Every prefix of a journal is what a kill at that byte can leave: the whole lines in it are
// kept, the rest dropped, and the file is rewritten to exactly those whole lines.
TEST_F(Journal, EveryTornPrefixKeepsTheWholeLinesBeforeIt) {
  std::string full = header_line(dir);
  const size_t header_bytes = full.size();
  for (int i = 0; i < 3; ++i) full += journal_line(record(i));
  for (size_t cut = 0; cut <= full.size(); ++cut) {
    SCOPED_TRACE("cut at byte " + std::to_string(cut));
    const std::string prefix = full.substr(0, cut);
    test::write_file(path(), prefix);
    const auto t0 = std::chrono::steady_clock::now();
    SweepJournal j(path(), kSweep, true);
    const std::string kept = test::read_file(path());
    const size_t whole = prefix.rfind('\n') == std::string::npos ? 0 : prefix.rfind('\n') + 1;
    if (cut < header_bytes) {
      // Killed while the header was written: the journal starts again, empty.
      EXPECT_EQ(kept, full.substr(0, header_bytes));
      EXPECT_TRUE(j.records().empty());
    } else {
      EXPECT_EQ(kept, prefix.substr(0, whole));
      size_t lines = 0;
      for (char c : kept) lines += c == '\n';
      ASSERT_EQ(j.records().size(), lines - 1);
      for (size_t r = 0; r < j.records().size(); ++r)
        EXPECT_EQ(j.records()[r], record(static_cast<int>(r)));
    }
    EXPECT_EQ(j.recovery().dropped_lines, whole == cut ? 0 : 1);
    EXPECT_EQ(j.recovery().dropped_bytes, static_cast<int64_t>(cut - whole));
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), test::time_limit(1.0));
  }
}

TEST_F(Journal, ZeroFilledTailIsDropped) {
  const std::string good = header_line(dir) + journal_line(record(0)) + journal_line(record(1));
  // A power loss can leave the last write's extent allocated but never filled: zeros, with or
  // without a newline among them.
  const std::string last = journal_line(record(2));
  for (const std::string& tail : {std::string(4096, '\0'), std::string(last.size(), '\0'),
                                  std::string(last.size() - 1, '\0') + "\n"}) {
    test::write_file(path(), good + tail);
    SweepJournal j(path(), kSweep, true);
    EXPECT_EQ(j.records().size(), 2u);
    EXPECT_EQ(j.recovery().dropped_lines, 1);
    EXPECT_EQ(test::read_file(path()), good);
  }
}

TEST_F(Journal, CorruptedRecordIsDroppedAndTheOthersKept) {
  const std::string head = header_line(dir);
  std::string middle = journal_line(record(1));
  middle[middle.size() / 2] ^= 0x04;
  test::write_file(path(), head + journal_line(record(0)) + middle + journal_line(record(2)));
  {
    SweepJournal j(path(), kSweep, true);
    ASSERT_EQ(j.records().size(), 2u);
    EXPECT_EQ(j.records()[0], record(0));
    EXPECT_EQ(j.records()[1], record(2));
    EXPECT_EQ(j.recovery().dropped_lines, 1);
    j.append(record(1));
  }
  EXPECT_EQ(test::read_file(path()),
            head + journal_line(record(0)) + journal_line(record(2)) + journal_line(record(1)));
}

TEST_F(Journal, DamagedHeaderIsRefusedWhenEntriesFollow) {
  std::string head = header_line(dir);
  head[3] ^= 0x10;
  test::write_file(path(), head + journal_line(record(0)));
  const std::string e = error_of([&] { SweepJournal j(path(), kSweep, true); });
  EXPECT_NE(e.find("header is damaged"), std::string::npos) << e;
}

TEST_F(Journal, JournalWithoutChecksumsIsRefused) {
  // The format kllens wrote before checksums: the sweep description as the first plain line.
  test::write_file(path(), kSweep.dump() + "\n" + record(0).dump() + "\n");
  const std::string e = error_of([&] { SweepJournal j(path(), kSweep, true); });
  EXPECT_NE(e.find("without checksums"), std::string::npos) << e;
}

TEST_F(Journal, JournalOfAnotherVersionIsRefused) {
  json header = json::parse(header_line(dir).substr(0, header_line(dir).find('\t')));
  ASSERT_EQ(header["kllens_version"], std::string(kllens_version()));
  header["kllens_version"] = std::string(kllens_version()) + "-other";
  test::write_file(path(), journal_line(header) + journal_line(record(0)));
  const std::string e = error_of([&] { SweepJournal j(path(), kSweep, true); });
  EXPECT_NE(e.find("written by kllens " + std::string(kllens_version()) + "-other"),
            std::string::npos) << e;
}

TEST_F(Journal, JournalOfAnotherSweepNamesWhatDiffers) {
  { SweepJournal j(path(), kSweep, false); }
  json other = kSweep;
  other["schemes"] = {"int4:g32"};
  std::string e = error_of([&] { SweepJournal j(path(), other, true); });
  EXPECT_NE(e.find("different sweep ('schemes' differ)"), std::string::npos) << e;
  other = kSweep;
  other["model"]["weights_sha256"] = "cd34";
  other["components"] = "x_proj";
  e = error_of([&] { SweepJournal j(path(), other, true); });
  EXPECT_NE(e.find("('components', 'model' differ)"), std::string::npos) << e;
}

TEST_F(Journal, SecondProcessOnTheSameJournalFailsFast) {
  SweepJournal first(path(), kSweep, false);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { SweepJournal second(path(), kSweep, true); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), test::time_limit(1.0));
  EXPECT_NE(e.find("in use by another kllens process (pid " + std::to_string(getpid()) + ")"),
            std::string::npos) << e;
  first.append(record(0));  // the refused open changed nothing
  first.remove();
  EXPECT_FALSE(fs::exists(path()));
  EXPECT_FALSE(fs::exists(path() + ".lock"));
  SweepJournal again(path(), kSweep, false);
  EXPECT_TRUE(again.records().empty());
}

TEST_F(Journal, LockDiesWithItsProcess) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    try {
      SweepJournal j(path(), kSweep, false);
      j.append(record(0));
      if (write(ready[1], "x", 1) != 1) _exit(2);
      pause();
    } catch (...) {
    }
    _exit(1);
  }
  close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the child could not open the journal";
  close(ready[0]);
  const std::string busy = error_of([&] { SweepJournal j(path(), kSweep, true); });
  EXPECT_NE(busy.find("pid " + std::to_string(pid)), std::string::npos) << busy;
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  // The lock file is still there, but nobody holds it any more.
  EXPECT_TRUE(fs::exists(path() + ".lock"));
  SweepJournal j(path(), kSweep, true);
  ASSERT_EQ(j.records().size(), 1u);
  EXPECT_EQ(j.records()[0], record(0));
}

}  // namespace
}  // namespace kllens
