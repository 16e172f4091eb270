// `kllens quantize`: the command end to end on the demo Mamba model, and its bad-input paths.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "plan/plan_io.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class QuantizeCliTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("quantize-cli"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) { return (dir_ / name).string(); }
  fs::path dir_;
  const std::string model_ = test::repo_path("data/models/demo-mamba");
};

TEST_F(QuantizeCliTest, UniformJson) {
  const auto r = test::run_cli({"quantize", model_, "--uniform", "q8_0", "--out", path("u.gguf"),
                                "--json", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["layout"], "llama.cpp");
  EXPECT_EQ(j["architecture"], "mamba");
  EXPECT_EQ(j["file_bytes"].get<uint64_t>(), fs::file_size(path("u.gguf")));
  gguf::File f(path("u.gguf"));
  EXPECT_EQ(j["tensors"].size(), f.tensors().size());
  for (const auto& t : j["tensors"])
    EXPECT_EQ(t["type"], std::string(gguf::type_name(f.tensor(t["name"]).type)));
  // dt_proj rows (dt_rank elements) cannot be q8_0: one fallback per layer, to f16.
  const int64_t layers = json::parse(test::read_file(model_ + "/config.json"))["num_hidden_layers"];
  int dt = 0;
  for (const auto& fb : j["fallbacks"])
    if (fb["tensor"].get<std::string>().find("ssm_dt.weight") != std::string::npos) {
      EXPECT_EQ(fb["stored"], "f16");
      ++dt;
    }
  EXPECT_EQ(dt, layers);
  EXPECT_EQ(f.tensor("blk.0.ssm_conv1d.weight").type, gguf::GgmlType::kF32);
}

// inspect's sizes are the tensor data `quantize --uniform` writes (int8:g32/int4:g32 have the
// sizes of q8_0/q4_0, the types the file holds them in).
TEST_F(QuantizeCliTest, InspectSizesAreTheUniformFilesTensorBytes) {
  const auto in = test::run_cli({"inspect", model_, "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  const json sizes = json::parse(in.out)["bytes"];
  for (const auto& [key, scheme] : {std::pair{"bf16", "bf16"}, std::pair{"int8_g32", "int8:g32"},
                                    std::pair{"int4_g32", "int4:g32"}}) {
    const auto r = test::run_cli({"quantize", model_, "--uniform", scheme, "--out", path("u.gguf"),
                                  "--json", "--threads", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(sizes[key].get<int64_t>(), json::parse(r.out)["tensor_bytes"].get<int64_t>()) << scheme;
  }
}

// A plan with kllens' refined quantizer: the file holds ggml's type and size for it, other bytes
// than ggml's quantizer gives, and the recipe names the ggml type and says llama-quantize will
// not reproduce those bytes.
TEST_F(QuantizeCliTest, RefinedSchemesAreGgmlTypesWithOtherBytesAndTheRecipeSaysSo) {
  const std::string name = "backbone.layers.0.mixer.in_proj.weight";
  // A recipe needs every tensor llama-quantize quantizes: q8_0, or f16 for rows q8_0 cannot hold.
  const auto in = test::run_cli({"inspect", model_, "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  json components = json::object();
  const json listed = json::parse(in.out);
  for (const auto& c : listed["components"]) {
    if (c["role"] == "conv1d") continue;
    components[c["name"].get<std::string>()] = c["shape"][1].get<int64_t>() % 32 == 0 ? "q8_0" : "f16";
  }
  std::vector<std::vector<uint8_t>> data;
  for (const char* scheme : {"q6_K", "q6_K:refined"}) {
    components[name] = scheme;
    test::write_file(path("plan.json"), json{{"components", components}}.dump());
    const auto r = test::run_cli({"quantize", model_, "--plan", path("plan.json"), "--out", path("r.gguf"),
                                  "--recipe", path("recipe.txt"), "--json", "--threads", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    gguf::File f(path("r.gguf"));
    const auto& t = f.tensor("blk.0.ssm_in.weight");
    EXPECT_EQ(t.type, gguf::GgmlType::kQ6_K) << scheme;
    const auto* bytes = reinterpret_cast<const uint8_t*>(t.data);
    data.emplace_back(bytes, bytes + t.nbytes);
    const std::string recipe = test::read_file(path("recipe.txt"));
    EXPECT_NE(recipe.find("^blk\\.0\\.ssm_in\\.weight$=q6_K"), std::string::npos) << recipe;
    const std::string notes = j["recipe"]["notes"].dump();
    EXPECT_EQ(notes.find("refined") != std::string::npos, std::string(scheme).ends_with(":refined")) << notes;
  }
  ASSERT_EQ(data[0].size(), data[1].size());
  EXPECT_NE(data[0], data[1]);
}

TEST_F(QuantizeCliTest, PlanFilesAndTable) {
  // A plan as `kllens plan` writes it...
  Plan plan;
  plan.method = "greedy";
  plan.metric = "kl";
  plan.components["backbone.layers.0.mixer.in_proj.weight"] = "q4_0";
  plan.components["backbone.layers.1.mixer.out_proj.weight"] = "int4:g32";
  write_plan_json(path("plan.json"), plan);
  auto r = test::run_cli({"quantize", model_, "--plan", path("plan.json"), "--out", path("p.gguf")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("blk.0.ssm_in.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fallback"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote " + path("p.gguf")), std::string::npos) << r.out;
  gguf::File f(path("p.gguf"));
  EXPECT_EQ(f.tensor("blk.0.ssm_in.weight").type, gguf::GgmlType::kQ4_0);
  EXPECT_EQ(f.tensor("blk.1.ssm_out.weight").type, gguf::GgmlType::kQ4_0);
  EXPECT_EQ(f.tensor("blk.1.ssm_in.weight").type, gguf::GgmlType::kBF16);

  // ...and a hand-written one holding only the components.
  test::write_file(path("hand.json"),
                   R"({"components": {"backbone.layers.2.mixer.x_proj.weight": "q8_0"}})");
  r = test::run_cli({"quantize", model_, "--plan", path("hand.json"), "--out", path("h.gguf")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(gguf::File(path("h.gguf")).tensor("blk.2.ssm_x.weight").type, gguf::GgmlType::kQ8_0);
}

TEST_F(QuantizeCliTest, BadInput) {
  test::expect_cli_error(test::run_cli({"quantize", model_, "--out", path("x.gguf")}), 2, "--plan");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--uniform", "q8_0", "--plan", path("p.json"),
                              "--out", path("x.gguf")}),
               2, "excludes");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--uniform", "int9", "--out", path("x.gguf")}),
               2, "int9");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--uniform", "q8_0"}), 2, "--out");
  test::expect_cli_error(test::run_cli({"quantize", path("no-model"), "--uniform", "q8_0", "--out",
                              path("x.gguf")}),
               1, "no-model");
  test::write_file(path("bad.json"),
                   R"({"components": {"backbone.layers.99.mixer.in_proj.weight": "q8_0"}})");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("bad.json"), "--out", path("x.gguf")}),
               1, "layers.99");
  test::write_file(path("bad2.json"), R"({"components": {"lm_head.weight": "int99"}})");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("bad2.json"), "--out", path("x.gguf")}),
               1, "int99");
  test::write_file(path("bad3.json"), "[1, 2");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("bad3.json"), "--out", path("x.gguf")}),
               1, "invalid JSON");
  test::expect_cli_error(test::run_cli({"quantize", model_, "--uniform", "q8_0", "--out",
                              path("missing-dir/x.gguf")}),
               1, "missing-dir");
  EXPECT_FALSE(fs::exists(path("x.gguf")));
  const auto help = test::run_cli({"quantize", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--uniform"), std::string::npos);
}

// The size promise end to end: a sweep over ggml formats with an importance matrix, a plan at
// --max-bytes N, and the file `quantize` writes holds at most N bytes of tensor data (exactly the
// planned bytes), with the recipe for llama-quantize naming every quantized tensor; the plan
// refuses another importance matrix or none.
TEST_F(QuantizeCliTest, MaxBytesPlanWritesAtMostThatManyTensorBytesAndItsRecipe) {
  const std::string calib = path("calib.txt");
  ASSERT_EQ(test::run_cli({"articles", test::repo_path("data/wikitext-2-raw/wiki.test.raw"), "--first", "44",
                           "--last", "44", "--out", calib})
                .exit_code,
            0);
  ASSERT_EQ(test::run_cli({"imatrix", model_, "--calib", calib, "--ctx", "64", "--windows", "2", "--out",
                           path("im.gguf"), "--threads", "1"})
                .exit_code,
            0);
  const auto s = test::run_cli({"sensitivity", model_, "--calib", calib, "--ctx", "64", "--windows", "1",
                                "--schemes", "q4_K,q6_K,q8_0", "--imatrix", path("im.gguf"), "--out",
                                path("sens.json"), "--threads", "1"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const int64_t budget = 2100000;
  const auto p = test::run_cli({"plan", path("sens.json"), "--max-bytes", std::to_string(budget), "--out",
                                path("plan.json")});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const Plan plan = read_plan_json(path("plan.json"));
  EXPECT_LE(plan.bytes, budget);
  const auto q = test::run_cli({"quantize", model_, "--plan", path("plan.json"), "--imatrix", path("im.gguf"),
                                "--recipe", path("recipe.txt"), "--out", path("p.gguf"), "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const json j = json::parse(q.out);
  EXPECT_EQ(j["tensor_bytes"].get<int64_t>(), plan.bytes);
  EXPECT_LE(j["tensor_bytes"].get<int64_t>(), budget);
  int64_t sum = 0;
  for (const auto& t : j["tensors"]) sum += t["bytes"].get<int64_t>();
  EXPECT_EQ(sum, plan.bytes) << "the tensors the file lists";
  const std::string recipe = test::read_file(path("recipe.txt"));
  EXPECT_NE(recipe.find("^blk\\.0\\.ssm_in\\.weight$="), std::string::npos) << recipe;
  EXPECT_EQ(j["recipe"]["llama_cpp_commit"], "3f545becc");
  // The plan was measured with im.gguf: without it, or with another matrix, quantize refuses.
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("plan.json"), "--out", path("x.gguf")}),
                         1, "--imatrix");
  ASSERT_EQ(test::run_cli({"imatrix", model_, "--calib", calib, "--ctx", "64", "--windows", "1", "--out",
                           path("other.gguf"), "--threads", "1"})
                .exit_code,
            0);
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("plan.json"), "--imatrix",
                                        path("other.gguf"), "--out", path("x.gguf")}),
                         1, "not");
  // A recipe for a type the rows cannot hold: one clear error before any work.
  json bad = {{"components", plan.components}};
  bad["components"]["backbone.layers.0.mixer.dt_proj.weight"] = "q4_K";  // rows of 16
  test::write_file(path("bad.json"), bad.dump());
  test::expect_cli_error(test::run_cli({"quantize", model_, "--plan", path("bad.json"), "--recipe",
                                        path("r.txt"), "--out", path("x.gguf")}),
                         1, "dt");
}

}  // namespace
}  // namespace kllens
