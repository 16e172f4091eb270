#include "export/gguf_vocab.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace kllens {

namespace {

constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

// Whether the pre-tokenizer is (only) ByteLevel with GPT-2's split regex, which llama.cpp's
// "gpt-2" pre-tokenizer type reproduces.
bool is_gpt2_byte_level(const nlohmann::json& pre) {
  if (pre.is_object() && pre.value("type", "") == "ByteLevel")
    return pre.value("use_regex", true);
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 1)
    return is_gpt2_byte_level(pre["pretokenizers"][0]);
  return false;
}

std::optional<uint32_t> config_id(const nlohmann::json& config, const char* key, int64_t n_vocab) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const auto& v = config[key];
  int64_t id = -1;
  if (v.is_number_integer()) id = v.get<int64_t>();
  else if (v.is_array() && !v.empty() && v[0].is_number_integer()) id = v[0].get<int64_t>();
  if (id < 0 || id >= n_vocab) return std::nullopt;
  return static_cast<uint32_t>(id);
}

}  // namespace

GgufVocab read_gguf_vocab(const std::string& path, int64_t n_vocab, const nlohmann::json& config) {
  // The kllens tokenizer validates the file (and knows which special token the post-processor
  // adds); the vocabulary and merges themselves are read from the JSON as written.
  const Tokenizer tok = Tokenizer::load(path);
  const nlohmann::json j = read_json(path);
  const auto& model = j.at("model");
  if (model.value("type", "") != "BPE")
    fail("{}: only BPE tokenizers can be written as llama.cpp's \"gpt2\" vocabulary (this one is "
         "{})",
         path, model.value("type", "?"));

  GgufVocab v;
  if (tok.vocab_size() > n_vocab)
    fail("{}: the tokenizer has ids up to {} but the model's embedding has {} rows; llama.cpp "
         "needs one token per row",
         path, tok.vocab_size() - 1, n_vocab);
  v.tokens.resize(static_cast<size_t>(n_vocab));
  v.token_types.assign(static_cast<size_t>(n_vocab), kUnused);
  std::vector<bool> set(static_cast<size_t>(n_vocab), false);
  for (const auto& [token, id_json] : model.at("vocab").items()) {
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= n_vocab) fail("{}: token id {} is outside [0, {})", path, id, n_vocab);
    v.tokens[static_cast<size_t>(id)] = token;
    v.token_types[static_cast<size_t>(id)] = kNormal;
    set[static_cast<size_t>(id)] = true;
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      const int64_t id = a.at("id").get<int64_t>();
      if (id < 0 || id >= n_vocab) fail("{}: added token id {} is outside [0, {})", path, id, n_vocab);
      v.tokens[static_cast<size_t>(id)] = a.at("content").get<std::string>();
      v.token_types[static_cast<size_t>(id)] = a.value("special", false) ? kControl : kUserDefined;
      set[static_cast<size_t>(id)] = true;
    }
  }
  int64_t padded = 0;
  for (size_t i = 0; i < set.size(); ++i) {
    if (set[i]) continue;
    v.tokens[i] = fmt::format("[PAD{}]", i);
    ++padded;
  }
  if (padded > 0)
    v.notes.push_back(fmt::format("{} ids without a token are filled with \"[PAD<id>]\" unused "
                                  "tokens (as llama.cpp's converter does)",
                                  padded));

  for (const auto& m : model.at("merges")) {
    if (m.is_string()) v.merges.push_back(m.get<std::string>());
    else v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }

  v.bos = config_id(config, "bos_token_id", n_vocab);
  v.eos = config_id(config, "eos_token_id", n_vocab);
  v.pad = config_id(config, "pad_token_id", n_vocab);
  if (!v.bos && tok.bos_id()) v.bos = static_cast<uint32_t>(*tok.bos_id());
  if (!v.eos && tok.eos_id()) v.eos = static_cast<uint32_t>(*tok.eos_id());
  if (model.contains("unk_token") && model["unk_token"].is_string())
    if (auto id = tok.token_to_id(model["unk_token"].get<std::string>()))
      v.unk = static_cast<uint32_t>(*id);
  v.add_bos = tok.bos_id().has_value();

  if (j.contains("pre_tokenizer") && is_gpt2_byte_level(j["pre_tokenizer"])) {
    v.pre = "gpt-2";
  } else {
    v.notes.push_back("the pre-tokenizer is not plain byte-level GPT-2: tokenizer.ggml.pre is "
                      "not written and llama.cpp will use its 'default' pre-tokenizer");
  }
  if (j.contains("normalizer") && !j["normalizer"].is_null())
    v.notes.push_back(fmt::format("llama.cpp's gpt2 tokenizer applies no normalizer; this "
                                  "tokenizer's {} normalizer is not carried over",
                                  j["normalizer"].value("type", "?")));
  return v;
}

void add_vocab_keys(gguf::Writer& w, const GgufVocab& v) {
  w.set("tokenizer.ggml.model", std::string("gpt2"));
  if (!v.pre.empty()) w.set("tokenizer.ggml.pre", v.pre);
  w.set("tokenizer.ggml.tokens", v.tokens);
  w.set("tokenizer.ggml.token_type", v.token_types);
  w.set("tokenizer.ggml.merges", v.merges);
  if (v.bos) w.set("tokenizer.ggml.bos_token_id", *v.bos);
  if (v.eos) w.set("tokenizer.ggml.eos_token_id", *v.eos);
  if (v.unk) w.set("tokenizer.ggml.unknown_token_id", *v.unk);
  if (v.pad) w.set("tokenizer.ggml.padding_token_id", *v.pad);
  w.set("tokenizer.ggml.add_bos_token", v.add_bos);
}

}  // namespace kllens
