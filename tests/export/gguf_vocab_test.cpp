// export/gguf_vocab: reading a tokenizer.json as the GGUF vocabulary (read_gguf_vocab). Inputs
// the fuzzer's tokenizer target (fuzz/tokenizer_fuzz.cpp) reaches: each bad file is one Error.
#include "export/gguf_vocab.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

using json = nlohmann::json;

TEST(GgufVocab, ModelTypeThatIsNotAStringIsOneError) {
  const std::string demo = test::repo_path("data/models/demo-mamba/tokenizer.json");
  const GgufVocab v = read_gguf_vocab(demo, 4096, json::object());
  EXPECT_EQ(v.tokens.size(), 4096u);
  EXPECT_EQ(v.pre, "gpt-2");

  // Tokenizer::load reads a model with merges and a non-string "type" as BPE; read_gguf_vocab
  // threw nlohmann's type_error from model.value("type", "").
  json j = json::parse(test::read_file(demo));
  j["model"]["type"] = 5;
  const auto dir = test::fresh_temp_dir("gguf-vocab");
  const std::string path = (dir / "tokenizer.json").string();
  test::write_file(path, j.dump());
  try {
    read_gguf_vocab(path, 4096, json::object());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("only BPE"), std::string::npos) << msg;
  }
}

// llama.cpp's tokenizer keys of a four-token vocabulary, as its converter writes a "gpt2" one.
using Metadata = std::vector<std::pair<std::string, gguf::Value>>;
Metadata llama_vocab_keys() {
  return {{"tokenizer.ggml.model", std::string("gpt2")},
          {"tokenizer.ggml.pre", std::string("gpt-2")},
          {"tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "ab", "<|endoftext|>"}},
          {"tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 1, 3}},
          {"tokenizer.ggml.merges", std::vector<std::string>{"a b"}},
          {"tokenizer.ggml.eos_token_id", uint32_t{3}}};
}

void set_key(Metadata& kv, const std::string& key, gguf::Value v) {
  for (auto& [k, value] : kv)
    if (k == key) {
      value = std::move(v);
      return;
    }
  kv.emplace_back(key, std::move(v));
}

class LlamaVocabKeys : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("llama-vocab"); }
  std::string write(const Metadata& kv) {
    gguf::Writer w;
    for (const auto& [k, v] : kv) w.set(k, v);
    const std::string path = (dir_ / ("v" + std::to_string(n_++) + ".gguf")).string();
    w.write(path);
    return path;
  }
  // The tokenizer from the keys after `edit`: one Error naming the key (`part`), never a crash.
  void expect_rejected(const std::function<void(Metadata&)>& edit, const std::string& part) {
    Metadata kv = llama_vocab_keys();
    edit(kv);
    const std::string path = write(kv);
    try {
      const gguf::File f(path);
      (void)gguf_tokenizer_json(f);
      ADD_FAILURE() << "accepted; expected an error with '" << part << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
    }
  }
  std::filesystem::path dir_;
  int n_ = 0;
};

TEST_F(LlamaVocabKeys, TheValidKeysTokenize) {
  const gguf::File f(write(llama_vocab_keys()));
  const GgufTokenizerJson t = gguf_tokenizer_json(f);
  const Tokenizer tok = Tokenizer::from_json_text(t.text, t.origin);
  EXPECT_EQ(tok.encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tok.eos_id(), 3);
  // Scores are optional for gpt2 and unused; one f32 per token is accepted.
  Metadata kv = llama_vocab_keys();
  set_key(kv, "tokenizer.ggml.scores", std::vector<float>{0, 0, -1, 0});
  EXPECT_NO_THROW(gguf_tokenizer_json(gguf::File(write(kv))));
}

// The arrays llama.cpp reads as tokens (strings), scores (f32), token types (i32) and merges
// (strings), each of another element type or not an array.
TEST_F(LlamaVocabKeys, ArraysOfTheWrongElementTypeAreOneError) {
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.tokens", std::vector<int32_t>{0, 1, 2, 3}); },
                  "metadata 'tokenizer.ggml.tokens' is array of i32, expected array of string");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.tokens", std::string("a b ab")); },
                  "metadata 'tokenizer.ggml.tokens' is string, expected array of string");
  expect_rejected(
      [](Metadata& kv) {
        set_key(kv, "tokenizer.ggml.scores", std::vector<std::string>{"0", "0", "0", "0"});
      },
      "metadata 'tokenizer.ggml.scores' is array of string, expected array of f32");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.scores", std::vector<float>{0, 0}); },
                  "tokenizer.ggml.scores has 2 entries for 4 tokenizer.ggml.tokens");
  expect_rejected(
      [](Metadata& kv) { set_key(kv, "tokenizer.ggml.token_type", std::vector<float>{1, 1, 1, 3}); },
      "metadata 'tokenizer.ggml.token_type' is array of f32, expected array of i32");
  expect_rejected(
      [](Metadata& kv) { set_key(kv, "tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 1}); },
      "tokenizer.ggml.token_type has 3 entries for 4 tokenizer.ggml.tokens");
  expect_rejected(
      [](Metadata& kv) { set_key(kv, "tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 7, 3}); },
      "tokenizer.ggml.token_type[2] = 7 is not a llama.cpp token type");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.merges", std::vector<int32_t>{0}); },
                  "metadata 'tokenizer.ggml.merges' is array of i32, expected array of string");
  expect_rejected(
      [](Metadata& kv) {
        set_key(kv, "tokenizer.ggml.merges", std::vector<std::string>{"a", "b"});
      },
      "tokenizer.ggml.merges[0] \"a\" is not two tokens");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.model", uint32_t{2}); },
                  "tokenizer.ggml.model is not a string");
  expect_rejected(
      [](Metadata& kv) {
        set_key(kv, "tokenizer.ggml.add_eos_token", true);
        set_key(kv, "tokenizer.ggml.eos_token_id", int32_t{3});
      },
      "tokenizer.ggml.eos_token_id is not a u32");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.unknown_token_id", uint32_t{4}); },
                  "tokenizer.ggml.unknown_token_id = 4 is not a token");
}

// Tokens and merges the vocabulary cannot hold: duplicates, merges naming tokens that are not
// there, bytes that are not UTF-8 (tokenizer.json is JSON text).
TEST_F(LlamaVocabKeys, BadTokensAndMergesAreOneError) {
  expect_rejected(
      [](Metadata& kv) {
        set_key(kv, "tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "a", "<|endoftext|>"});
      },
      "tokenizer.ggml.tokens has \"a\" at ids 0 and 2");
  expect_rejected(
      [](Metadata& kv) {
        set_key(kv, "tokenizer.ggml.tokens", std::vector<std::string>{"a", "\xff", "ab", "<|endoftext|>"});
      },
      "tokenizer.ggml.tokens or merges hold invalid UTF-8");
  expect_rejected([](Metadata& kv) { set_key(kv, "tokenizer.ggml.merges", std::vector<std::string>{"a \xc3"}); },
                  "invalid UTF-8");
  // A merge of tokens outside the vocabulary: the rebuilt tokenizer.json is refused where it is
  // loaded, naming the merge.
  Metadata kv = llama_vocab_keys();
  set_key(kv, "tokenizer.ggml.merges", std::vector<std::string>{"a b", "b x"});
  const gguf::File f(write(kv));
  const GgufTokenizerJson t = gguf_tokenizer_json(f);
  try {
    Tokenizer::from_json_text(t.text, t.origin);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merge #1 (\"b\", \"x\")"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(f.path()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kllens
