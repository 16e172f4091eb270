// The CLI on valid input, checked against references computed elsewhere: the oracle fixtures'
// logits and greedy ids come from Hugging Face transformers, component shapes from the
// fixture's reference.json, token ids from the library's Tokenizer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_cli;

const std::string kMamba = "data/fixtures/oracles/mamba";

std::string describe(const test::CliResult& r) {
  return "exit " + std::to_string(r.exit_code) + (r.signaled ? " (signal)" : "") + "\nstderr: " + r.err;
}

class CliEndToEnd : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("cli_e2e"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `forward` and returns its logits tensor (shape, values).
  std::pair<std::vector<int64_t>, std::vector<float>> forward(const std::string& model,
                                                               std::vector<std::string> extra) {
    const std::string out = (dir_ / ("logits" + std::to_string(runs_++) + ".safetensors")).string();
    std::vector<std::string> args = {"forward", model, "--out", out, "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_cli(args);
    EXPECT_FALSE(r.signaled);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    if (r.exit_code != 0) return {};
    SafetensorsFile f(out);
    EXPECT_EQ(f.tensors().size(), 1u);
    const auto& logits = f.get("logits");
    EXPECT_EQ(logits.dtype, DType::kF32);
    return {logits.shape, logits.to_f32()};
  }

  fs::path dir_;
  int runs_ = 0;
};

void expect_close(const std::vector<float>& got, const float* want, size_t n, float tol) {
  ASSERT_EQ(got.size(), n);
  float worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = std::fabs(got[i] - want[i]);
    if (!(d <= worst)) {  // also catches NaN
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << "largest difference at element " << at << ": " << got[at] << " vs " << want[at];
}

TEST_F(CliEndToEnd, ForwardMatchesTransformersLogits) {
  const std::string model = test::repo_path(kMamba);
  const std::string ref_path = model + "/reference.safetensors";
  SafetensorsFile ref(ref_path);
  const auto& ref_logits = ref.get("logits");
  const auto want = ref_logits.to_f32();
  ASSERT_EQ(ref_logits.shape.size(), 3u);

  for (const bool decode : {false, true}) {
    SCOPED_TRACE(decode ? "decode" : "prefill");
    std::vector<std::string> extra = {"--ids", ref_path, "--tensor", "input_ids"};
    if (decode) extra.push_back("--decode");
    const auto [shape, got] = forward(model, extra);
    EXPECT_EQ(shape, ref_logits.shape);
    expect_close(got, want.data(), want.size(), 1e-4f);
  }

  // The same ids as a one-dimensional int32 tensor in a file of our own (default tensor name).
  const auto ids = read_int_tensor(ref.get("input_ids"));
  const int64_t T = ref.get("input_ids").shape[1], V = ref_logits.shape[2];
  std::vector<int32_t> row1(ids.begin() + T, ids.begin() + 2 * T);
  const std::string ids_path = (dir_ / "ids.safetensors").string();
  write_safetensors(ids_path, {{"input_ids", make_i32_tensor({T}, row1)}});
  const auto [shape, got] = forward(model, {"--ids", ids_path});
  EXPECT_EQ(shape, (std::vector<int64_t>{1, T, V}));
  expect_close(got, want.data() + T * V, static_cast<size_t>(T * V), 1e-4f);
}

TEST_F(CliEndToEnd, ForwardReadsAShardedCopy) {
  // model.safetensors split into two shards plus model.safetensors.index.json.
  const std::string src = test::repo_path(kMamba);
  const fs::path model = dir_ / "sharded";
  fs::create_directories(model);
  fs::copy_file(src + "/config.json", model / "config.json");
  SafetensorsFile whole(src + "/model.safetensors");
  std::map<std::string, OwnedTensor> shard[2];
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  int i = 0;
  for (const auto& [name, view] : whole.tensors()) {
    const int s = i++ % 2;
    OwnedTensor t;
    t.dtype = view.dtype;
    t.shape = view.shape;
    t.bytes.assign(view.data, view.data + view.nbytes);
    shard[s][name] = std::move(t);
    const std::string file = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
    index["weight_map"][name] = file;
  }
  write_safetensors((model / "model-00001-of-00002.safetensors").string(), shard[0]);
  write_safetensors((model / "model-00002-of-00002.safetensors").string(), shard[1]);
  test::write_file(model / "model.safetensors.index.json", index.dump(2));

  SafetensorsFile ref(src + "/reference.safetensors");
  const auto want = ref.get("logits").to_f32();
  const auto [shape, got] = forward(model.string(), {"--ids", src + "/reference.safetensors"});
  EXPECT_EQ(shape, ref.get("logits").shape);
  expect_close(got, want.data(), want.size(), 1e-4f);
}

TEST_F(CliEndToEnd, GeneratePrintsTheGreedyContinuation) {
  const std::string model = test::repo_path(kMamba);
  const std::string ref_path = model + "/reference.safetensors";
  SafetensorsFile ref(ref_path);
  const auto prompt = read_int_tensor(ref.get("greedy_prompt"));
  const auto expected = read_int_tensor(ref.get("greedy_output"));
  const auto max_new = std::to_string(expected.size() - prompt.size());

  const auto r = run_cli({"generate", model, "--ids", ref_path, "--tensor", "greedy_prompt",
                          "--max-new", max_new, "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::istringstream in(r.out);
  std::vector<int64_t> printed;
  for (int64_t v; in >> v;) printed.push_back(v);
  EXPECT_EQ(printed, expected) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);

  const auto j = run_cli({"generate", model, "--ids", ref_path, "--tensor", "greedy_prompt",
                          "--max-new", max_new, "--json"});
  ASSERT_EQ(j.exit_code, 0) << describe(j);
  const auto parsed = json::parse(j.out);
  ASSERT_EQ(parsed["sequences"].size(), 1u);
  EXPECT_EQ(parsed["sequences"][0].get<std::vector<int64_t>>(), expected);
}

TEST_F(CliEndToEnd, TokenizeMatchesTheLibrary) {
  const std::string tok_path = test::repo_path("data/models/demo-mamba/tokenizer.json");
  const std::string text = "The tower is 324 metres (1,063 ft) tall, about the same height as an "
                           "81-storey building.\n\n = Gameplay = \n\nnaïve café — ok?  ";
  const auto text_path = dir_ / "small.txt";
  test::write_file(text_path, text);
  const auto tok = Tokenizer::load(tok_path);
  for (const bool special : {false, true}) {
    SCOPED_TRACE(special ? "with special tokens" : "plain");
    const std::string out = (dir_ / (special ? "ids_s.safetensors" : "ids.safetensors")).string();
    std::vector<std::string> args = {"tokenize", tok_path, "--text", text_path.string(), "--out", out};
    if (special) args.push_back("--add-special-tokens");
    const auto r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    SafetensorsFile f(out);
    const auto& ids = f.get("ids");
    EXPECT_EQ(ids.dtype, DType::kI32);
    const auto want = tok.encode(text, special);
    ASSERT_GT(want.size(), 10u);
    EXPECT_EQ(ids.shape, (std::vector<int64_t>{static_cast<int64_t>(want.size())}));
    EXPECT_EQ(read_int_tensor(ids), std::vector<int64_t>(want.begin(), want.end()));
    EXPECT_EQ(tok.decode(want), text);  // byte-level BPE is lossless
  }
}

TEST_F(CliEndToEnd, InspectJsonListsEveryComponent) {
  const std::string folder = test::repo_path(kMamba);
  const auto r = run_cli({"inspect", folder, "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["arch"], "mamba");

  // Independent reference: the component shapes HF reported when the fixture was made.
  const json ref = json::parse(test::read_file(folder + "/reference.json"));
  const auto& comps = j["components"];
  ASSERT_EQ(comps.size(), ref["components"].size());
  int64_t sum = 0;
  for (const auto& c : comps) {
    const std::string name = c["name"];
    ASSERT_TRUE(ref["components"].contains(name)) << name;
    const auto shape = c["shape"].get<std::vector<int64_t>>();
    EXPECT_EQ(shape, ref["components"][name].get<std::vector<int64_t>>()) << name;
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    EXPECT_EQ(c["params"].get<int64_t>(), numel) << name;
    EXPECT_FALSE(c["role"].get<std::string>().empty());
    sum += c["params"].get<int64_t>();
  }
  EXPECT_EQ(j["component_params"].get<int64_t>(), sum);
  EXPECT_EQ(j["params"].get<int64_t>(), ref["params"].get<int64_t>());
  EXPECT_LE(sum, j["params"].get<int64_t>());

  // And the library agrees.
  const auto model = load_model(folder);
  int64_t lib_sum = 0;
  for (const auto* p : model->weights().components()) lib_sum += p->numel();
  EXPECT_EQ(lib_sum, sum);
  EXPECT_EQ(j["layers"].get<int64_t>(), model->info().n_layers);
  EXPECT_EQ(j["vocab"].get<int64_t>(), model->info().vocab);

  // The readable table runs too and mentions every component.
  const auto table = run_cli({"inspect", folder});
  ASSERT_EQ(table.exit_code, 0) << describe(table);
  for (const auto& c : comps) EXPECT_NE(table.out.find(c["name"].get<std::string>()), std::string::npos);
}

}  // namespace
}  // namespace kllens
