// The Tokenizer API beyond the oracle files: special tokens, post-processing, errors, and the
// internal pieces (GPT-2 split, lossy UTF-8) whose HF semantics are easy to get subtly wrong.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "core/error.h"
#include "tok_fixtures.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/text.h"
#include "tokenizer/tokenizer.h"

namespace kllens::test {
namespace {

using Ids = std::vector<int32_t>;

TEST(TokenizerApi, LlamaAddSpecialTokensPrependsBos) {
  const Tokenizer& tk = tokenizer("llama-hymba");
  EXPECT_EQ(tk.bos_id(), 1);
  EXPECT_EQ(tk.eos_id(), 2);
  EXPECT_EQ(tk.encode("Hello world"), (Ids{15043, 3186}));
  EXPECT_EQ(tk.encode("Hello world", true), (Ids{1, 15043, 3186}));
  EXPECT_EQ(tk.encode("", true), (Ids{1}));
  // skip_special_tokens drops the BOS again.
  EXPECT_EQ(tk.decode(Ids{1, 15043, 3186}, true), "Hello world");
}

TEST(TokenizerApi, LlamaSpecialTokenInTextSplitsAndRestartsThePrefix) {
  const Tokenizer& tk = tokenizer("llama-hymba");
  // "<s>" is a special added token: it is cut out first, and the normalizer (Prepend "▁") then
  // runs on each remaining piece.
  EXPECT_EQ(tk.encode("<s>Hello"), (Ids{1, 15043}));
  EXPECT_EQ(tk.encode("Hello</s>"), (Ids{15043, 2}));
  EXPECT_EQ(tk.encode("Hello world</s>Hello"), (Ids{15043, 3186, 2, 15043}));
  EXPECT_EQ(tk.decode(Ids{15043, 2}, true), "Hello");
}

TEST(TokenizerApi, LlamaByteFallbackDecodesInvalidBytesToReplacementChars) {
  const Tokenizer& tk = tokenizer("llama-hymba");
  // 🚀 = F0 9F 9A 80 is spelled with byte tokens <0xF0>=243 ...
  EXPECT_EQ(tk.decode(Ids{243, 162, 157, 131}), "🚀");
  // ... and a truncated sequence gives one U+FFFD per byte (HF's ByteFallback decoder).
  EXPECT_EQ(tk.decode(Ids{243, 162, 157}), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(tk.token_to_id("<0x0A>"), 13);
}

TEST(TokenizerApi, NeoxSpecialAndAddedTokens) {
  const Tokenizer& tk = tokenizer("gpt-neox-20b");
  EXPECT_EQ(tk.vocab_size(), 50281);
  EXPECT_EQ(tk.bos_id(), std::nullopt);
  EXPECT_EQ(tk.eos_id(), 0);
  EXPECT_EQ(tk.token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tk.token_to_id("<|im_end|>"), 50278);
  EXPECT_EQ(tk.token_to_id("no such token"), std::nullopt);
  // ByteLevel post-processing changes offsets only.
  EXPECT_EQ(tk.encode("Hello world", true), tk.encode("Hello world"));
  // "assistant" is a special added token (normalized = false) and matches inside words too.
  Ids ids = tk.encode("the assistant<|im_end|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[ids.size() - 2], 50279);
  EXPECT_EQ(ids.back(), 50278);
  EXPECT_EQ(tk.decode(ids), "the assistant<|im_end|>");
  EXPECT_EQ(tk.decode(ids, true), "the ");
  // Runs of spaces are non-special added tokens matched on the normalized text, longest first.
  EXPECT_EQ(tk.encode(std::string(30, ' ')), (Ids{50254, 50272}));  // 24 + 6 spaces
  EXPECT_EQ(tk.decode(Ids{50254, 50272}, true), std::string(30, ' '));
  // Unknown ids are skipped when decoding.
  EXPECT_EQ(tk.decode(Ids{12092, 999999, -5, 1533}), "Hello world");
}

TEST(TokenizerApi, NeoxNormalizesToNfc) {
  const Tokenizer& tk = tokenizer("gpt-neox-20b");
  EXPECT_EQ(tk.encode("cafe\u0301"), tk.encode("caf\u00e9"));
  EXPECT_EQ(tk.decode(tk.encode("cafe\u0301")), "caf\u00e9");
}

TEST(TokenizerApi, NeoxDecodeOfSplitCharacterIsLossy) {
  const Tokenizer& tk = tokenizer("gpt-neox-20b");
  Ids ids = tk.encode("🚀");
  ASSERT_GE(ids.size(), 2u);
  // Dropping the last byte piece leaves an ill-formed sequence: one U+FFFD for it.
  Ids head(ids.begin(), ids.end() - 1);
  EXPECT_EQ(tk.decode(head), "\uFFFD");
}

TEST(TokenizerApi, RejectsInvalidUtf8Input) {
  EXPECT_THROW(tokenizer("gpt-neox-20b").encode("ab\xFF"), Error);
  EXPECT_THROW(tokenizer("llama-hymba").encode("\xC3"), Error);
}

TEST(TokenizerApi, CopiesShareTheData) {
  Tokenizer copy = tokenizer("gpt-neox-20b");
  EXPECT_EQ(copy.encode("Hello world"), (Ids{12092, 1533}));
}

// --- bad files -------------------------------------------------------------------------------

std::string write_tokenizer(const std::string& tag, const std::string& json) {
  auto path = fresh_temp_dir(tag) / "tokenizer.json";
  write_file(path, json);
  return path.string();
}

void expect_load_error(const std::string& path, const std::string& needle) {
  try {
    Tokenizer::load(path);
    ADD_FAILURE() << "loading " << path << " did not throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

const char* kTinyBpe = R"({
  "added_tokens": [],
  "normalizer": NORMALIZER,
  "pre_tokenizer": null,
  "post_processor": null,
  "decoder": null,
  "model": {"type": MODEL_TYPE, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": MERGES}
})";

std::string tiny(std::string normalizer = "null", std::string type = "\"BPE\"",
                 std::string merges = "[\"a b\"]") {
  std::string s = kTinyBpe;
  auto sub = [&](const std::string& key, const std::string& value) {
    s.replace(s.find(key), key.size(), value);
  };
  sub("NORMALIZER", normalizer);
  sub("MODEL_TYPE", type);
  sub("MERGES", merges);
  return s;
}

TEST(TokenizerErrors, TinyValidFileLoads) {
  // The template below is valid: each error test changes one thing.
  Tokenizer tk = Tokenizer::load(write_tokenizer("tiny", tiny()));
  EXPECT_EQ(tk.encode("abab"), (Ids{2, 2}));
  EXPECT_EQ(tk.encode("ba"), (Ids{1, 0}));
  // No unk token: an unknown character is dropped before merging, so "a" and "b" then merge.
  EXPECT_EQ(tk.encode("acb"), (Ids{2}));
}

TEST(TokenizerErrors, NonexistentFile) {
  expect_load_error(repo_path("data/tokenizers/does-not-exist.json"), "cannot open");
  expect_load_error(repo_path("data/tokenizers"), "directory");
}

TEST(TokenizerErrors, MalformedJson) {
  expect_load_error(write_tokenizer("malformed", "{\"model\": {\"type\": \"BPE\", "), "JSON");
  expect_load_error(write_tokenizer("empty", ""), "JSON");
  expect_load_error(write_tokenizer("array", "[1, 2]"), "not an object");
  expect_load_error(write_tokenizer("nomodel", "{\"version\": \"1.0\"}"), "model");
}

TEST(TokenizerErrors, UnsupportedModelType) {
  expect_load_error(write_tokenizer("wordpiece", tiny("null", "\"WordPiece\"")), "WordPiece");
  expect_load_error(write_tokenizer("unigram", tiny("null", "\"Unigram\"")), "Unigram");
}

TEST(TokenizerErrors, UnsupportedComponentsAndBadMerges) {
  expect_load_error(write_tokenizer("lowercase", tiny("{\"type\": \"Lowercase\"}")), "Lowercase");
  expect_load_error(write_tokenizer("badmerge", tiny("null", "\"BPE\"", "[\"a c\"]")), "merge");
  expect_load_error(write_tokenizer("badmerge2", tiny("null", "\"BPE\"", "[\"abc\"]")), "merge");
  expect_load_error(write_tokenizer("badtype", tiny("null", "\"BPE\"", "[7]")), "merge");
  expect_load_error(
      write_tokenizer("badvocab", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, "
                                  "\"merges\": []}}"),
      "vocab");
}

// A tokenizer.json around a vocabulary and merges given as JSON text.
std::string bpe_file(const std::string& vocab, const std::string& merges = "[]",
                     const std::string& rest = "") {
  return "{" + rest + "\"model\": {\"type\": \"BPE\", \"vocab\": " + vocab +
         ", \"merges\": " + merges + "}}";
}

// Merges that name tokens outside the vocabulary, as either half or as their result.
TEST(TokenizerErrors, MergesOfTokensNotInTheVocabulary) {
  const std::string vocab = R"({"a": 0, "b": 1, "ab": 2})";
  expect_load_error(write_tokenizer("m1", bpe_file(vocab, R"(["a b", "a x"])")),
                    "merge #1 (\"a\", \"x\") uses a token missing from the vocab");
  expect_load_error(write_tokenizer("m2", bpe_file(R"({"a": 0, "b": 1})", R"(["a b"])")),
                    "merge #0 (\"a\", \"b\") uses a token missing from the vocab");
  expect_load_error(write_tokenizer("m3", bpe_file(vocab, R"([["y", "b"]])")),
                    "merge #0 (\"y\", \"b\")");
  expect_load_error(write_tokenizer("m4", bpe_file(vocab, R"([["a"]])")), "merge #0 is neither");
  expect_load_error(write_tokenizer("m5", bpe_file(vocab, R"([["a", 1]])")), "merge #0 is neither");
}

// Two tokens of one id (decoding it would depend on hash order), ids beyond 2^30 or negative,
// floats and integers that wrap: one error naming the token.
TEST(TokenizerErrors, DuplicateAndHugeIds) {
  expect_load_error(write_tokenizer("dup", bpe_file(R"({"a": 0, "b": 1, "c": 1})")),
                    "vocab entries \"b\" and \"c\" have the same id 1");
  expect_load_error(write_tokenizer("big", bpe_file(R"({"a": 0, "b": 1073741825})")),
                    "vocab entry \"b\" has id 1073741825 out of range");
  expect_load_error(write_tokenizer("wrap", bpe_file(R"({"a": 0, "b": 18446744073709551615})")),
                    "vocab entry \"b\" has id 18446744073709551615 out of range");
  expect_load_error(write_tokenizer("neg", bpe_file(R"({"a": -1})")), "vocab entry \"a\" has id -1");
  expect_load_error(write_tokenizer("flt", bpe_file(R"({"a": 0.5})")), "vocab entry \"a\" has a non-integer id");
  // Within range but so sparse that the id table would be mostly holes.
  expect_load_error(write_tokenizer("sparse", bpe_file(R"({"a": 0, "b": 1073741824})")),
                    "too sparse");
  const std::string added = R"("added_tokens": [{"id": ID, "content": "<x>", "special": true}], )";
  for (const char* id : {"-1", "1073741825", "18446744073709551615"}) {
    std::string a = added;
    a.replace(a.find("ID"), 2, id);
    expect_load_error(write_tokenizer("added", bpe_file(R"({"a": 0})", "[]", a)),
                      "added token \"<x>\" \"id\" must be an integer from 0 to 1073741824");
  }
  std::string a = added;
  a.replace(a.find("ID"), 2, "2.5");
  expect_load_error(write_tokenizer("added", bpe_file(R"({"a": 0})", "[]", a)), "integer \"id\"");
  // TemplateProcessing ids: get<std::vector<int32_t>>() cast floats and wrapped large integers.
  const std::string post =
      R"("post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", )"
      R"("type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": )"
      R"({"id": "<s>", "ids": [IDS], "tokens": ["<s>"]}}}, )";
  for (const char* ids : {"4294967296", "1e30", "-3"}) {
    std::string p = post;
    p.replace(p.find("IDS"), 3, ids);
    expect_load_error(write_tokenizer("post", bpe_file(R"({"a": 0, "<s>": 1})", "[]", p)),
                      "TemplateProcessing special token \"<s>\" id must be an integer");
  }
  std::string p = post;
  p.replace(p.find("IDS"), 3, "1");
  EXPECT_EQ(Tokenizer::load(write_tokenizer("post-ok", bpe_file(R"({"a": 0, "<s>": 1})", "[]", p)))
                .encode("a", true),
            (Ids{1, 0}));
  // Strip decoder counts: a float beyond size_t was a cast with undefined behaviour.
  const std::string strip = R"("decoder": {"type": "Strip", "content": " ", "start": 1e30, "stop": 0}, )";
  expect_load_error(write_tokenizer("strip", bpe_file(R"({"a": 0})", "[]", strip)),
                    "Strip decoder \"start\" must be an integer");
}

// nlohmann refuses ill-formed UTF-8 and lone surrogate escapes in any string of the file (vocab
// keys included); the text to encode is checked too (RejectsInvalidUtf8Input).
TEST(TokenizerErrors, InvalidUtf8InTheVocabulary) {
  expect_load_error(write_tokenizer("utf8", bpe_file("{\"a\xff\": 0}")), "malformed tokenizer JSON");
  expect_load_error(write_tokenizer("surrogate", bpe_file(R"({"\ud800": 0})")), "malformed tokenizer JSON");
  expect_load_error(write_tokenizer("overlong", bpe_file("{\"\xc0\xaf\": 0}")), "malformed tokenizer JSON");
  expect_load_error(
      write_tokenizer("added-utf8", bpe_file(R"({"a": 0})", "[]",
                                             "\"added_tokens\": [{\"id\": 1, \"content\": \"\xed\xa0\x80\"}], ")),
      "malformed tokenizer JSON");
}

TEST(TokenizerErrors, DeeplyNestedFilesAreOneFastError) {
  const std::string deep(100000, '[');
  const auto start = std::chrono::steady_clock::now();
  expect_load_error(write_tokenizer("deep", "{\"normalizer\": " + deep), "nested deeper than");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), test::time_limit(1.0));
}

TEST(TokenizerAddedTokens, LstripRstripSingleWord) {
  // vocab: a b c ' '; added: <l> (lstrip), <r> (rstrip), ba (single_word), all non-special.
  const std::string json = R"({
    "added_tokens": [
      {"id": 4, "content": "<l>", "single_word": false, "lstrip": true, "rstrip": false,
       "normalized": false, "special": false},
      {"id": 5, "content": "<r>", "single_word": false, "lstrip": false, "rstrip": true,
       "normalized": false, "special": false},
      {"id": 6, "content": "ba", "single_word": true, "lstrip": false, "rstrip": false,
       "normalized": false, "special": true}
    ],
    "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, " ": 3}, "merges": []}
  })";
  Tokenizer tk = Tokenizer::load(write_tokenizer("flags", json));
  EXPECT_EQ(tk.vocab_size(), 7);
  EXPECT_EQ(tk.encode("a  <l>b"), (Ids{0, 4, 1}));     // spaces before <l> are absorbed
  EXPECT_EQ(tk.encode("a<r>  b"), (Ids{0, 5, 1}));     // spaces after <r> are absorbed
  EXPECT_EQ(tk.encode("a <r>b <l>"), (Ids{0, 3, 5, 1, 4}));
  EXPECT_EQ(tk.encode("c ba c"), (Ids{2, 3, 6, 3, 2}));  // a whole word: matched
  EXPECT_EQ(tk.encode("cba"), (Ids{2, 1, 0}));           // inside a word: not matched
  EXPECT_EQ(tk.encode("ba."), (Ids{6}));                 // '.' is not a word character (dropped)
  EXPECT_EQ(tk.decode(Ids{2, 6}), "c ba");               // no decoder: tokens joined by ' '
  EXPECT_EQ(tk.decode(Ids{2, 6}, true), "c");
}

// --- internal pieces -------------------------------------------------------------------------

std::vector<std::string> split(std::string_view text) {
  std::vector<std::pair<uint32_t, uint32_t>> r;
  tok::gpt2_split(text, r);
  std::vector<std::string> out;
  for (auto [b, e] : r) out.emplace_back(text.substr(b, e - b));
  return out;
}

using Strs = std::vector<std::string>;

TEST(Gpt2Split, FollowsTheRegexAlternation) {
  EXPECT_EQ(split("don't stop"), (Strs{"don", "'t", " stop"}));
  EXPECT_EQ(split("I'M it's"), (Strs{"I", "'", "M", " it", "'s"}));
  EXPECT_EQ(split("a  b"), (Strs{"a", " ", " b"}));                 // \s+(?!\S) leaves one
  EXPECT_EQ(split("a \n\tb"), (Strs{"a", " \n", "\t", "b"}));
  EXPECT_EQ(split("x\n\n"), (Strs{"x", "\n\n"}));                    // whitespace at the end
  EXPECT_EQ(split("3.14 x123"), (Strs{"3", ".", "14", " x", "123"}));
  EXPECT_EQ(split(" ...!? ok"), (Strs{" ...!?", " ok"}));
  EXPECT_EQ(split("naïve 東京"), (Strs{"naïve", " 東京"}));
  EXPECT_EQ(split("e\u0301"), (Strs{"e", "\u0301"}));  // a combining mark is not \p{L}
  EXPECT_EQ(split("\u00a0x"), (Strs{"\u00a0", "x"}));  // NBSP is \s but not the optional ' '
  EXPECT_EQ(split("Ⅻ²"), (Strs{"Ⅻ²"}));                // Nl and No are \p{N}
  EXPECT_EQ(split(""), Strs{});
}

TEST(Utf8Lossy, ReplacesMaximalSubparts) {
  EXPECT_EQ(tok::utf8_lossy("ok"), "ok");
  EXPECT_EQ(tok::utf8_lossy("\xF0\x9F\x9A"), "\uFFFD");          // truncated 4-byte: one
  EXPECT_EQ(tok::utf8_lossy("\xE0\x80"), "\uFFFD\uFFFD");        // bad 2nd byte: each alone
  EXPECT_EQ(tok::utf8_lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate
  EXPECT_EQ(tok::utf8_lossy("a\xC3(b"), "a\uFFFD(b");
  EXPECT_EQ(tok::utf8_lossy("\xFF\xC0\xAF"), "\uFFFD\uFFFD\uFFFD");
}


// The byte-level tokenizer synth writes: one token per byte, the id the byte's value, and any
// valid UTF-8 text decodes back to itself (fixed seed, every byte value in the text).
TEST(TokenizerApi, ByteLevelTokenizerIsOneTokenPerByte) {
  const Tokenizer tok = Tokenizer::from_json_text(byte_level_tokenizer_json(), "byte-level");
  EXPECT_EQ(tok.vocab_size(), 256);
  std::string text = "Hello, world! Ünïcödé — 12345\n\ttabs  and   spaces";
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t cp = std::uniform_int_distribution<uint32_t>(1, 0x10FFFF)(rng);
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string u8;
    if (cp < 0x80) {
      u8 = static_cast<char>(cp);
    } else if (cp < 0x800) {
      u8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    } else if (cp < 0x10000) {
      u8 = {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
            static_cast<char>(0x80 | (cp & 0x3F))};
    } else {
      u8 = {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
            static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    text += u8;
    if (i % 7 == 0) text += ' ';
  }
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < ids.size(); ++i)
    ASSERT_EQ(ids[i], static_cast<int32_t>(static_cast<unsigned char>(text[i]))) << "byte " << i;
  EXPECT_EQ(tok.decode(ids), text);
}
}  // namespace
}  // namespace kllens::test
