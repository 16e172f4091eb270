#include "export/gguf_vocab.h"

#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"
#include "io/read_file.h"
#include "tokenizer/tokenizer.h"

namespace kllens {

namespace {

constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

nlohmann::json read_json(const std::string& path) {
  const std::string text = read_file(path);
  check_json_depth(text, path);
  try {
    return nlohmann::json::parse(text);
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
  // Not model.value("type", ""): a "type" that is not a string (which Tokenizer::load reads as a
  // BPE model when there are merges) would throw nlohmann's type_error past every caller.
  const std::string type =
      model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>() : "?";
  if (type != "BPE")
    fail("{}: only BPE tokenizers can be written as llama.cpp's \"gpt2\" vocabulary (this one is "
         "{})",
         path, type);

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

nlohmann::json tokenizer_json_from_llama_keys(const gguf::File& file) {
  using nlohmann::json;
  const std::string& path = file.path();
  const gguf::Value* model = file.find("tokenizer.ggml.model");
  if (!model)
    fail("{}: the file has no tokenizer: neither kllens.tokenizer_json nor llama.cpp's "
         "tokenizer.ggml.model is there",
         path);
  const std::string* model_name = model->get_if<std::string>();
  if (!model_name) fail("{}: tokenizer.ggml.model is not a string", path);
  if (*model_name != "gpt2")
    fail("{}: tokenizer.ggml.model is '{}': kllens rebuilds only llama.cpp's \"gpt2\" "
         "tokenizers (byte-level BPE) from a GGUF file's keys",
         path, *model_name);
  const gguf::Value* pre = file.find("tokenizer.ggml.pre");
  if (!pre)
    fail("{}: tokenizer.ggml.pre is missing: llama.cpp then pre-tokenizes with its 'default' BPE "
         "regexes, which a byte-level tokenizer.json cannot express; kllens refuses rather than "
         "tokenize differently",
         path);
  const std::string* pre_name = pre->get_if<std::string>();
  if (!pre_name) fail("{}: tokenizer.ggml.pre is not a string", path);
  // llama-vocab.cpp splits these with exactly GPT-2's regex, which is what HF's ByteLevel
  // pre-tokenizer (use_regex) does.
  if (*pre_name != "gpt-2" && *pre_name != "mpt" && *pre_name != "olmo")
    fail("{}: tokenizer.ggml.pre is '{}': kllens can rebuild only the pre-tokenizers that split "
         "with GPT-2's regex (gpt-2, mpt, olmo) and refuses rather than tokenize differently "
         "from llama.cpp",
         path, *pre_name);
  const auto& tokens = file.get_as<std::vector<std::string>>("tokenizer.ggml.tokens");
  if (tokens.empty()) fail("{}: tokenizer.ggml.tokens is empty", path);
  std::vector<int32_t> types(tokens.size(), kNormal);
  if (file.find("tokenizer.ggml.token_type")) {
    types = file.get_as<std::vector<int32_t>>("tokenizer.ggml.token_type");
    if (types.size() != tokens.size())
      fail("{}: tokenizer.ggml.token_type has {} entries for {} tokenizer.ggml.tokens", path,
           types.size(), tokens.size());
  }
  // The scores are one f32 per token where a file has them (a gpt2 vocabulary needs none, and
  // kllens reads none): llama.cpp takes the array's data as floats and reads one per token, so
  // a file with other scores is malformed rather than merely unused.
  if (file.find("tokenizer.ggml.scores")) {
    const auto& scores = file.get_as<std::vector<float>>("tokenizer.ggml.scores");
    if (scores.size() != tokens.size())
      fail("{}: tokenizer.ggml.scores has {} entries for {} tokenizer.ggml.tokens", path,
           scores.size(), tokens.size());
  }
  const auto& merges = file.get_as<std::vector<std::string>>("tokenizer.ggml.merges");

  json vocab = json::object();
  json added = json::array();
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t type = types[i];
    // 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    if (type < 0 || type > 6)
      fail("{}: tokenizer.ggml.token_type[{}] = {} is not a llama.cpp token type", path, i, type);
    if (type == kUnused) continue;
    const std::string& t = tokens[i];
    if (auto [it, fresh] = seen.emplace(t, i); !fresh)
      fail("{}: tokenizer.ggml.tokens has \"{}\" at ids {} and {}", path, t, it->second, i);
    vocab[t] = i;
    if ((type == kControl || type == kUserDefined) && !t.empty())
      added.push_back({{"id", i}, {"content", t}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", type == kControl}});
  }
  json merge_list = json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    // llama.cpp splits a merge at its first space after the first character.
    const std::string& m = merges[i];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos)
      fail("{}: tokenizer.ggml.merges[{}] \"{}\" is not two tokens separated by a space", path, i,
           m);
    merge_list.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
  }

  const auto token_id = [&](const char* key) -> std::optional<size_t> {
    const gguf::Value* v = file.find(key);
    if (!v) return std::nullopt;
    const uint32_t* id = v->get_if<uint32_t>();
    if (!id) fail("{}: {} is not a u32", path, key);
    if (*id >= tokens.size() || types[*id] == kUnused)
      fail("{}: {} = {} is not a token of tokenizer.ggml.tokens", path, key, *id);
    return *id;
  };
  const auto flag = [&](const char* key) {
    const gguf::Value* v = file.find(key);
    if (!v) return false;  // llama.cpp's default for these pre-tokenizers
    const bool* b = v->get_if<bool>();
    if (!b) fail("{}: {} is not a bool", path, key);
    return *b;
  };
  json unk = nullptr;
  if (const auto id = token_id("tokenizer.ggml.unknown_token_id")) unk = tokens[*id];
  const bool add_bos = flag("tokenizer.ggml.add_bos_token");
  const bool add_eos = flag("tokenizer.ggml.add_eos_token");
  json post = nullptr;
  if (add_bos || add_eos) {
    json single = json::array(), pair = json::array(), specials = json::object();
    const auto special = [&](const char* key, const char* flag_key) {
      const auto id = token_id(key);
      if (!id) fail("{}: {} is true but {} is missing", path, flag_key, key);
      const std::string& t = tokens[*id];
      specials[t] = {{"id", t}, {"ids", json::array({*id})}, {"tokens", json::array({t})}};
      return json{{"SpecialToken", {{"id", t}, {"type_id", 0}}}};
    };
    json bos, eos;
    if (add_bos) bos = special("tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token");
    if (add_eos) eos = special("tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_eos_token");
    const auto wrap = [&](json& out, const char* seq, int type_id) {
      if (add_bos) out.push_back(bos);
      out.push_back({{"Sequence", {{"id", seq}, {"type_id", type_id}}}});
      if (add_eos) out.push_back(eos);
    };
    wrap(single, "A", 0);
    wrap(pair, "A", 0);
    wrap(pair, "B", 1);
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair},
            {"special_tokens", specials}};
  }
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                           {"trim_offsets", true}, {"use_regex", true}};
  json decoder = byte_level;
  decoder["add_prefix_space"] = true;  // what HF writes; the ByteLevel decoder ignores it
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", post},
          {"decoder", decoder},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", unk},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

GgufTokenizerJson gguf_tokenizer_json(const gguf::File& file) {
  if (const gguf::Value* v = file.find("kllens.tokenizer_json")) {
    const std::string* text = v->get_if<std::string>();
    if (!text) fail("{}: kllens.tokenizer_json is not a string", file.path());
    return {*text, file.path() + " (kllens.tokenizer_json)"};
  }
  const nlohmann::json j = tokenizer_json_from_llama_keys(file);
  std::string text;
  try {
    text = j.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: tokenizer.ggml.tokens or merges hold invalid UTF-8: {}", file.path(), e.what());
  }
  return {std::move(text), file.path() + " (tokenizer rebuilt from tokenizer.ggml.*)"};
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
