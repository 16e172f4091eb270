// Durable replacement of a file: the content lands whole, an existing file is replaced, and a
// failure leaves the old file and no temporary behind.
#include "io/durable_file.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

TEST(DurableFile, WritesAndReplacesWhole) {
  const fs::path dir = test::fresh_temp_dir("durable");
  const std::string path = (dir / "out.json").string();
  write_file_durably(path, "first");
  EXPECT_EQ(test::read_file(path), "first");
  const std::string big(3 << 20, 'x');  // more than one write() may take
  write_file_durably(path, big);
  EXPECT_EQ(test::read_file(path), big);
  EXPECT_FALSE(fs::exists(temporary_name_for(path)));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

// A writer killed mid-write leaves PATH.tmp.PID; the next write of PATH removes it when that
// process is gone, and leaves a live process's temporary alone.
TEST(DurableFile, TemporariesOfGoneWritersAreRemoved) {
  const fs::path dir = test::fresh_temp_dir("durable");
  const std::string path = (dir / "out.json").string();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);  // reaped: that pid is gone
  const std::string gone = path + ".tmp." + std::to_string(child);
  const std::string live = path + ".tmp." + std::to_string(getppid());  // our parent is alive
  const std::string other = (dir / "other.json.tmp.").string() + std::to_string(child);
  for (const auto& f : {gone, live, other}) test::write_file(f, "partial");
  write_file_durably(path, "whole");
  EXPECT_FALSE(fs::exists(gone));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));  // another file's temporary
  EXPECT_EQ(test::read_file(path), "whole");
  fs::remove_all(dir);
}

TEST(DurableFile, FailureLeavesTheOldFileAndNoTemporary) {
  const fs::path dir = test::fresh_temp_dir("durable");
  const std::string path = (dir / "out.json").string();
  write_file_durably(path, "old");
  // A directory where the temporary would be renamed to: the rename fails.
  const std::string blocked = (dir / "blocked").string();
  fs::create_directories(fs::path(blocked) / "inside");
  EXPECT_THROW(write_file_durably(blocked, "new"), Error);
  EXPECT_FALSE(fs::exists(temporary_name_for(blocked)));
  EXPECT_TRUE(fs::is_directory(blocked));
  EXPECT_THROW(write_file_durably((dir / "missing" / "x").string(), "new"), Error);
  EXPECT_EQ(test::read_file(path), "old");
  fs::remove_all(dir);
}

TEST(DurableFile, CommitsATemporaryWrittenElsewhere) {
  const fs::path dir = test::fresh_temp_dir("durable");
  const std::string path = (dir / "model.gguf").string();
  const std::string tmp = temporary_name_for(path);
  test::write_file(tmp, "payload");
  commit_temporary_file(tmp, path);
  EXPECT_EQ(test::read_file(path), "payload");
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_THROW(commit_temporary_file(tmp, path), Error) << "the temporary is gone";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kllens
