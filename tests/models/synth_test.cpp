// kllens synth's tokenizer.json: the byte-level default, a copied tokenizer checked against the
// vocabulary, none on request or when 256 ids do not fit. A tiny Mamba config keeps it fast.
#include "models/synth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "models/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

std::string tiny_mamba_config(int vocab) {
  return R"({"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2, "vocab_size": )" +
         std::to_string(vocab) +
         R"(, "state_size": 4, "expand": 2, "conv_kernel": 4, "time_step_rank": 2,
             "use_bias": false, "use_conv_bias": true, "layer_norm_epsilon": 1e-5,
             "tie_word_embeddings": true})";
}

class Synth : public ::testing::Test {
 protected:
  void SetUp() override { dir = test::fresh_temp_dir("synth"); }
  void TearDown() override { fs::remove_all(dir); }
  SynthOptions options(int vocab, const std::string& name) {
    const fs::path config = dir / (name + ".json");
    test::write_file(config, tiny_mamba_config(vocab));
    SynthOptions o;
    o.config_path = config.string();
    o.out_dir = (dir / name).string();
    return o;
  }
  fs::path dir;
};

TEST_F(Synth, WritesTheByteLevelTokenizerByDefault) {
  const SynthOptions o = options(259, "default");
  const SynthResult r = synthesize_checkpoint(o);
  EXPECT_EQ(r.tokenizer, "byte-level");
  const Tokenizer tok = Tokenizer::load(o.out_dir + "/tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), 256);
  // The folder runs text through the model: every id is within the embedding.
  const auto model = load_model(o.out_dir);
  EXPECT_EQ(model->weights().total_params(), r.params);
  const auto ids = tok.encode("Synthetic folders tokenize: ünïcödé, digits 12345.");
  for (int32_t id : ids) ASSERT_LT(id, model->info().vocab);
  EXPECT_EQ(model->forward_last(ids).size(), 259u);
}

TEST_F(Synth, CopiesAGivenTokenizerThatFits) {
  const std::string demo = test::repo_path("data/models/demo-mamba");
  const int vocab = Tokenizer::load(demo + "/tokenizer.json").vocab_size();
  SynthOptions o = options(vocab + 3, "copied");
  o.tokenizer_path = demo;  // a folder: its tokenizer.json
  EXPECT_EQ(synthesize_checkpoint(o).tokenizer, demo + "/tokenizer.json");
  EXPECT_EQ(test::read_file(o.out_dir + "/tokenizer.json"), test::read_file(demo + "/tokenizer.json"));

  SynthOptions small = options(vocab - 1, "too-small");
  small.tokenizer_path = demo + "/tokenizer.json";
  try {
    synthesize_checkpoint(small);
    FAIL() << "a tokenizer with more ids than the vocabulary was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("vocab_size is " + std::to_string(vocab - 1)),
              std::string::npos) << e.what();
  }
  SynthOptions bad = options(300, "bad");
  bad.tokenizer_path = (dir / "missing.json").string();
  EXPECT_THROW(synthesize_checkpoint(bad), Error);
}

TEST_F(Synth, NoTokenizerOnRequestOrWithoutRoom) {
  SynthOptions o = options(300, "none");
  o.write_tokenizer = false;
  EXPECT_EQ(synthesize_checkpoint(o).tokenizer, "none (--no-tokenizer)");
  EXPECT_FALSE(fs::exists(o.out_dir + "/tokenizer.json"));
  const SynthOptions tiny = options(200, "tiny-vocab");
  EXPECT_NE(synthesize_checkpoint(tiny).tokenizer.find("no room"), std::string::npos);
  EXPECT_FALSE(fs::exists(tiny.out_dir + "/tokenizer.json"));
}

}  // namespace
}  // namespace kllens
