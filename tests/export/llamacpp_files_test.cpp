// GGUF files written by llama.cpp itself (llama-quantize --imatrix ... Q4_K_M of kllens' F32
// export of the demo Mamba / Mamba-2, data/fixtures/llamacpp) load in every command: the config is
// rebuilt from llama.cpp's keys and the tensor shapes, the tokenizer from tokenizer.ggml.*, and a
// missing key or a value the shapes contradict is one clear error.
//
// The fixtures still carry the kllens.* keys of the file they were made from (llama-quantize
// copies every key), so the tests also write copies without any kllens.* key: exactly what
// llama.cpp's converter + llama-quantize write for these models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <optional>

#include "core/error.h"
#include "eval/text.h"
#include "export/gguf_import.h"
#include "export/gguf_vocab.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "quant/qmatmul.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using Metadata = std::vector<std::pair<std::string, gguf::Value>>;

std::string fixture(const std::string& model) {
  return test::repo_path("data/fixtures/llamacpp/" + model + ".Q4_K_M.imatrix.gguf");
}

// A tensor as write_llama_copy writes it.
struct TensorCopy {
  std::vector<int64_t> ne;
  std::vector<uint8_t> bytes;
};
// Changes a tensor of the copy, or returns false to leave it out.
using TensorEdit = std::function<bool(const std::string& name, TensorCopy&)>;

TensorEdit drop(const std::string& name) {
  return [name](const std::string& n, TensorCopy&) { return n != name; };
}

// A copy of `src` without any kllens.* key, after `edit` changed the remaining metadata and
// `edit_tensor` the tensors.
void write_llama_copy(const std::string& src, const std::string& dst,
                      const std::function<void(Metadata&)>& edit = {},
                      const TensorEdit& edit_tensor = {}) {
  const gguf::File f(src);
  Metadata kv;
  for (const auto& [k, v] : f.metadata())
    if (k.rfind("kllens.", 0) != 0) kv.emplace_back(k, v);
  if (edit) edit(kv);
  gguf::Writer w;
  for (const auto& [k, v] : kv) w.set(k, v);
  for (const gguf::TensorInfo& t : f.tensors()) {
    const auto* b = reinterpret_cast<const uint8_t*>(t.data);
    TensorCopy copy{t.ne, std::vector<uint8_t>(b, b + t.nbytes)};
    if (edit_tensor && !edit_tensor(t.name, copy)) continue;
    w.add_tensor(t.name, copy.ne, t.type, std::move(copy.bytes));
  }
  w.write(dst);
}

void erase_key(Metadata& kv, const std::string& key) {
  const auto it = std::find_if(kv.begin(), kv.end(), [&](const auto& p) { return p.first == key; });
  ASSERT_NE(it, kv.end()) << key;
  kv.erase(it);
}

void set_key(Metadata& kv, const std::string& key, gguf::Value v) {
  const auto it = std::find_if(kv.begin(), kv.end(), [&](const auto& p) { return p.first == key; });
  ASSERT_NE(it, kv.end()) << key;
  it->second = std::move(v);
}

std::string held_out_text() {
  return select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 53,
                         61);
}

class LlamaCppFiles : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("llamacpp-files"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string model() const { return GetParam(); }
  std::string arch() const { return model() == "demo-mamba" ? "mamba" : "mamba2"; }
  std::string out(const std::string& name) const { return (dir_ / name).string(); }
  // The fixture as llama.cpp alone would have written it.
  std::string llama_copy() {
    const std::string path = out("llama.gguf");
    if (!fs::exists(path)) write_llama_copy(fixture(model()), path);
    return path;
  }
  fs::path dir_;
};

TEST_P(LlamaCppFiles, ConfigRebuiltFromLlamaKeysEqualsTheOriginalConfig) {
  const gguf::File f(llama_copy());
  ASSERT_EQ(f.find("kllens.hf_config"), nullptr);
  const nlohmann::json rebuilt = hf_config_from_llama_cpp(f);
  const nlohmann::json original = nlohmann::json::parse(
      gguf::File(fixture(model())).get_as<std::string>("kllens.hf_config"));
  // Every key kllens' families read, and every other key both have, is the same.
  int compared = 0;
  for (const auto& [k, v] : rebuilt.items()) {
    if (!original.contains(k)) continue;
    EXPECT_EQ(v, original[k]) << k;
    ++compared;
  }
  EXPECT_GE(compared, model() == "demo-mamba" ? 19 : 20);
  for (const char* k : {"model_type", "hidden_size", "num_hidden_layers", "vocab_size",
                        "state_size", "conv_kernel", "expand", "layer_norm_epsilon",
                        "tie_word_embeddings", "use_conv_bias", "use_bias"})
    EXPECT_TRUE(rebuilt.contains(k)) << k;
}

// llama.cpp's F32 logits of the file (dequantized by ggml) against kllens' float-activation
// prefill of the same file (the float32-panel path; the default integer path rounds activations
// to int8, which tests/eval/packed_model_test.cpp bounds through perplexity), loaded through
// kllens.hf_config and through llama.cpp's keys alone.
TEST_P(LlamaCppFiles, LogitsEqualLlamaCppsDequantizedLogits) {
  struct FloatPrefill {
    FloatPrefill() { set_prefill_path(PrefillPath::kFloatPanels); }
    ~FloatPrefill() { set_prefill_path(PrefillPath::kAuto); }
  } float_prefill;
  const SafetensorsFile ref(
      test::repo_path("data/fixtures/llamacpp/" + model() + ".Q4_K_M.imatrix.dequant-logits.safetensors"));
  const TensorView& ids_view = ref.get("input_ids");
  const std::vector<int64_t> ids64 = read_int_tensor(ids_view);
  const std::vector<float> want = ref.get("logits").to_f32();
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1];
  ASSERT_EQ(static_cast<int64_t>(want.size()), B * T * 4096);

  auto via_keys = load_gguf_model(llama_copy());
  auto via_config = load_gguf_model(fixture(model()));
  EXPECT_EQ(via_keys->info().arch, arch());
  EXPECT_EQ(via_keys->info().vocab, 4096);
  // Every matrix stays packed in its file's type (Q6_K, Q4_K, F16): nothing is dequantized at load.
  EXPECT_TRUE(via_keys->info().dequantized_at_load.empty());
  EXPECT_TRUE(via_config->info().dequantized_at_load.empty());
  const Param& embedding = via_keys->weights().get("backbone.embeddings.weight");
  ASSERT_TRUE(embedding.is_packed());
  EXPECT_EQ(embedding.packed->scheme.to_string(), "q6_K");
  double max_diff = 0, max_ref = 0, max_between = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[static_cast<size_t>(t)] = static_cast<int32_t>(ids64[b * T + t]);
    const std::vector<float> got = via_keys->forward(ids);
    const std::vector<float> got_config = via_config->forward(ids);
    ASSERT_EQ(static_cast<int64_t>(got.size()), T * 4096);
    for (size_t i = 0; i < got.size(); ++i) {
      const float w = want[static_cast<size_t>(b * T * 4096) + i];
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(got[i] - w)));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(w)));
      max_between = std::max(max_between, static_cast<double>(std::fabs(got[i] - got_config[i])));
    }
  }
  std::cout << model() << ": max |kllens - llama.cpp| = " << max_diff << " (logits up to "
            << max_ref << "); config from keys vs kllens.hf_config: " << max_between << "\n";
  EXPECT_LE(max_diff, 1e-4);
  EXPECT_EQ(max_between, 0.0);
}

TEST_P(LlamaCppFiles, InspectListsTheStoredTypes) {
  const auto r = test::run_cli({"inspect", llama_copy()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("architecture " + arch()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q6_K"), std::string::npos) << r.out;  // token_embd, packed
  EXPECT_NE(r.out.find("q4_K"), std::string::npos) << r.out;  // ssm_in, ssm_out, packed
  EXPECT_EQ(r.out.find("f32<-"), std::string::npos) << r.out;  // nothing dequantized at load
  if (model() == "demo-mamba") {
    EXPECT_NE(r.out.find("f16"), std::string::npos) << r.out;  // ssm_dt stays packed f16
  }
}

TEST_P(LlamaCppFiles, EvalAgainstTheFloatModelPrintsKl) {
  const std::string text = out("heldout.txt");
  test::write_file(text, held_out_text());
  const auto r = test::run_cli({"eval", llama_copy(), "--reference",
                                test::repo_path("data/models/" + model()), "--text", text, "--ctx",
                                "128", "--windows", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("KL(P_fp || P_q): mean"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Final estimate: PPL"), std::string::npos) << r.out;
}

TEST_P(LlamaCppFiles, MissingOrLyingKeysAreOneClearError) {
  const std::string a = arch();
  struct Case {
    std::string key;             // removed, or set to `value`
    std::optional<gguf::Value> value;
    std::string part;            // in the error
  };
  std::vector<Case> cases = {
      {a + ".ssm.conv_kernel", std::nullopt, "key " + a + ".ssm.conv_kernel is missing"},
      {a + ".embedding_length", std::nullopt, "key " + a + ".embedding_length is missing"},
      {a + ".attention.layer_norm_rms_epsilon", std::nullopt,
       "key " + a + ".attention.layer_norm_rms_epsilon is missing"},
      {a + ".ssm.state_size", gguf::Value(uint32_t{17}), a + ".ssm.state_size = 17"},
      {a + ".attention.layer_norm_rms_epsilon", gguf::Value(1.0f), "is outside [0, 1)"},
      {a + ".ssm.inner_size", gguf::Value(uint32_t{256}), a + ".ssm.inner_size = 256"},
      {a + ".ssm.conv_kernel", gguf::Value(uint32_t{3}), a + ".ssm.conv_kernel = 3"},
      {a + ".block_count", gguf::Value(uint32_t{3}), a + ".block_count = 3"},
      {a + ".block_count", gguf::Value(uint32_t{5}), a + ".block_count = 5"},
      {a + ".ssm.time_step_rank", gguf::Value(std::string("16")), "expected an unsigned integer"},
      {"general.architecture", gguf::Value(std::string("rwkv6")), "only for 'mamba', 'mamba2', 'falcon-h1', 'llama', 'jamba'"},
      // A hand-made input (code review, confirmed with fuzz/gguf_fuzz under UBSan): 2 * d_inner
      // overflowed int64 before the bound.
      {a + ".ssm.inner_size", gguf::Value(uint64_t{1} << 62), a + ".ssm.inner_size = 4611686018427387904 is larger than"},
  };
  if (a == "mamba") {
    cases.push_back({a + ".ssm.time_step_rank", gguf::Value(uint32_t{8}), a + ".ssm.time_step_rank = 8"});
  } else {
    cases.push_back({a + ".ssm.group_count", std::nullopt, "key " + a + ".ssm.group_count is missing"});
    cases.push_back({a + ".ssm.group_count", gguf::Value(uint32_t{2}), a + ".ssm.group_count = 2"});
    cases.push_back({a + ".ssm.time_step_rank", gguf::Value(uint32_t{16}), a + ".ssm.time_step_rank = 16"});
  }
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    const std::string path = out("bad" + std::to_string(n++) + ".gguf");
    write_llama_copy(fixture(model()), path, [&](Metadata& kv) {
      if (c.value) set_key(kv, c.key, *c.value);
      else erase_key(kv, c.key);
    });
    try {
      load_gguf_model(path);
      ADD_FAILURE() << "loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.part), std::string::npos) << e.what();
    }
  }
  // Through the CLI: one error line, exit 1.
  test::expect_cli_error(test::run_cli({"inspect", out("bad0.gguf")}), 1,
                         "key " + a + ".ssm.conv_kernel is missing");
  test::expect_cli_error(test::run_cli({"inspect", out("bad3.gguf")}), 1, a + ".ssm.state_size = 17");

  // A layer's tensor whose shape disagrees with the keys, and a missing tensor.
  const std::string missing = out("missing.gguf");
  write_llama_copy(fixture(model()), missing, {}, drop("blk.2.ssm_out.weight"));
  test::expect_cli_error(test::run_cli({"inspect", missing}), 1, "'blk.2.ssm_out.weight'");
  // A positive ssm_a cannot be -exp(A_log).
  const std::string positive_a = out("positive-a.gguf");
  {
    const gguf::File f(fixture(model()));
    const gguf::TensorInfo* ssm_a = f.find_tensor("blk.1.ssm_a");
    ASSERT_NE(ssm_a, nullptr);
    ASSERT_EQ(ssm_a->type, gguf::GgmlType::kF32);  // one float32 to overwrite
  }
  write_llama_copy(fixture(model()), positive_a, {}, [](const std::string& name, TensorCopy& t) {
    if (name == "blk.1.ssm_a") {
      const float one = 1.0f;
      std::memcpy(t.bytes.data(), &one, 4);
    }
    return true;
  });
  test::expect_cli_error(test::run_cli({"inspect", positive_a}), 1, "'blk.1.ssm_a' holds 1");

  // Dimensions of 0 (an empty tensor is a valid GGUF tensor, not a valid layer): one error naming
  // the tensor, whether its shape is checked against the keys or the keys are read from it.
  for (const std::string name : {"blk.1.ssm_d", "blk.0.ssm_in.weight", "token_embd.weight"}) {
    SCOPED_TRACE(name);
    const std::string zero = out("zero-" + name + ".gguf");
    write_llama_copy(fixture(model()), zero, {}, [&](const std::string& n, TensorCopy& t) {
      if (n == name) {
        t.ne.back() = 0;
        t.bytes.clear();
      }
      return true;
    });
    test::expect_cli_error(test::run_cli({"inspect", zero}), 1, name);
  }
}

INSTANTIATE_TEST_SUITE_P(Demo, LlamaCppFiles, ::testing::Values("demo-mamba", "demo-mamba2"),
                         [](const auto& info) {
                           return std::string(info.param) == "demo-mamba" ? "Mamba" : "Mamba2";
                         });

// The tokenizer rebuilt from tokenizer.ggml.* gives exactly the ids of the model folder's
// tokenizer.json on the held-out articles 53..61.
TEST(LlamaCppTokenizer, RebuiltFromGgufKeysEncodesLikeTheHfTokenizer) {
  const gguf::File f(fixture("demo-mamba"));
  const Tokenizer rebuilt =
      Tokenizer::from_json_text(tokenizer_json_from_llama_keys(f).dump(), "rebuilt");
  const Tokenizer hf = Tokenizer::load(test::repo_path("data/models/demo-mamba/tokenizer.json"));
  const std::string text = held_out_text();
  const std::vector<int32_t> want = hf.encode(text);
  ASSERT_GT(want.size(), 10000u);
  EXPECT_EQ(rebuilt.encode(text), want);
  EXPECT_EQ(rebuilt.vocab_size(), hf.vocab_size());
  EXPECT_EQ(rebuilt.decode(want), hf.decode(want));
  EXPECT_EQ(rebuilt.token_to_id("<|endoftext|>"), 0);
  // add_bos_token is false: no post-processor adds anything.
  EXPECT_EQ(rebuilt.encode("Hello world", true), hf.encode("Hello world", true));
}

TEST(LlamaCppTokenizer, TokenizeCommandUsesTheRebuiltTokenizer) {
  const fs::path dir = test::fresh_temp_dir("llamacpp-tok");
  const std::string file = (dir / "llama.gguf").string();
  write_llama_copy(fixture("demo-mamba"), file);
  const std::string text = (dir / "heldout.txt").string();
  test::write_file(text, held_out_text());
  const std::string a = (dir / "a.safetensors").string(), b = (dir / "b.safetensors").string();
  const auto r1 = test::run_cli({"tokenize", file, "--text", text, "--out", a});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  const auto r2 = test::run_cli(
      {"tokenize", test::repo_path("data/models/demo-mamba"), "--text", text, "--out", b});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(read_int_tensor(SafetensorsFile(a).get("ids")),
            read_int_tensor(SafetensorsFile(b).get("ids")));
  fs::remove_all(dir);
}

TEST(LlamaCppTokenizer, UnreproduciblePreTokenizersAreRefused) {
  const fs::path dir = test::fresh_temp_dir("llamacpp-tok-bad");
  const std::string text = (dir / "t.txt").string();
  test::write_file(text, "Hello world\n");
  struct Case {
    std::function<void(Metadata&)> edit;
    std::string part;
  };
  const std::vector<Case> cases = {
      {[](Metadata& kv) { erase_key(kv, "tokenizer.ggml.pre"); },
       "tokenizer.ggml.pre is missing"},
      {[](Metadata& kv) { set_key(kv, "tokenizer.ggml.pre", std::string("llama-bpe")); },
       "tokenizer.ggml.pre is 'llama-bpe'"},
      {[](Metadata& kv) { set_key(kv, "tokenizer.ggml.model", std::string("llama")); },
       "tokenizer.ggml.model is 'llama'"},
      {[](Metadata& kv) { erase_key(kv, "tokenizer.ggml.merges"); }, "tokenizer.ggml.merges"},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.part);
    const std::string file = (dir / ("t" + std::to_string(n++) + ".gguf")).string();
    write_llama_copy(fixture("demo-mamba"), file, c.edit);
    test::expect_cli_error(
        test::run_cli({"tokenize", file, "--text", text, "--out", (dir / "ids.safetensors").string()}),
        1, c.part);
  }
  fs::remove_all(dir);
}

// Llama, Jamba, Falcon-H1, Nemotron-H and Granite-4.0-H files as llama.cpp writes them: kllens' F32 export of the oracles in llama.cpp's
// layout (the files llama.cpp's logits in data/fixtures/llamacpp-oracles were computed on), with
// every kllens.* key removed. The config rebuilt from llama.cpp's keys gives the oracle's tensor
// table, and the file computes llama.cpp's logits within 1e-4 and exactly kllens' own file's.
class LlamaCppAttentionFiles : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("llamacpp-attention-files"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string name() const { return GetParam(); }
  std::string out(const std::string& n) const { return (dir_ / n).string(); }
  // The checkpoint: an oracle, or the falcon_h1 oracle's weights under the variant config its
  // llama.cpp fixture was made with (gate first, multipliers that are not 1, folded in the file).
  std::string oracle() const {
    if (name() == "nemotron_h" || name() == "granitehybrid" || name() == "granitehybrid-moe")
      return test::repo_path("data/fixtures/" + name() + "-tiny");
    if (name() == "granitehybrid-rope")  // RoPE on: q/k permuted in the file and back
      return test::weights_with_config(
          test::repo_path("data/fixtures/granitehybrid-tiny"),
          test::read_file(test::repo_path("data/fixtures/llamacpp-oracles/granitehybrid-rope.config.json")));
    if (name() != "falcon_h1-variant") return test::repo_path("data/fixtures/oracles/" + name());
    const fs::path folder = dir_ / "falcon_h1-variant";
    if (!fs::exists(folder)) {
      fs::create_directories(folder);
      fs::copy_file(test::repo_path("data/fixtures/oracles/falcon_h1/model.safetensors"),
                    folder / "model.safetensors");
      fs::copy_file(test::repo_path("data/fixtures/llamacpp-oracles/falcon_h1-variant.config.json"),
                    folder / "config.json");
    }
    return folder.string();
  }
  // kllens' F32 file, and its copy without kllens.* keys.
  std::pair<std::string, std::string> files() {
    const std::string kllens_file = out("kllens.gguf"), llama_file = out("llama.gguf");
    if (!fs::exists(llama_file)) {
      const auto r = test::run_cli({"quantize", oracle(), "--uniform", "f32", "--out", kllens_file});
      EXPECT_EQ(r.exit_code, 0) << r.err;
      write_llama_copy(kllens_file, llama_file);
    }
    return {kllens_file, llama_file};
  }
  fs::path dir_;
};

TEST_P(LlamaCppAttentionFiles, ConfigFromLlamaKeysGivesTheOraclesTensorTable) {
  const auto [kllens_file, llama_file] = files();
  const gguf::File f(llama_file);
  ASSERT_EQ(f.find("kllens.hf_config"), nullptr);
  const nlohmann::json rebuilt = hf_config_from_llama_cpp(f);
  const auto table = [](const std::vector<TensorSpec>& specs) {
    std::map<std::string, std::pair<std::vector<int64_t>, Role>> t;
    for (const auto& s : specs) t[s.name] = {s.shape, s.role};
    return t;
  };
  EXPECT_EQ(table(tensor_specs(HfConfig::from_json(rebuilt, "rebuilt"))),
            table(tensor_specs(HfConfig::load_folder(oracle()))));
}

TEST_P(LlamaCppAttentionFiles, LogitsEqualLlamaCppsAndKllensOwnFile) {
  const auto [kllens_file, llama_file] = files();
  const SafetensorsFile ref(test::repo_path("data/fixtures/llamacpp-oracles/" + name() + ".safetensors"));
  const std::vector<int64_t> ids64 = read_int_tensor(ref.get("input_ids"));
  const int64_t T = ref.get("input_ids").shape[1];
  const std::vector<int32_t> ids(ids64.begin(), ids64.begin() + T);
  const auto via_keys = load_gguf_model(llama_file);
  const auto via_config = load_gguf_model(kllens_file);
  EXPECT_EQ(via_keys->info().arch,
            name().rfind("granitehybrid", 0) == 0 ? "granitemoehybrid"
                                                  : name().substr(0, name().find('-')));
  const std::vector<float> got = via_keys->forward(ids);
  EXPECT_EQ(got, via_config->forward(ids));
  EXPECT_EQ(via_keys->forward_decode(ids), via_config->forward_decode(ids));
  EXPECT_LE(test::max_abs_diff(got, ref.get("logits").to_f32().data()), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Oracles, LlamaCppAttentionFiles,
                         ::testing::Values("llama", "jamba", "falcon_h1-variant", "nemotron_h",
                                           "granitehybrid", "granitehybrid-rope",
                                           "granitehybrid-moe"));

// What kllens' families do not compute is refused by name, not approximated.
TEST(LlamaCppAttentionFilesBad, UnsupportedKeysAreOneClearError) {
  const fs::path dir = test::fresh_temp_dir("llamacpp-attention-bad");
  const auto export_f32 = [&](const std::string& oracle) {
    const std::string path = (dir / (oracle + ".kllens.gguf")).string();
    const auto r = test::run_cli({"quantize", test::repo_path("data/fixtures/oracles/" + oracle),
                                  "--uniform", "f32", "--out", path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return path;
  };
  const std::string llama = export_f32("llama"), jamba = export_f32("jamba");
  struct Case {
    std::string src, name;
    std::function<void(Metadata&)> edit;
    TensorEdit edit_tensor;
    std::string part;
  };
  const std::vector<Case> cases = {
      {llama, "rope-scaling", [](Metadata& kv) { kv.emplace_back("llama.rope.scaling.type", gguf::Value(std::string("linear"))); },
       {}, "llama.rope.scaling.type"},
      {llama, "partial-rotary", [](Metadata& kv) { set_key(kv, "llama.rope.dimension_count", gguf::Value(uint32_t{4})); },
       {}, "partial rotary"},
      {llama, "experts", [](Metadata& kv) { kv.emplace_back("llama.expert_count", gguf::Value(uint32_t{8})); },
       {}, "llama.expert_count"},
      {jamba, "kv-heads", [](Metadata& kv) {
         set_key(kv, "jamba.attention.head_count_kv", gguf::Value(std::vector<int32_t>{0, 2, 0}));
       }, {}, "3 entries for 4 layers"},
      {jamba, "no-router", {}, drop("blk.1.ffn_gate_inp.weight"), "blk.1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = (dir / (c.name + ".gguf")).string();
    write_llama_copy(c.src, path, c.edit, c.edit_tensor);
    test::expect_cli_error(test::run_cli({"inspect", path}), 1, c.part);
  }
}

}  // namespace
}  // namespace kllens
