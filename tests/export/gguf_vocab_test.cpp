// export/gguf_vocab: reading a tokenizer.json as the GGUF vocabulary (read_gguf_vocab). Inputs
// the fuzzer's tokenizer target (fuzz/tokenizer_fuzz.cpp) reaches: each bad file is one Error.
#include "export/gguf_vocab.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "test_util.h"

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

}  // namespace
}  // namespace kllens
