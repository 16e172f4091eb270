// The one-component sweep: prefix reuse against full recomputation, weight restoration, the
// journal (resume after a crash, torn lines, mismatched or stale journals) and basic metric
// sanity. Small demo models, two windows of 64 held-out tokens, a few components each, so the
// whole file runs in seconds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "eval/perplexity.h"
#include "eval/text.h"
#include "models/model.h"
#include "sensitivity/journal.h"
#include "sensitivity/sweep.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Windows = std::vector<std::vector<int32_t>>;

constexpr int64_t kCtx = 64;

// Held-out article 44 of WikiText-2 test (the demo models trained on 0..43), cut like the ppl
// protocol: two windows of kCtx tokens.
Windows heldout_windows(const std::string& model_dir, int64_t n = 2) {
  const std::string text =
      select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44);
  const auto tok = Tokenizer::load(model_dir + "/tokenizer.json");
  auto windows = make_windows(tok.encode(text), kCtx, n);
  EXPECT_EQ(windows.size(), static_cast<size_t>(n));
  return windows;
}

struct Demo {
  std::string dir;
  std::unique_ptr<Model> model;
  Windows windows;
};

Demo load_demo(const std::string& name) {
  Demo d;
  d.dir = test::repo_path("data/models/" + name);
  d.model = load_model(d.dir);
  d.windows = heldout_windows(d.dir);
  return d;
}

SweepOptions quiet(std::vector<std::string> schemes, std::string regex) {
  SweepOptions o;
  o.schemes = std::move(schemes);
  o.component_regex = std::move(regex);
  o.show_progress = false;
  return o;
}

bool rel_close(double a, double b, double rel = 1e-12) {
  if (a == b) return true;  // also equal infinities
  return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b));
}

std::vector<const MeanStd*> all_metrics(const EntryMetrics& m) {
  return {&m.kl, &m.rkl, &m.mse, &m.sqnr_db, &m.top1, &m.dnll};  // metric_names() order
}

void expect_same_metrics(const SweepEntry& a, const SweepEntry& b) {
  SCOPED_TRACE(a.component + " " + a.scheme);
  EXPECT_EQ(a.component, b.component);
  EXPECT_EQ(a.scheme, b.scheme);
  const auto x = all_metrics(a.metrics), y = all_metrics(b.metrics);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_PRED3(rel_close, x[i]->mean, y[i]->mean, 1e-12) << metric_names()[i];
    EXPECT_PRED3(rel_close, x[i]->stderr_, y[i]->stderr_, 1e-12) << metric_names()[i] << " stderr";
  }
}

void expect_same_entries(const std::vector<SweepEntry>& a, const std::vector<SweepEntry>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].layer, b[i].layer);
    EXPECT_EQ(a[i].role, b[i].role);
    EXPECT_EQ(a[i].shape, b[i].shape);
    EXPECT_EQ(a[i].bytes, b[i].bytes);
    expect_same_metrics(a[i], b[i]);
  }
}

// Runs with prefix reuse and with full recomputation; returns the reuse run's stats.
SweepStats check_reuse_matches_recompute(Demo& d, const std::string& regex,
                                         int64_t cache_budget = int64_t{4} << 30) {
  auto reuse = quiet({"int4:g32"}, regex);
  reuse.cache_budget_bytes = cache_budget;
  auto full = reuse;
  full.prefix_reuse = false;
  SweepStats stats;
  const auto a = run_sweep(*d.model, d.windows, reuse, json::object(), &stats);
  const auto b = run_sweep(*d.model, d.windows, full, json::object());
  EXPECT_GE(a.size(), 3u);
  expect_same_entries(a, b);
  return stats;
}

// Per-window bytes of every kept state at stride 1, from a probe run.
int64_t stride1_cache_bytes(Demo& d, const std::string& regex) {
  SweepStats stats;
  run_sweep(*d.model, d.windows, quiet({"int8:g32"}, regex), json::object(), &stats);
  EXPECT_EQ(stats.cache_stride, 1);
  return stats.cache_bytes;
}

// The embedding (restart from start()), early and late layers.
const char* kMambaRegex = R"(embeddings|layers\.[03]\.mixer\.(in_proj|x_proj)|layers\.1\.mixer\.out_proj)";

TEST(SweepPrefixReuse, MatchesFullRecomputeMamba) {
  Demo d = load_demo("demo-mamba");
  const auto stats = check_reuse_matches_recompute(d, kMambaRegex);
  EXPECT_EQ(stats.cache_stride, 1);
  EXPECT_GT(stats.cache_bytes, 0);
}

TEST(SweepPrefixReuse, MatchesFullRecomputeWithStride) {
  Demo d = load_demo("demo-mamba");
  const int64_t full = stride1_cache_bytes(d, kMambaRegex);
  // Half the stride-1 cache forces stride 2: layer 1 and 3 components restart from the state
  // before layer 0 and 2, recomputing one unperturbed layer first.
  const auto stats = check_reuse_matches_recompute(
      d, R"(layers\.[13]\.mixer\.(in_proj|out_proj)|layers\.2\.mixer\.x_proj)", full / 2);
  EXPECT_EQ(stats.cache_stride, 2);
  EXPECT_LT(stats.cache_bytes, full);
}

// Hymba's layer 2 reads the K/V layer 1 computes (kv_reuse_group [[1, 2]]), and layer 1's
// in_proj holds the q/k/v rows: perturbing it must reach layer 2 through the shared K/V, which
// the cached state before layer 2 must carry.
const char* kHymbaRegex = R"(layers\.1\.mamba\.in_proj|layers\.2\.mamba\.(in_proj|out_proj)|layers\.2\.moe.*down_proj)";

TEST(SweepPrefixReuse, MatchesFullRecomputeHymbaSharedKV) {
  Demo d = load_demo("demo-hymba");
  check_reuse_matches_recompute(d, kHymbaRegex);
  const int64_t full = stride1_cache_bytes(d, kHymbaRegex);
  const auto stats = check_reuse_matches_recompute(d, kHymbaRegex, full / 2);
  EXPECT_EQ(stats.cache_stride, 2);
}

TEST(SweepPrefixReuse, TinyBudgetFallsBackToStart) {
  Demo d = load_demo("demo-mamba");
  const auto stats = check_reuse_matches_recompute(d, R"(layers\.[23]\.mixer\.(in_proj|x_proj))", 1);
  EXPECT_GT(stats.cache_stride, static_cast<int>(d.model->info().n_layers));
}

TEST(SweepCost, EntrySecondsSumTheStagesItReruns) {
  SweepCostModel c;
  c.start_seconds = 1;
  c.layer_seconds = {2, 3, 4};
  c.head_seconds = 5;
  EXPECT_DOUBLE_EQ(c.entry_seconds(-1), 15);  // the embedding: everything
  EXPECT_DOUBLE_EQ(c.entry_seconds(0), 14);
  EXPECT_DOUBLE_EQ(c.entry_seconds(2), 9);
  EXPECT_DOUBLE_EQ(c.entry_seconds(3), 5);  // the lm_head: the head only
}

// The cost model's total is of the order of what the entries took (it leaves out quantizing the
// component and comparing logits beyond the NLL, so it under-estimates, but not by 10x).
TEST(SweepCost, ExpectedTimeIsTheOrderOfTheMeasuredOne) {
  Demo d = load_demo("demo-hymba");
  SweepStats stats;
  run_sweep(*d.model, d.windows, quiet({"int4:g32"}, R"(layers\.[0-9]+\.mamba\.out_proj|embed)"),
            json::object(), &stats);
  ASSERT_GE(stats.entries_computed, 3);
  const double measured = stats.total_seconds - stats.fp_seconds;
  std::printf("%lld entries: expected %.3f s, took %.3f s\n",
              static_cast<long long>(stats.entries_computed), stats.expected_entry_seconds, measured);
  EXPECT_GT(stats.expected_entry_seconds, 0.1 * measured);
  EXPECT_LT(stats.expected_entry_seconds, 10 * measured);
}

TEST(SweepRestore, WeightsAndLogitsUnchanged) {
  Demo d = load_demo("demo-hymba");
  std::map<std::string, std::vector<float>> before;
  for (const auto& p : d.model->weights().all()) before[p->name] = p->value;
  const auto logits_before = d.model->forward(d.windows[0]);
  auto o = quiet({"int4:g32", "int8:g32"}, R"(embed_tokens|layers\.[12]\.mamba\.in_proj)");
  const auto entries = run_sweep(*d.model, d.windows, o, json::object());
  ASSERT_EQ(entries.size(), 6u);
  for (const auto& p : d.model->weights().all()) {
    const auto& v = before.at(p->name);
    ASSERT_EQ(v.size(), p->value.size()) << p->name;
    EXPECT_EQ(std::memcmp(v.data(), p->value.data(), v.size() * sizeof(float)), 0) << p->name;
  }
  const auto logits_after = d.model->forward(d.windows[0]);
  ASSERT_EQ(logits_before.size(), logits_after.size());
  EXPECT_EQ(std::memcmp(logits_before.data(), logits_after.data(),
                        logits_before.size() * sizeof(float)), 0);
}

TEST(SweepMetrics, Sanity) {
  Demo d = load_demo("demo-mamba");
  const auto entries = run_sweep(
      *d.model, d.windows,
      quiet({"int4:g32", "int8:g32"}, R"(embeddings|layers\.[02]\.mixer\.(in_proj|out_proj))"),
      json::object());
  ASSERT_EQ(entries.size(), 10u);
  std::map<std::string, std::map<std::string, double>> kl;
  for (const auto& e : entries) {
    SCOPED_TRACE(e.component + " " + e.scheme);
    const auto& m = e.metrics;
    EXPECT_GE(m.kl.mean, 0);
    EXPECT_GE(m.rkl.mean, 0);
    EXPECT_GE(m.mse.mean, 0);
    EXPECT_GE(m.top1.mean, 0);
    EXPECT_LE(m.top1.mean, 1);
    EXPECT_TRUE(std::isfinite(m.sqnr_db.mean));
    EXPECT_TRUE(std::isfinite(m.dnll.mean));
    EXPECT_EQ(m.kl.count, 2 * kCtx);    // every position of both windows
    EXPECT_EQ(m.dnll.count, 2 * (kCtx - 1));  // positions with a next token
    kl[e.component][e.scheme] = m.kl.mean;
  }
  ASSERT_EQ(kl.size(), 5u);
  for (const auto& [c, by] : kl) {
    SCOPED_TRACE(c);
    // 8-bit codes have ~16x smaller steps than 4-bit ones: far less damage.
    EXPECT_LT(by.at("int8:g32"), by.at("int4:g32"));
    EXPECT_GT(by.at("int8:g32"), 0);
  }
}

// ---- journal ----------------------------------------------------------------------------------

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

struct SimulatedCrash {};

class SweepResume : public ::testing::Test {
 protected:
  void SetUp() override {
    demo = load_demo("demo-mamba");
    dir = test::fresh_temp_dir("journal");
    header = {{"journal", "test"}, {"schemes", schemes}};
  }
  void TearDown() override { fs::remove_all(dir); }
  SweepOptions options(const fs::path& journal, bool resume) const {
    auto o = quiet(schemes, regex);
    o.journal_path = journal.string();
    o.resume = resume;
    return o;
  }
  Demo demo;
  fs::path dir;
  std::vector<std::string> schemes = {"int4:g32", "int8:g32"};
  std::string regex = R"(layers\.[0-3]\.mixer\.(x_proj|out_proj))";
  json header;
};

TEST_F(SweepResume, ResumeAfterInterruptionMatchesUninterrupted) {
  const auto reference = run_sweep(*demo.model, demo.windows, options(dir / "ref", false), header);
  ASSERT_EQ(reference.size(), 16u);
  std::map<std::string, std::vector<float>> before;
  for (const auto& p : demo.model->weights().all()) before[p->name] = p->value;

  // The callback runs after an entry is journaled, so throwing from it leaves exactly k entries
  // behind, as a crash between entries would.
  const int k = 5;
  auto crashing = options(dir / "j", false);
  int seen = 0;
  crashing.on_entry = [&](const SweepEntry&) {
    if (++seen == k) throw SimulatedCrash{};
  };
  EXPECT_THROW(run_sweep(*demo.model, demo.windows, crashing, header), SimulatedCrash);
  EXPECT_EQ(read_lines(dir / "j").size(), static_cast<size_t>(1 + k));
  for (const auto& p : demo.model->weights().all())
    EXPECT_TRUE(before.at(p->name) == p->value) << p->name << " not restored after the throw";

  auto resume = options(dir / "j", true);
  int computed = 0;
  resume.on_entry = [&](const SweepEntry&) { ++computed; };
  SweepStats stats;
  const auto resumed = run_sweep(*demo.model, demo.windows, resume, header, &stats);
  EXPECT_EQ(stats.entries_resumed, k);
  EXPECT_EQ(stats.entries_computed, 16 - k);
  EXPECT_EQ(computed, 16 - k);
  expect_same_entries(resumed, reference);
  EXPECT_EQ(read_lines(dir / "j").size(), 17u);
}

TEST_F(SweepResume, TornLastLineIsIgnored) {
  const auto reference = run_sweep(*demo.model, demo.windows, options(dir / "ref", false), header);
  const auto full = read_lines(dir / "ref");
  ASSERT_EQ(full.size(), 17u);
  // Header, 6 whole entries, then half of the 7th without its newline: killed mid-write.
  std::string journal;
  for (int i = 0; i <= 6; ++i) journal += full[static_cast<size_t>(i)] + "\n";
  journal += full[7].substr(0, full[7].size() / 2);
  test::write_file(dir / "j", journal);
  SweepStats stats;
  const auto resumed = run_sweep(*demo.model, demo.windows, options(dir / "j", true), header, &stats);
  EXPECT_EQ(stats.entries_resumed, 6);
  EXPECT_EQ(stats.entries_computed, 10);
  expect_same_entries(resumed, reference);
  // The torn tail was cut before appending: every line is an intact record again.
  const auto lines = read_lines(dir / "j");
  EXPECT_EQ(lines.size(), 17u);
  for (const auto& l : lines) EXPECT_TRUE(parse_journal_line(l).has_value()) << l;
  EXPECT_EQ(stats.journal_dropped_lines, 1);
}

// What a kill at any byte of the journal, a power loss (zeros) or a flipped bit leaves behind:
// every resume ends with the entries of the uninterrupted run. Cut points: every line boundary
// and, with a fixed seed, points inside lines (the header's included).
TEST_F(SweepResume, EveryDamagedJournalResumesToTheSameEntries) {
  const auto reference = run_sweep(*demo.model, demo.windows, options(dir / "ref", false), header);
  const std::string full = test::read_file(dir / "ref");
  std::vector<size_t> cuts = {0, full.size() - 1};
  for (size_t i = 0; i < full.size(); ++i)
    if (full[i] == '\n') cuts.push_back(i + 1);
  std::mt19937 rng(20261202);
  for (int i = 0; i < 8; ++i) cuts.push_back(std::uniform_int_distribution<size_t>(1, full.size() - 1)(rng));
  cuts.push_back(full.find('\t'));  // inside the header
  std::vector<std::pair<std::string, std::string>> cases;
  for (size_t c : cuts) cases.emplace_back("cut at " + std::to_string(c), full.substr(0, c));
  const size_t last_start = full.rfind('\n', full.size() - 2) + 1;
  cases.emplace_back("last line zeroed", full.substr(0, last_start) + std::string(full.size() - last_start, '\0'));
  std::string flipped = full;
  const size_t middle = full.find('\n', full.size() / 2) - 20;
  flipped[middle] ^= 0x02;
  cases.emplace_back("a bit flipped in a middle line", flipped);
  for (const auto& [what, content] : cases) {
    SCOPED_TRACE(what);
    test::write_file(dir / "j", content);
    SweepStats stats;
    const auto resumed = run_sweep(*demo.model, demo.windows, options(dir / "j", true), header, &stats);
    expect_same_entries(resumed, reference);
    EXPECT_EQ(stats.entries_resumed + stats.entries_computed, 16);
    // The journal holds the header and every entry again, each line intact.
    const auto lines = read_lines(dir / "j");
    EXPECT_EQ(lines.size(), 17u);
    for (const auto& l : lines) EXPECT_TRUE(parse_journal_line(l).has_value()) << l;
  }
}

TEST_F(SweepResume, ResultIsWrittenUnderTheLockThenTheJournalGoes) {
  auto o = options(dir / "j", false);
  std::vector<SweepEntry> completed;
  o.on_complete = [&](const std::vector<SweepEntry>& entries, const SweepStats& stats) {
    completed = entries;
    EXPECT_EQ(stats.entries_computed, 16);
    EXPECT_TRUE(fs::exists(dir / "j")) << "the journal outlives the result's writing";
    // Another process trying to resume now is turned away.
    try {
      kllens::SweepJournal other((dir / "j").string(), header, true);
      ADD_FAILURE() << "the lock was not held";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    }
  };
  const auto entries = run_sweep(*demo.model, demo.windows, o, header);
  expect_same_entries(completed, entries);
  EXPECT_FALSE(fs::exists(dir / "j"));
  EXPECT_FALSE(fs::exists(dir / "j.lock"));

  // A result that fails to be written keeps the journal: the next resume computes nothing.
  auto failing = options(dir / "j2", false);
  failing.on_complete = [](const std::vector<SweepEntry>&, const SweepStats&) { fail("disk full"); };
  EXPECT_THROW(run_sweep(*demo.model, demo.windows, failing, header), Error);
  ASSERT_TRUE(fs::exists(dir / "j2"));
  SweepStats stats;
  const auto resumed = run_sweep(*demo.model, demo.windows, options(dir / "j2", true), header, &stats);
  EXPECT_EQ(stats.entries_computed, 0);
  expect_same_entries(resumed, entries);
}

TEST_F(SweepResume, StaleJournalWithoutResumeIsAnError) {
  test::write_file(dir / "j", "");
  try {
    run_sweep(*demo.model, demo.windows, options(dir / "j", false), header);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
}

TEST_F(SweepResume, JournalOfAnotherSweepIsAnError) {
  json other = header;
  other["schemes"] = {"int4:g32"};
  auto crashing = options(dir / "j", false);
  crashing.on_entry = [](const SweepEntry&) { throw SimulatedCrash{}; };
  EXPECT_THROW(run_sweep(*demo.model, demo.windows, crashing, other), SimulatedCrash);
  try {
    run_sweep(*demo.model, demo.windows, options(dir / "j", true), header);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different sweep"), std::string::npos) << e.what();
  }
}

// ---- the CLI, killed with SIGKILL mid-sweep ----------------------------------------------------

size_t count_lines(const fs::path& p) {
  std::ifstream in(p);
  size_t n = 0;
  for (char c; in.get(c);) n += c == '\n';
  return n;
}

// Timing fields differ between any two runs; entries_resumed is what differs by design.
// Everything else — every metric of every entry, the calibration and model descriptions — must
// be identical, so the comparison is on the parsed JSON with only these removed.
json without_timing(json j) {
  j["sweep"].erase("seconds");
  j["sweep"].erase("entries_resumed");
  for (auto& e : j["entries"]) e.erase("seconds");
  return j;
}

// Starts the kllens binary with these arguments, its output discarded; the caller waits.
pid_t spawn_cli(std::vector<std::string> args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    std::vector<char*> argv;
    std::string bin = KLLENS_CLI;
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

class SweepCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(KLLENS_CLI)) << "build the kllens target first: " << KLLENS_CLI;
    dir = test::fresh_temp_dir("sens-cli");
    const std::string text =
        select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44);
    test::write_file(dir / "calib.txt", text);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::vector<std::string> args(const std::string& out, const std::string& schemes) const {
    // One thread: identical arithmetic in every process.
    return {"sensitivity", test::repo_path("data/models/demo-mamba"), "--calib",
            (dir / "calib.txt").string(), "--ctx", std::to_string(kCtx), "--windows", "2",
            "--schemes", schemes, "--out", out, "--threads", "1"};
  }
  fs::path dir;
};

TEST_F(SweepCli, KilledSweepResumesToTheSameReport) {
  const std::string schemes = "int4:g32,int8:g32";
  const auto ref = test::run_cli(args((dir / "ref.json").string(), schemes));
  ASSERT_FALSE(ref.signaled);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  const json reference = json::parse(test::read_file(dir / "ref.json"));
  const size_t total = reference["entries"].size();
  ASSERT_EQ(total, 42u);  // 21 components x 2 schemes

  const fs::path out = dir / "S.json";
  const fs::path journal = out.string() + ".journal";
  const pid_t pid = spawn_cli(args(out.string(), schemes));
  ASSERT_GE(pid, 0);
  // kill -9 once the journal holds the header and at least 3 entries.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(journal) && count_lines(journal) >= 4) break;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the sweep ended before it could be killed";
  ASSERT_FALSE(fs::exists(out));
  const size_t journaled = count_lines(journal) - 1;
  ASSERT_GE(journaled, 3u);
  ASSERT_LT(journaled, total) << "killed too late to test resuming";

  // Without --resume the journal is not silently overwritten.
  const auto again = test::run_cli(args(out.string(), schemes));
  ASSERT_FALSE(again.signaled);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("error: "), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;

  // A journal of other schemes is not mixed in.
  auto other_args = args(out.string(), "int4:g32");
  other_args.push_back("--resume");
  const auto other = test::run_cli(other_args);
  ASSERT_FALSE(other.signaled);
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("different sweep"), std::string::npos) << other.err;

  // Plus a torn line, as if the kill had landed mid-write.
  { std::ofstream(journal, std::ios::app) << R"({"component":"backbone.layers.3.mix)"; }

  auto resume_args = args(out.string(), schemes);
  resume_args.push_back("--resume");
  const auto resumed = test::run_cli(resume_args);
  ASSERT_FALSE(resumed.signaled);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_FALSE(fs::exists(journal)) << "the journal is removed once the report is written";
  const json report = json::parse(test::read_file(out));
  EXPECT_EQ(report["sweep"]["entries_resumed"].get<size_t>(), journaled);
  EXPECT_EQ(without_timing(report), without_timing(reference));
}

// kill -9 at random instants (fixed seed) over a run's length: during start-up, the journal's
// creation or recovery, an entry, an append, the result's writing or the journal's removal. Each
// run resumes the one before; after the last kill one more runs to the end. At every point the
// result file is absent or whole, and the final file equals the uninterrupted run's.
TEST_F(SweepCli, KilledAtRandomPointsResumesToTheSameReport) {
  const std::string schemes = "int4:g32,q4_K";
  auto with_components = [&](const fs::path& out) {
    auto a = args(out.string(), schemes);
    a.insert(a.end(), {"--components", R"(layers\.[0-2]\.mixer)", "--resume"});
    return a;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const auto ref = test::run_cli(with_components(dir / "ref.json"));
  const double run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(ref.signaled);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  const json reference = json::parse(test::read_file(dir / "ref.json"));
  ASSERT_GE(reference["entries"].size(), 12u);

  const fs::path out = dir / "S.json";
  const fs::path journal = out.string() + ".journal";
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> instant(0.0, run_seconds);
  int killed = 0, finished_early = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = spawn_cli(with_components(out));
    ASSERT_GE(pid, 0);
    std::this_thread::sleep_for(std::chrono::duration<double>(instant(rng)));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
      ++killed;
    } else {
      ASSERT_TRUE(WIFEXITED(status));
      ASSERT_EQ(WEXITSTATUS(status), 0) << "round " << round;
      ++finished_early;
    }
    if (fs::exists(out)) {
      EXPECT_EQ(without_timing(json::parse(test::read_file(out))), without_timing(reference))
          << "round " << round << ": a result file that is there is whole";
    }
    if (fs::exists(journal)) {
      // Only the last line can be damaged: the append the kill interrupted.
      const auto lines = read_lines(journal);
      for (size_t i = 0; i + 1 < lines.size(); ++i)
        EXPECT_TRUE(parse_journal_line(lines[i]).has_value()) << "round " << round << ", line " << i;
    }
  }
  std::printf("%d of 12 runs killed, %d finished before their kill\n", killed, finished_early);
  std::fflush(stdout);  // before run_cli forks: the child would flush the copy too
  EXPECT_GE(killed, 4) << "most rounds should be interrupted (" << finished_early << " finished)";
  const auto last = test::run_cli(with_components(out));
  ASSERT_FALSE(last.signaled);
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_FALSE(fs::exists(journal));
  EXPECT_FALSE(fs::exists(journal.string() + ".lock"));
  EXPECT_EQ(without_timing(json::parse(test::read_file(out))), without_timing(reference));
}

}  // namespace
}  // namespace kllens
