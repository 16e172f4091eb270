// `mpirun -np 2 kllens sensitivity`: two ranks write the file one process writes (timing fields
// aside), and a rank killed mid-sweep loses nothing: the resumed job ends with the same file.
// Needs Open MPI's mpirun (scripts/install-deps installs it, so CI runs these); skipped without.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "eval/text.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool have_mpirun() { return test::run_program({"mpirun", "--version"}).exit_code == 0; }

// The file without what differs between any two runs: timings and how many entries were resumed.
json without_timings(const std::string& path) {
  json j = json::parse(test::read_file(path));
  for (auto& e : j["entries"]) e.erase("seconds");
  j["sweep"].erase("seconds");
  j["sweep"].erase("entries_resumed");
  return j;
}

class MpiSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_mpirun()) GTEST_SKIP() << "no mpirun (Open MPI: scripts/install-deps installs it)";
    dir_ = test::fresh_temp_dir("mpi");
    text_ = (dir_ / "calib.txt").string();
    test::write_file(text_, select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 45));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<std::string> sweep(const std::string& out) const {
    return {"sensitivity", test::repo_path("data/models/demo-mamba"), "--calib", text_, "--ctx", "96",
            "--windows", "2", "--schemes", "q4_K,int8:g32", "--threads", "1", "--out", out};
  }
  std::vector<std::string> mpirun(int ranks, const std::vector<std::string>& args,
                                  const std::string& tag = "") const {
    std::vector<std::string> argv = {"mpirun", "--allow-run-as-root", "--oversubscribe", "-np",
                                     std::to_string(ranks), "-x", "OMP_NUM_THREADS=1"};
    if (!tag.empty()) argv.insert(argv.end(), {"-x", "KLLENS_TEST_TAG=" + tag});
    argv.push_back(test::cli_binary());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  std::string single_file() {
    const std::string out = (dir_ / "single.json").string();
    const auto r = test::run_cli(sweep(out));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }
  fs::path dir_;
  std::string text_;
};

TEST_F(MpiSweep, TwoRanksWriteTheFileOneProcessWrites) {
  const std::string single = single_file(), sharded = (dir_ / "mpi.json").string();
  const auto r = test::run_program(mpirun(2, sweep(sharded)));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("2 ranks"), std::string::npos) << r.out;
  EXPECT_EQ(without_timings(sharded), without_timings(single));
  EXPECT_FALSE(fs::exists(sharded + ".journal.rank0"));
  EXPECT_FALSE(fs::exists(sharded + ".journal.rank1"));
}

// An adaptive sweep decides on a component's schemes side by side: split across ranks, it
// still makes the decisions one process makes.
TEST_F(MpiSweep, AdaptiveTwoRanksWriteTheFileOneProcessWrites) {
  std::vector<std::string> single = sweep((dir_ / "single.json").string()), sharded = sweep((dir_ / "mpi.json").string());
  for (auto* args : {&single, &sharded}) args->insert(args->end(), {"--adaptive", "1"});
  const auto s = test::run_cli(single);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const auto r = test::run_program(mpirun(2, sharded));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const json one = without_timings((dir_ / "single.json").string());
  EXPECT_EQ(without_timings((dir_ / "mpi.json").string()), one);
  EXPECT_LT(one["sweep"]["adaptive"]["tokens_measured"], one["sweep"]["adaptive"]["tokens_full"]);
}

// The pid of rank `rank` of the job tagged `tag` (its environment says both), or -1.
pid_t find_rank(const std::string& tag, int rank) {
  for (const auto& p : fs::directory_iterator("/proc")) {
    const std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(p.path() / "environ", std::ios::binary);
    const std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (env.find("KLLENS_TEST_TAG=" + tag + '\0') != std::string::npos &&
        env.find("OMPI_COMM_WORLD_RANK=" + std::to_string(rank) + '\0') != std::string::npos)
      return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

int64_t journal_records(const std::string& path) {
  std::ifstream in(path);
  int64_t lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  return lines - 1;  // the header
}

TEST_F(MpiSweep, AKilledRankResumesToTheSameFile) {
  const std::string single = single_file(), sharded = (dir_ / "mpi.json").string();
  const std::string tag = std::to_string(getpid()) + "-kill";
  const std::vector<std::string> args = mpirun(2, sweep(sharded), tag);
  const pid_t job = test::spawn_program(args, "/dev/null", "/dev/null");
  // Rank 1 is killed once its journal holds two entries (rank 0 has some too by then).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool killed = false;
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    if (journal_records(sharded + ".journal.rank1") >= 2) {
      const pid_t rank1 = find_rank(tag, 1);
      if (rank1 > 0) killed = kill(rank1, SIGKILL) == 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int status = 0;
  waitpid(job, &status, 0);
  ASSERT_TRUE(killed) << "the sweep ended before rank 1 could be killed";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the killed job reported success";
  EXPECT_FALSE(fs::exists(sharded));
  const int64_t kept = journal_records(sharded + ".journal.rank0") + journal_records(sharded + ".journal.rank1");
  EXPECT_GE(kept, 2);

  std::vector<std::string> resume = sweep(sharded);
  resume.push_back("--resume");
  const auto r = test::run_program(mpirun(2, resume));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  // Every intact journal line is resumed (a line torn by the kill is dropped and recomputed).
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(\((\d+) resumed, 2 ranks\))"))) << r.out;
  EXPECT_GE(std::stoll(m[1]), kept - 1);
  EXPECT_LE(std::stoll(m[1]), kept);
  EXPECT_EQ(without_timings(sharded), without_timings(single));
}

TEST_F(MpiSweep, OtherCommandsRefuseToRunUnderMpirun) {
  const auto r = test::run_program(mpirun(2, {"inspect", test::repo_path("data/models/demo-mamba")}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("only `kllens sensitivity` runs under mpirun"), std::string::npos) << r.err;
  // A job of one process is an ordinary run.
  const auto one = test::run_program(mpirun(1, {"inspect", test::repo_path("data/models/demo-mamba")}));
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("architecture mamba"), std::string::npos) << one.out;
}

}  // namespace
}  // namespace kllens
