// Encoding and decoding against the HF tokenizers 0.23 oracle (data/fixtures/tokenizer-oracle).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <random>

#include "tok_fixtures.h"

namespace kllens::test {
namespace {

struct Expected {
  const char* name;
  size_t count;
  friend void PrintTo(const Expected& e, std::ostream* os) { *os << e.name; }
};

class WikiOracle : public ::testing::TestWithParam<Expected> {};

TEST_P(WikiOracle, EveryIdOfWikiTestMatchesHf) {
  const auto [name, count] = GetParam();
  auto want = read_safetensors_i32(
      repo_path(std::string("data/fixtures/tokenizer-oracle/") + name + ".wiki.test.ids.safetensors"),
      "ids");
  ASSERT_EQ(want.size(), count);
  auto t0 = std::chrono::steady_clock::now();
  const auto& got = wiki_ids(name);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(same_ids(tokenizer(name), got, want));
  // "At most a few seconds" for the 1.3 MB file (generous for a loaded, shared CI machine).
  EXPECT_LT(secs, test::time_limit(10.0)) << name << " took " << secs << " s to encode wiki.test.raw";
  RecordProperty("encode_seconds", std::to_string(secs));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, WikiOracle,
                         ::testing::Values(Expected{"gpt-neox-20b", 285845},
                                           Expected{"llama-hymba", 332754}),
                         [](const auto& info) {
                           std::string s = info.param.name;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

class Samples : public ::testing::TestWithParam<const char*> {};

TEST_P(Samples, EncodeAndDecodeLikeHf) {
  std::string name = GetParam();
  auto samples = nlohmann::json::parse(
      read_file(repo_path("data/fixtures/tokenizer-oracle/" + name + ".samples.json")));
  ASSERT_TRUE(samples.is_array());
  ASSERT_GE(samples.size(), 8u);
  const Tokenizer& tk = tokenizer(name);
  for (const auto& s : samples) {
    std::string text = s.at("text");
    std::vector<int32_t> want = s.at("ids");
    std::string decoded = s.at("decoded");
    SCOPED_TRACE("text: \"" + text + "\"");
    auto got = tk.encode(text);
    EXPECT_TRUE(same_ids(tk, got, want));
    EXPECT_EQ(tk.decode(want), decoded);
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Samples, ::testing::Values("gpt-neox-20b", "llama-hymba"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// Byte-level BPE is lossless on NFC text (wiki.test.raw is NFC); the Llama pipeline
// (Prepend + Replace, byte fallback, Strip of the prepended space) is too, for text without
// U+2581.
class WikiRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(WikiRoundTrip, DecodeOfEncodeIsTheText) {
  std::string name = GetParam();
  const auto& ids = wiki_ids(name);
  ASSERT_GT(ids.size(), 200000u);
  EXPECT_TRUE(same_text(tokenizer(name).decode(ids), wiki_text()));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, WikiRoundTrip,
                         ::testing::Values("gpt-neox-20b", "llama-hymba", "demo-mamba"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

TEST(DemoTokenizers, AllLoadAndRoundTrip) {
  const std::string text =
      " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles "
      "( Japanese : 戦場のヴァルキュリア3 , lit . Valkyria of the Battlefield 3 ) , 1,200 m²\n";
  for (const char* name : {"demo-mamba", "demo-mamba2", "demo-hymba", "demo-falcon_h1"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tk = tokenizer(name);
    EXPECT_EQ(tk.vocab_size(), 4096);
    auto ids = tk.encode(text);
    EXPECT_GT(ids.size(), 20u);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tk.vocab_size());
    }
    EXPECT_EQ(tk.decode(ids), text);
    EXPECT_EQ(tk.token_to_id("<|endoftext|>"), 0);
    EXPECT_EQ(tk.eos_id(), 0);
  }
}

// A million characters without a space: one pre-token of a million characters for the byte-level
// tokenizers, and the whole text one word for llama-hymba (no pre-tokenizer). The merge loop is a
// heap over a linked list (O(n log n)); a rescan per merge would take hours here. Random letters
// (every adjacent pair has a merge) and the test split without its spaces and newlines.
TEST(LongWords, AMillionCharactersWithoutASpaceTokenizeInUnderASecond) {
  std::mt19937 rng(7);
  std::string letters(1000000, 'a');
  for (char& c : letters) c = static_cast<char>('a' + rng() % 26);
  std::string words;
  for (char c : wiki_text())
    if (c != ' ' && c != '\n' && words.size() < 1000000) words.push_back(c);
  ASSERT_EQ(words.size(), 1000000u);
  for (const char* name : {"demo-mamba", "gpt-neox-20b", "llama-hymba"}) {
    for (const std::string* text : {&letters, &words}) {
      SCOPED_TRACE(std::string(name) + (text == &letters ? " letters" : " words"));
      const Tokenizer& tk = tokenizer(name);
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int32_t> ids = tk.encode(*text);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(seconds, test::time_limit(1.0));
      EXPECT_GT(ids.size(), 1000u);
      EXPECT_LT(ids.size(), text->size());
      EXPECT_EQ(tk.decode(ids), *text);
    }
  }
}

TEST(DemoTokenizers, CompressesItsTrainingText) {
  // Trained on articles 0..43 of this file: far fewer tokens than bytes.
  const auto& ids = wiki_ids("demo-mamba");
  EXPECT_LT(ids.size(), wiki_text().size() / 3);
}

}  // namespace
}  // namespace kllens::test
