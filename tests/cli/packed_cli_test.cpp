// A quantized GGUF file through every command that takes MODEL (ppl, eval --reference, bench,
// inspect, forward), `bench --uniform`, `deploy-table`, and the clear errors of commands that
// need the float model.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/text.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class PackedCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_temp_dir("packed-cli");
    text_ = (dir_ / "text.txt").string();
    test::write_file(text_, select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 45));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) { return (dir_ / name).string(); }
  std::string quantized(const std::string& scheme) {
    const std::string out = path(scheme + ".gguf");
    const auto r = test::run_cli({"quantize", model_, "--uniform", scheme, "--out", out, "--threads", "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }
  fs::path dir_;
  std::string text_;
  const std::string model_ = test::repo_path("data/models/demo-mamba");
};

TEST_F(PackedCli, PplOfTheFileEqualsFakeQuantEvalAndEvalComparesWithTheReference) {
  const std::string file = quantized("q4_0");
  const auto ppl = test::run_cli({"ppl", file, "--text", text_, "--ctx", "256", "--windows", "3", "--json", "--threads", "2"});
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const auto fq = test::run_cli({"eval", model_, "--uniform", "q4_0", "--text", text_, "--ctx", "256", "--windows", "3", "--json", "--threads", "2"});
  ASSERT_EQ(fq.exit_code, 0) << fq.err;
  const double file_ppl = json::parse(ppl.out)["ppl"];
  const double fq_ppl = json::parse(fq.out)["ppl"];
  EXPECT_NEAR(file_ppl / fq_ppl, 1.0, 0.005) << file_ppl << " vs " << fq_ppl;

  const auto ev = test::run_cli({"eval", file, "--reference", model_, "--text", text_, "--ctx", "256", "--windows", "3", "--json", "--threads", "2"});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  const json j = json::parse(ev.out);
  EXPECT_DOUBLE_EQ(j["ppl"].get<double>(), file_ppl);  // same windows, same accumulation
  EXPECT_NEAR(j["ppl_fp"].get<double>() / json::parse(fq.out)["ppl_fp"].get<double>(), 1.0, 1e-9);
  EXPECT_GT(j["kl"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(j["bytes"].get<int64_t>(), static_cast<int64_t>(fs::file_size(file)));
}

TEST_F(PackedCli, BenchReportsPackedBytesAndBandwidthArithmetic) {
  const std::string file = quantized("q8_0");
  const auto r = test::run_cli({"bench", file, "--prompt", "16", "--gen", "4", "--runs", "1", "--json", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  const auto f = test::run_cli({"bench", model_, "--prompt", "16", "--gen", "4", "--runs", "1", "--json",
                                "--threads", "1", "--no-bandwidth"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const json jf = json::parse(f.out);
  // q8_0 is 8.5 bits against float32's 32 for the matrices.
  EXPECT_LT(j["weight_bytes_in_memory"].get<double>(), 0.4 * jf["weight_bytes_in_memory"].get<double>());
  EXPECT_GT(j["decode_tps"]["median"].get<double>(), 0.0);
  EXPECT_GT(j["read_bandwidth_gbs"].get<double>(), 0.0);
  EXPECT_NEAR(j["decode_ceiling_tps"].get<double>(),
              j["read_bandwidth_gbs"].get<double>() * 1e9 / j["decode_bytes_per_token"].get<double>(), 1e-6);
  EXPECT_TRUE(jf["read_bandwidth_gbs"].is_null());

  const auto u = test::run_cli({"bench", model_, "--uniform", "q8_0", "--prompt", "16", "--gen", "4", "--runs", "1",
                                "--json", "--threads", "1", "--no-bandwidth"});
  ASSERT_EQ(u.exit_code, 0) << u.err;
  // Packed in memory as the file loads: the same weight bytes, except dt_proj which the file
  // stores f16 (rows of 16) and the in-memory packing keeps float32 (q8_0 cannot hold them).
  EXPECT_NEAR(json::parse(u.out)["weight_bytes_in_memory"].get<double>() / j["weight_bytes_in_memory"].get<double>(), 1.0, 0.05);
}

TEST_F(PackedCli, InspectAndForwardTakeTheFile) {
  const std::string file = quantized("q4_0");
  const auto i = test::run_cli({"inspect", file, "--json"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  int q4 = 0;
  const json inspected = json::parse(i.out);
  // Q4_0 tensors are held in the equivalent int4:g32 layout.
  for (const auto& c : inspected["components"]) q4 += c["stored"].get<std::string>() == "int4:g32:sym:s16";
  EXPECT_GT(q4, 0);
  // tokenize with the tokenizer.json the file carries (the same ids as the folder's), then
  // generate from the file.
  test::write_file(path("prompt.txt"), "The tower is");
  const auto t = test::run_cli({"tokenize", file, "--text", path("prompt.txt"), "--out", path("ids.safetensors")});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const auto tf = test::run_cli({"tokenize", model_, "--text", path("prompt.txt"), "--out", path("ids2.safetensors")});
  ASSERT_EQ(tf.exit_code, 0) << tf.err;
  EXPECT_EQ(test::read_file(path("ids.safetensors")), test::read_file(path("ids2.safetensors")));
  const auto g = test::run_cli({"generate", file, "--ids", path("ids.safetensors"), "--tensor", "ids", "--max-new", "3", "--json", "--threads", "1"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const auto gf = test::run_cli({"generate", model_, "--ids", path("ids.safetensors"), "--tensor", "ids", "--max-new", "3", "--json", "--threads", "1"});
  ASSERT_EQ(gf.exit_code, 0) << gf.err;
  EXPECT_EQ(json::parse(g.out)["sequences"][0].size(), json::parse(gf.out)["sequences"][0].size());
}

TEST_F(PackedCli, CommandsThatQuantizeRefuseTheFileClearly) {
  const std::string file = quantized("q4_0");
  test::expect_cli_error(test::run_cli({"sensitivity", file, "--calib", text_, "--out", path("s.json")}), 1, "float model");
  test::expect_cli_error(test::run_cli({"eval", file, "--text", text_}), 2, "--reference");
  test::expect_cli_error(test::run_cli({"eval", file, "--uniform", "q8_0", "--reference", model_, "--text", text_}), 2, "already quantized");
  test::expect_cli_error(test::run_cli({"eval", model_, "--reference", model_, "--text", text_}), 2, "only with a GGUF");
  test::expect_cli_error(test::run_cli({"bench", file, "--uniform", "q8_0"}), 2, "already packed");
  test::expect_cli_error(test::run_cli({"quantize", file, "--uniform", "q8_0", "--out", path("x.gguf")}), 1, "already a GGUF");
  test::expect_cli_error(test::run_cli({"deploy-table", file, "--sens", path("none.json"), "--text", text_}), 2, "folder");
}

TEST_F(PackedCli, DeployTableRowsAreMeasuredAndOrdered) {
  const std::string sens = path("sens.json");
  const auto s = test::run_cli({"sensitivity", model_, "--calib", text_, "--ctx", "128", "--windows", "2",
                                "--schemes", "int4:g32,int8:g32", "--out", sens, "--threads", "2"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const auto r = test::run_cli({"deploy-table", model_, "--sens", sens, "--text", text_, "--budgets", "6.5,5.6",
                                "--ctx", "128", "--windows", "2", "--prompt", "16", "--gen", "4", "--runs", "1",
                                "--json", "--threads", "2", "--out", path("table.md"), "--mixes", "Q4_K_M"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 8u);
  auto row = [&](int i) { return j["rows"][static_cast<size_t>(i)]; };
  EXPECT_EQ(row(0)["label"], "bf16");
  // Sizes: bf16 > int8 per-row > int4 g32 > int4 per-row; the plans are within their budgets (GGUF tensor data: F32 norms and conv1d).
  EXPECT_GT(row(0)["bytes"].get<int64_t>(), row(1)["bytes"].get<int64_t>());
  EXPECT_GT(row(1)["bytes"].get<int64_t>(), row(3)["bytes"].get<int64_t>());
  EXPECT_GT(row(3)["bytes"].get<int64_t>(), row(2)["bytes"].get<int64_t>());
  EXPECT_LE(row(4)["bits_per_weight"].get<double>(), 6.5 + 1e-9);
  EXPECT_LE(row(5)["bits_per_weight"].get<double>(), 5.6 + 1e-9);
  // llama.cpp's Q4_K_M for this model, then the KL plan at exactly its bytes.
  EXPECT_EQ(row(6)["label"], "llama.cpp Q4_K_M");
  EXPECT_EQ(row(7)["label"], "KL-optimal plan at the Q4_K_M bytes");
  EXPECT_LE(row(7)["bytes"].get<int64_t>(), row(6)["bytes"].get<int64_t>());
  // Damage grows as bits shrink: int8 below int4; every row was timed.
  EXPECT_LT(row(1)["kl"]["mean"].get<double>(), row(3)["kl"]["mean"].get<double>());
  for (const auto& x : j["rows"]) {
    EXPECT_GT(x["decode_tps"].get<double>(), 0.0);
    EXPECT_GT(x["prefill_tps"].get<double>(), 0.0);
    EXPECT_GT(x["ppl"].get<double>(), 1.0);
  }
  EXPECT_NE(test::read_file(path("table.md")).find("| bf16 |"), std::string::npos);
}

}  // namespace
}  // namespace kllens
