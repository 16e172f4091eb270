// eval/imatrix: importance matrices (llama.cpp's imatrix GGUF).
//
// The reference: data/fixtures/llamacpp/demo-mamba{,2}.imatrix.gguf, written by
// `llama-imatrix -m F32.gguf -f calib.txt -c 512` (F32.gguf: kllens' F32 export of the bf16 demo
// model; calib.txt: `kllens articles wiki.test.raw --first 44 --last 52`). The text is 32,526
// tokens, 63 chunks of 512, and llama.cpp ran all 63: its counts are 32,250 = 63 * 512 - 6. With
// its default batch of 2048 tokens it decodes 4 chunks at a time; the last batch holds chunks
// 60..62, which its recurrent-state batch splitter cuts into ubatches of 3 x 170 tokens and a last
// one of 3 x 2, and llama-imatrix ignores matrix products of fewer than 16 rows. So the file lacks
// the last 2 tokens of chunks 60, 61, 62, and its chunk_count (floor(32250 / 512) = 62) is one
// short. kllens counts every row (32,256, chunk_count 63); the comparison below removes those 6
// rows from kllens' sums, after which the counts agree exactly.
//
// Tolerance for the per-column importance in_sum2 / count: the two runs use the same weights
// (llama.cpp's F32 file holds the bf16 values exactly) and kllens' float32 logits equal
// llama.cpp's to 1.2e-5, so each activation agrees to a relative ~1e-6..1e-5 and its square to
// twice that; averaged over 32,250 rows that is far below 1e-4. The larger term is llama.cpp's
// accumulation: it adds the 32,250 squares one by one into a float32 (kllens: double), an error of
// about eps_f32 * sqrt(n) ~ 6e-8 * 180 ~ 1e-5 relative on a typical column and a few times that in
// the tail. Measured worst: 6.1e-5 (demo-mamba, blk.0.ssm_in column 20) and 5.5e-5 (demo-mamba2,
// blk.0.ssm_in column 194); a float32 running sum of kllens' own activations departs from the
// double sum by 6.1e-5 and 5.5e-5 at exactly those columns, so the residual is llama.cpp's
// accumulator. rtol = 2e-4 leaves a 3x margin and is 40x below the 0.85% / 1.6% by which the 6
// missing rows alone move some columns (the comparison without the correction).
#include "eval/imatrix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "eval/text.h"
#include "io/gguf.h"
#include "models/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fixture(const std::string& model) {
  return test::repo_path("data/fixtures/llamacpp/" + model + ".imatrix.gguf");
}

std::string calib_text() {
  return select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44,
                         52);
}

std::vector<std::vector<int32_t>> random_windows(int64_t n, int64_t len, int64_t vocab) {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
  uint32_t x = 12345;
  for (auto& w : out)
    for (int64_t t = 0; t < len; ++t) {
      x = x * 1664525u + 1013904223u;
      w.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab)));
    }
  return out;
}

// Σ x² and rows of the last `tail` rows of every linear() call on a collected matrix.
class TailSums : public LinearObserver {
 public:
  explicit TailSums(int64_t tail) : tail_(tail) {}
  void observe(const Param& w, const float* x, int64_t T, int64_t K) override {
    if (!w.is_component() || w.role == Role::kEmbed) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto& [sum, rows] = sums[w.name];
    sum.resize(static_cast<size_t>(K), 0.0);
    for (int64_t t = std::max<int64_t>(0, T - tail_); t < T; ++t, ++rows)
      for (int64_t c = 0; c < K; ++c) sum[static_cast<size_t>(c)] += double{x[t * K + c]} * x[t * K + c];
  }
  std::map<std::string, std::pair<std::vector<double>, int64_t>> sums;

 private:
  int64_t tail_;
  std::mutex mutex_;
};

void write_imatrix_file(const std::string& path,
                        const std::vector<std::tuple<std::string, std::vector<int64_t>,
                                                     std::vector<float>>>& tensors,
                        bool metadata = true) {
  gguf::Writer w;
  if (metadata) {
    w.set("general.type", "imatrix");
    w.set("imatrix.datasets", std::vector<std::string>{"x.txt"});
    w.set("imatrix.chunk_count", uint32_t{1});
    w.set("imatrix.chunk_size", uint32_t{512});
  }
  for (const auto& [name, ne, values] : tensors) {
    std::vector<uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    w.add_tensor(name, ne, gguf::GgmlType::kF32, bytes);
  }
  w.write(path);
}

// ---------------------------------------------------------------------------------------------

TEST(Imatrix, ReadsLlamaCppFiles) {
  for (const std::string m : {"demo-mamba", "demo-mamba2"}) {
    SCOPED_TRACE(m);
    const bool mamba2 = m == "demo-mamba2";
    auto model = load_model(test::repo_path("data/models/" + m));
    const ImportanceMatrix im = read_imatrix(fixture(m), *model);
    EXPECT_EQ(im.entries.size(), mamba2 ? 8u : 16u);  // ssm_in, ssm_out (+ ssm_x, ssm_dt) x 4
    EXPECT_EQ(im.chunk_count, 62u);
    EXPECT_EQ(im.chunk_size, 512u);
    EXPECT_EQ(im.datasets, std::vector<std::string>{"calib.txt"});
    EXPECT_EQ(im.sha256, sha256_file_hex(fixture(m)));
    EXPECT_EQ(im.sha256.size(), 64u);
    const ImatrixEntry* in0 = im.find("backbone.layers.0.mixer.in_proj.weight");
    ASSERT_NE(in0, nullptr);
    EXPECT_EQ(in0->file_name, "blk.0.ssm_in.weight");
    EXPECT_EQ(in0->cols, 256);
    for (const auto& [hf, e] : im.entries) {
      const Param& p = model->weights().get(hf);
      ASSERT_EQ(e.counts, std::vector<float>{32250.0f}) << hf;
      ASSERT_EQ(e.in_sum2.size(), static_cast<size_t>(p.cols()));
      const float* imp = im.importance(p);
      ASSERT_NE(imp, nullptr);
      for (int64_t c = 0; c < p.cols(); ++c) ASSERT_EQ(imp[c], e.in_sum2[c] / 32250.0f);
    }
    if (!mamba2) {
      EXPECT_EQ(im.find("backbone.layers.3.mixer.dt_proj.weight")->file_name, "blk.3.ssm_dt.weight");
      EXPECT_EQ(in0->in_sum2[0], 31307.40234375f);  // as llama.cpp wrote it
    }
    // Components llama.cpp has no entry for: quantized without an importance vector.
    EXPECT_EQ(im.importance(model->weights().get("backbone.embeddings.weight")), nullptr);
    EXPECT_EQ(im.importance(model->weights().get("backbone.layers.0.mixer.conv1d.weight")), nullptr);
    EXPECT_THROW(im.importance("backbone.layers.0.mixer.in_proj.weight", 512), Error);
  }
}

class ImatrixAgainstLlamaCpp : public ::testing::TestWithParam<std::string> {};

TEST_P(ImatrixAgainstLlamaCpp, SameSumsAndCountsOnTheSameRows) {
  const std::string m = GetParam();
  const std::string folder = test::repo_path("data/models/" + m);
  const fs::path dir = test::fresh_temp_dir("imatrix-llama");
  const std::string calib = (dir / "calib.txt").string();
  test::write_file(calib, calib_text());
  const std::string out = (dir / "out.imatrix.gguf").string();

  const auto t0 = std::chrono::steady_clock::now();
  const auto r = test::run_cli({"imatrix", folder, "--calib", calib, "--ctx", "512", "--out", out,
                                "--json"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  std::printf("[ imatrix ] %s: 63 windows of 512 collected and written in %.1f s (CLI, including "
              "load and tokenization)\n",
              m.c_str(), seconds);
  EXPECT_EQ(j["chunk_count"], 63);
  EXPECT_EQ(j["calibration"]["tokens"], 63 * 512);
  EXPECT_EQ(j["sha256"], sha256_file_hex(out));

  auto model = load_model(folder);
  const ImportanceMatrix ours = read_imatrix(out, *model);
  const ImportanceMatrix theirs = read_imatrix(fixture(m), *model);
  EXPECT_EQ(ours.chunk_count, 63u);
  EXPECT_EQ(ours.chunk_size, 512u);
  EXPECT_EQ(ours.datasets, std::vector<std::string>{calib});

  // The rows llama.cpp skipped: the last 2 tokens of windows 60, 61, 62 (see the top).
  const auto ids = Tokenizer::load(folder + "/tokenizer.json").encode(calib_text());
  ASSERT_EQ(ids.size(), 32526u);
  const auto windows = make_windows(ids, 512);
  ASSERT_EQ(windows.size(), 63u);
  TailSums skipped(2);
  {
    LinearObserverScope scope(skipped);
    for (size_t w = 60; w < 63; ++w) {
      auto state = model->start(windows[w]);
      for (int l = 0; l < model->info().n_layers; ++l) model->run_layer(l, *state);
    }
  }

  ASSERT_EQ(ours.entries.size(), theirs.entries.size());
  double worst = 0;
  std::string worst_at;
  for (const auto& [hf, t] : theirs.entries) {
    const ImatrixEntry* o = ours.find(hf);
    ASSERT_NE(o, nullptr) << hf;
    EXPECT_EQ(o->file_name, t.file_name);
    ASSERT_EQ(o->counts, std::vector<float>{32256.0f}) << hf;
    const auto& [tail, tail_rows] = skipped.sums.at(hf);
    ASSERT_EQ(tail_rows, 6) << hf;
    EXPECT_EQ(o->counts[0] - static_cast<float>(tail_rows), t.counts[0]) << hf;  // 32250 exactly
    for (int64_t c = 0; c < t.cols; ++c) {
      const double mine = (double{o->in_sum2[c]} - tail[c]) / t.counts[0];
      const double ref = t.importance[c];
      const double rel = std::fabs(mine - ref) / ref;
      if (rel > worst) {
        worst = rel;
        worst_at = fmt::format("{} column {} ({} vs {})", t.file_name, c, mine, ref);
      }
      ASSERT_LE(rel, 2e-4) << t.file_name << " column " << c << ": " << mine << " vs " << ref;
    }
  }
  std::printf("[ imatrix ] %s: worst relative difference of in_sum2/counts from llama.cpp's: "
              "%.2e at %s\n",
              m.c_str(), worst, worst_at.c_str());
}

INSTANTIATE_TEST_SUITE_P(DemoModels, ImatrixAgainstLlamaCpp,
                         ::testing::Values("demo-mamba", "demo-mamba2"), [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Collection on every family (llama.cpp names where it has a layout), the untied head, tied
// heads, Hymba's prefix rows, Jamba's experts; every file written reads back bit for bit.
TEST(Imatrix, CollectsEveryMatrixAndRoundTrips) {
  struct Case {
    std::string folder;
    bool llama_names;
  };
  const std::vector<Case> cases = {{"data/fixtures/oracles/mamba", true},
                                   {"data/fixtures/oracles/mamba-tied-bias", false},
                                   {"data/fixtures/oracles/mamba2", true},
                                   {"data/fixtures/oracles/jamba", true},
                                   {"data/fixtures/oracles/llama", true},
                                   {"data/fixtures/oracles/falcon_h1", false},  // mamba_norm_before_gate: no llama.cpp layout
                                   {"data/models/demo-hymba", false}};
  const fs::path dir = test::fresh_temp_dir("imatrix-roundtrip");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.folder);
    auto model = load_model(test::repo_path(c.folder));
    const int64_t T = 24, W = 2;
    const auto windows = random_windows(W, T, model->info().vocab);
    ImportanceMatrix im = collect_imatrix(*model, windows, "random", false);
    EXPECT_EQ(im.chunk_count, 2u);
    EXPECT_EQ(im.chunk_size, 24u);
    EXPECT_TRUE(im.sha256.empty());
    const int64_t rows = W * (T + model->info().n_prefix_tokens);
    int64_t expert_rows = 0, experts = 0;
    for (const Param* p : model->weights().components()) {
      const ImatrixEntry* e = im.find(p->name);
      const bool matrix = packable_role(p->role) && p->role != Role::kEmbed;
      ASSERT_EQ(e != nullptr, matrix) << p->name;
      if (!e) continue;
      EXPECT_EQ(e->cols, p->cols());
      EXPECT_EQ(e->file_name, imatrix_tensor_name(*model, p->name));
      EXPECT_EQ(e->file_name != p->name, c.llama_names) << e->file_name;
      if (p->name.find(".experts.") != std::string::npos) {
        ++experts;
        expert_rows += static_cast<int64_t>(e->counts[0]);
        if (e->counts[0] == 0) {
          for (float v : e->importance) EXPECT_EQ(v, 1.0f);  // llama-quantize's rule
        }
        continue;
      }
      // Hymba's meta tokens are rows its layers multiply; the head sees only the sequence rows.
      const int64_t want = p->role == Role::kHead ? W * T : rows;
      EXPECT_EQ(e->counts, std::vector<float>{static_cast<float>(want)}) << p->name;
      double total = 0;
      for (float v : e->in_sum2) total += v;
      EXPECT_GT(total, 0) << p->name;
    }
    if (experts) {
      // Every token goes to num_experts_per_tok of the num_experts experts of each MoE layer, and
      // each of its gate, up and down projections multiplies it once.
      const json config = json::parse(test::read_file(test::repo_path(c.folder) + "/config.json"));
      const int64_t n_experts = config["num_experts"], top_k = config["num_experts_per_tok"];
      const int64_t moe_layers = experts / (n_experts * 3);
      EXPECT_GT(moe_layers, 0);
      EXPECT_EQ(experts, moe_layers * n_experts * 3);
      EXPECT_EQ(expert_rows, moe_layers * rows * top_k * 3);
    }
    if (c.folder.ends_with("oracles/mamba")) {
      EXPECT_EQ(im.find("lm_head.weight")->file_name, "output.weight");
    }

    const std::string path = (dir / (fs::path(c.folder).filename().string() + ".gguf")).string();
    write_imatrix(im, *model, path);
    EXPECT_EQ(im.sha256, sha256_file_hex(path));
    const ImportanceMatrix back = read_imatrix(path, *model);
    EXPECT_EQ(back.sha256, im.sha256);
    EXPECT_EQ(back.datasets, im.datasets);
    EXPECT_EQ(back.chunk_count, im.chunk_count);
    EXPECT_EQ(back.chunk_size, im.chunk_size);
    ASSERT_EQ(back.entries.size(), im.entries.size());
    for (const auto& [hf, e] : im.entries) {
      const ImatrixEntry& b = back.entries.at(hf);
      EXPECT_EQ(b.file_name, e.file_name);
      EXPECT_EQ(b.cols, e.cols);
      EXPECT_EQ(b.in_sum2, e.in_sum2) << hf;
      EXPECT_EQ(b.counts, e.counts) << hf;
      EXPECT_EQ(b.importance, e.importance) << hf;
    }
    // Deterministic: the same matrix writes the same bytes.
    const std::string again = path + ".again.gguf";
    ImportanceMatrix copy = back;
    write_imatrix(copy, *model, again);
    EXPECT_EQ(test::read_file(again), test::read_file(path));
  }
}

TEST(Imatrix, ObserverScopesNestAndEndWithTheScope) {
  auto model = load_model(test::repo_path("data/fixtures/oracles/mamba"));
  const auto w = random_windows(1, 8, model->info().vocab)[0];
  TailSums outer(1), inner(1);
  {
    LinearObserverScope a(outer);
    model->forward(w);
    {
      LinearObserverScope b(inner);
      model->forward(w);
    }
    model->forward(w);
  }
  model->forward(w);
  const std::string in0 = "backbone.layers.0.mixer.in_proj.weight";
  EXPECT_EQ(outer.sums.at(in0).second, 2);
  EXPECT_EQ(inner.sums.at(in0).second, 1);
}

TEST(Imatrix, BadFilesGiveOneClearError) {
  auto mamba = load_model(test::repo_path("data/models/demo-mamba"));
  auto mamba2 = load_model(test::repo_path("data/models/demo-mamba2"));
  auto hymba = load_model(test::repo_path("data/models/demo-hymba"));
  const fs::path dir = test::fresh_temp_dir("imatrix-bad");
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  auto contains = [](const std::string& text, std::initializer_list<std::string> parts) {
    for (const auto& p : parts)
      if (text.find(p) == std::string::npos) return false;
    return true;
  };

  // Another model's imatrix: Mamba-1's ssm_x / ssm_dt are not Mamba-2 matrices; llama.cpp names
  // are not Hymba's.
  std::string e = error_of([&] { read_imatrix(fixture("demo-mamba"), *mamba2); });
  EXPECT_TRUE(contains(e, {"demo-mamba.imatrix.gguf", "'blk.0.ssm_dt.weight'", "another model"})) << e;
  e = error_of([&] { read_imatrix(fixture("demo-mamba"), *hymba); });
  EXPECT_TRUE(contains(e, {"'blk.0.ssm_dt.weight'", "hymba"})) << e;

  // Wrong column count: the tensor and both sizes.
  const std::string wrong = (dir / "wrong-cols.gguf").string();
  write_imatrix_file(wrong, {{"blk.0.ssm_in.weight.in_sum2", {300}, std::vector<float>(300, 1.0f)},
                             {"blk.0.ssm_in.weight.counts", {1}, {512.0f}}});
  e = error_of([&] { read_imatrix(wrong, *mamba); });
  EXPECT_TRUE(contains(e, {"'blk.0.ssm_in.weight'", "300 columns",
                           "backbone.layers.0.mixer.in_proj.weight", "has 256"}))
      << e;

  // Truncated: io/gguf reports it.
  const std::string whole = test::read_file(fixture("demo-mamba"));
  const std::string cut = (dir / "cut.gguf").string();
  test::write_file(cut, whole.substr(0, whole.size() / 2));
  e = error_of([&] { read_imatrix(cut, *mamba); });
  EXPECT_TRUE(contains(e, {"cut.gguf", "past the end"})) << e;

  // Lying or incomplete files.
  struct Bad {
    std::string what;
    std::vector<std::tuple<std::string, std::vector<int64_t>, std::vector<float>>> tensors;
    std::string part;
  };
  const std::vector<float> sums(256, 2.0f);
  const std::vector<Bad> bad = {
      {"sums without counts", {{"blk.0.ssm_in.weight.in_sum2", {256}, sums}}, "but no .counts"},
      {"counts without sums", {{"blk.0.ssm_in.weight.counts", {1}, {1.0f}}}, "but no .in_sum2"},
      {"two counts for one matrix",
       {{"blk.0.ssm_in.weight.in_sum2", {256}, sums}, {"blk.0.ssm_in.weight.counts", {2}, {1.0f, 1.0f}}},
       "holds 2 values"},
      {"merged experts for a plain matrix",
       {{"blk.0.ssm_in.weight.in_sum2", {128, 2}, sums}, {"blk.0.ssm_in.weight.counts", {1, 2}, {1.0f, 1.0f}}},
       "holds 2 matrices of 128 columns, but this model's backbone.layers.0.mixer.in_proj.weight is one"},
      {"negative sum",
       {{"blk.0.ssm_in.weight.in_sum2", {256}, std::vector<float>(256, -1.0f)},
        {"blk.0.ssm_in.weight.counts", {1}, {1.0f}}},
       "non-negative"},
      {"NaN count",
       {{"blk.0.ssm_in.weight.in_sum2", {256}, sums}, {"blk.0.ssm_in.weight.counts", {1}, {NAN}}},
       "finite"},
      {"a tensor that is no imatrix part", {{"blk.0.ssm_in.weight", {256}, sums}}, "not an importance matrix part"},
      {"no entries", {}, "no entries"},
  };
  for (const Bad& b : bad) {
    const std::string path = (dir / "bad.gguf").string();
    write_imatrix_file(path, b.tensors);
    e = error_of([&] { read_imatrix(path, *mamba); });
    EXPECT_TRUE(contains(e, {"bad.gguf", b.part})) << b.what << ": " << e;
  }
  const std::string no_meta = (dir / "no-meta.gguf").string();
  write_imatrix_file(no_meta, {{"blk.0.ssm_in.weight.in_sum2", {256}, sums},
                               {"blk.0.ssm_in.weight.counts", {1}, {1.0f}}},
                     false);
  e = error_of([&] { read_imatrix(no_meta, *mamba); });
  EXPECT_TRUE(contains(e, {"no-meta.gguf", "general.type"})) << e;
  // A dataset name that is not UTF-8 (found by fuzz/imatrix_fuzz: imatrix_description(...).dump()
  // threw nlohmann's type_error 316).
  {
    gguf::Writer w;
    w.set("general.type", "imatrix");
    w.set("imatrix.datasets", std::vector<std::string>{"ok.txt", "caf\xE9.txt"});
    w.set("imatrix.chunk_count", uint32_t{1});
    w.set("imatrix.chunk_size", uint32_t{512});
    std::vector<uint8_t> sum_bytes(256 * 4), count_bytes(4);
    std::memcpy(sum_bytes.data(), sums.data(), sum_bytes.size());
    const float one = 1.0f;
    std::memcpy(count_bytes.data(), &one, 4);
    w.add_tensor("blk.0.ssm_in.weight.in_sum2", {256}, gguf::GgmlType::kF32, sum_bytes);
    w.add_tensor("blk.0.ssm_in.weight.counts", {1}, gguf::GgmlType::kF32, count_bytes);
    const std::string latin1 = (dir / "latin1.gguf").string();
    w.write(latin1);
    e = error_of([&] { read_imatrix(latin1, *mamba); });
    EXPECT_TRUE(contains(e, {"latin1.gguf", "imatrix.datasets entry 1", "UTF-8"})) << e;
  }
  // A model file is not an importance matrix.
  e = error_of([&] {
    read_imatrix(test::repo_path("data/fixtures/llamacpp/demo-mamba.Q4_K_M.imatrix.gguf"), *mamba);
  });
  EXPECT_TRUE(contains(e, {"not an importance matrix"})) << e;

  // Writing refuses entries the model does not have.
  ImportanceMatrix im = read_imatrix(fixture("demo-mamba"), *mamba);
  e = error_of([&] { write_imatrix(im, *mamba2, (dir / "x.gguf").string()); });
  EXPECT_TRUE(contains(e, {"backbone.layers.0.mixer.dt_proj.weight", "not a matrix of this model"})) << e;
}

// ---------------------------------------------------------------------------------------------
// The command line.

TEST(ImatrixCli, ShowsAFileThatFitsAndRefusesOneThatDoesNot) {
  const std::string mamba = test::repo_path("data/models/demo-mamba");
  const std::string mamba2 = test::repo_path("data/models/demo-mamba2");
  auto r = test::run_cli({"imatrix", mamba, "--show", fixture("demo-mamba"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["entries"], 16);
  EXPECT_EQ(j["chunk_count"], 62);
  EXPECT_EQ(j["sha256"], sha256_file_hex(fixture("demo-mamba")));
  EXPECT_EQ(j["tensors"][0]["name"], "blk.0.ssm_dt.weight");
  EXPECT_EQ(j["tensors"][0]["hf_name"], "backbone.layers.0.mixer.dt_proj.weight");

  r = test::run_cli({"imatrix", mamba2, "--show", fixture("demo-mamba")});
  test::expect_cli_error(r, 1, "'blk.0.ssm_dt.weight' is not a matrix of this model");

  const fs::path dir = test::fresh_temp_dir("imatrix-cli");
  const std::string whole = test::read_file(fixture("demo-mamba2"));
  const std::string cut = (dir / "cut.gguf").string();
  test::write_file(cut, whole.substr(0, whole.size() - 100));
  r = test::run_cli({"imatrix", mamba2, "--show", cut});
  test::expect_cli_error(r, 1, "cut.gguf");

  const std::string wrong = (dir / "wrong.gguf").string();
  write_imatrix_file(wrong, {{"blk.1.ssm_out.weight.in_sum2", {256}, std::vector<float>(256, 1.0f)},
                             {"blk.1.ssm_out.weight.counts", {1}, {512.0f}}});
  r = test::run_cli({"imatrix", mamba2, "--show", wrong});
  test::expect_cli_error(r, 1, "'blk.1.ssm_out.weight' has 256 columns");
}

TEST(ImatrixCli, UsageAndInputErrors) {
  const std::string mamba = test::repo_path("data/models/demo-mamba");
  const fs::path dir = test::fresh_temp_dir("imatrix-cli-usage");
  const std::string text = (dir / "t.txt").string();
  test::write_file(text, select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44));
  const std::string out = (dir / "o.gguf").string();

  auto r = test::run_cli({"imatrix", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--calib"), std::string::npos);
  EXPECT_NE(r.out.find("--show"), std::string::npos);

  test::expect_cli_error(test::run_cli({"imatrix", mamba, "--calib", text, "--out", out, "--bogus"}), 2,
                         "--bogus");
  test::expect_cli_error(test::run_cli({"imatrix", mamba, "--calib", text}), 2, "--out");
  test::expect_cli_error(
      test::run_cli({"imatrix", mamba, "--show", fixture("demo-mamba"), "--calib", text}), 2,
      "excludes");
  // A GGUF model is refused: the importance matrix is collected on the float model.
  test::expect_cli_error(
      test::run_cli({"imatrix", (dir / "m.gguf").string(), "--calib", text, "--out", out}), 1,
      "Hugging Face folder");
  // A text shorter than one window.
  test::expect_cli_error(
      test::run_cli({"imatrix", mamba, "--calib", text, "--ctx", "100000", "--out", out}), 1,
      "fewer than one window");
  EXPECT_FALSE(fs::exists(out));

  // A small run: the file is written, fits the model and says what it was made from.
  r = test::run_cli({"imatrix", mamba, "--calib", text, "--ctx", "64", "--windows", "3", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("16 matrices over 3 windows of 64 tokens"), std::string::npos) << r.out;
  auto model = load_model(mamba);
  const ImportanceMatrix im = read_imatrix(out, *model);
  EXPECT_EQ(im.chunk_count, 3u);
  EXPECT_EQ(im.chunk_size, 64u);
  EXPECT_EQ(im.datasets, std::vector<std::string>{text});
  for (const auto& [hf, e] : im.entries) EXPECT_EQ(e.counts, std::vector<float>{192.0f}) << hf;
}

}  // namespace
}  // namespace kllens
