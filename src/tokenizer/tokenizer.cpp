#include "tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/json_file.h"
#include "io/read_file.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/text.h"

namespace kllens {

using nlohmann::json;

namespace {

struct NormStep {
  enum Kind { Nfc, Nfd, Nfkc, Nfkd, Prepend, Replace } kind;
  std::string a;  // Prepend: the prefix; Replace: the pattern
  std::string b;  // Replace: the replacement
};

struct PreTokenizer {
  bool byte_level = false;
  bool add_prefix_space = false;
  bool use_regex = true;
};

struct DecStep {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip } kind;
  std::string a, b;          // Replace: pattern, replacement
  char32_t strip_char = 0;   // Strip
  size_t start = 0, stop = 0;
};

// One post-processor of the chain: the "single" template (pieces of special-token ids and the
// place of the sequence). ByteLevel post-processing changes only offsets, so it has no entry.
struct Template {
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;  // special-token ids
  };
  std::vector<Item> items;
};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string type_of(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

// The string pattern of a Replace normalizer / decoder ({"String": "..."}).
std::string string_pattern(const json& j, const std::string& path, const char* what) {
  if (!j.contains("pattern") || !j["pattern"].is_object())
    fail("{}: {} Replace has no pattern", path, what);
  const json& p = j["pattern"];
  if (p.contains("Regex"))
    fail("{}: unsupported {} Replace with a Regex pattern (only String patterns)", path, what);
  if (!p.contains("String") || !p["String"].is_string())
    fail("{}: {} Replace pattern is not {{\"String\": ...}}", path, what);
  std::string s = p["String"].get<std::string>();
  if (s.empty()) fail("{}: {} Replace has an empty pattern", path, what);
  if (!j.contains("content") || !j["content"].is_string())
    fail("{}: {} Replace has no string \"content\"", path, what);
  return s;
}

void parse_normalizer(const json& j, const std::string& path, std::vector<NormStep>& out) {
  if (j.is_null()) return;
  std::string type = type_of(j);
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      fail("{}: normalizer Sequence has no \"normalizers\" list", path);
    for (const auto& n : j["normalizers"]) parse_normalizer(n, path, out);
  } else if (type == "NFC") {
    out.push_back({NormStep::Nfc, "", ""});
  } else if (type == "NFD") {
    out.push_back({NormStep::Nfd, "", ""});
  } else if (type == "NFKC") {
    out.push_back({NormStep::Nfkc, "", ""});
  } else if (type == "NFKD") {
    out.push_back({NormStep::Nfkd, "", ""});
  } else if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string())
      fail("{}: Prepend normalizer has no string \"prepend\"", path);
    out.push_back({NormStep::Prepend, j["prepend"].get<std::string>(), ""});
  } else if (type == "Replace") {
    std::string pattern = string_pattern(j, path, "normalizer");
    out.push_back({NormStep::Replace, pattern, j["content"].get<std::string>()});
  } else {
    fail("{}: unsupported normalizer type \"{}\"", path, type);
  }
}

PreTokenizer parse_pre_tokenizer(const json& j, const std::string& path) {
  PreTokenizer p;
  if (j.is_null()) return p;
  std::string type = type_of(j);
  if (type == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array() &&
      j["pretokenizers"].size() == 1)
    return parse_pre_tokenizer(j["pretokenizers"][0], path);
  if (type != "ByteLevel") fail("{}: unsupported pre_tokenizer type \"{}\"", path, type);
  p.byte_level = true;
  p.add_prefix_space = j.value("add_prefix_space", true);
  p.use_regex = j.value("use_regex", true);
  return p;
}

void parse_decoder(const json& j, const std::string& path, std::vector<DecStep>& out) {
  std::string type = type_of(j);
  DecStep d{};
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array())
      fail("{}: decoder Sequence has no \"decoders\" list", path);
    for (const auto& n : j["decoders"]) parse_decoder(n, path, out);
    return;
  } else if (type == "ByteLevel") {
    d.kind = DecStep::ByteLevel;
  } else if (type == "Replace") {
    d.kind = DecStep::Replace;
    d.a = string_pattern(j, path, "decoder");
    d.b = j["content"].get<std::string>();
  } else if (type == "ByteFallback") {
    d.kind = DecStep::ByteFallback;
  } else if (type == "Fuse") {
    d.kind = DecStep::Fuse;
  } else if (type == "Strip") {
    d.kind = DecStep::Strip;
    std::string content = j.value("content", std::string(" "));
    char32_t cp = 0;
    if (content.empty() || tok::utf8_next(content, 0, &cp) != static_cast<int>(content.size()))
      fail("{}: Strip decoder content \"{}\" is not one character", path, content);
    d.strip_char = cp;
    // Counts of characters: json_integer, since get<size_t>() casts a float (undefined beyond
    // its range) and wraps a negative.
    const auto count = [&](const char* key) {
      if (!j.contains(key)) return size_t{0};
      return static_cast<size_t>(json_integer(
          j[key], fmt::format("{}: Strip decoder \"{}\"", path, key), 0, int64_t{1} << 30));
    };
    d.start = count("start");
    d.stop = count("stop");
  } else {
    fail("{}: unsupported decoder type \"{}\"", path, type);
  }
  out.push_back(std::move(d));
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::vector<NormStep> normalizer;
  PreTokenizer pre_tokenizer;
  std::unique_ptr<tok::BpeModel> model;
  tok::AddedVocabulary added;
  std::unordered_map<int32_t, std::string> added_by_id;  // id -> content
  tok::TokenMap added_by_content;
  std::unordered_set<std::string> special_contents;
  bool has_decoder = false;
  std::vector<DecStep> decoder;
  std::vector<Template> post;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos, eos;

  std::string normalize(std::string_view s) const;
  void tokenize_segment(std::string_view s, std::vector<int32_t>& ids) const;
  const std::string* find_token(int32_t id) const;
};

std::string Tokenizer::Impl::normalize(std::string_view s) const {
  std::string out(s);
  for (const auto& step : normalizer) {
    switch (step.kind) {
      case NormStep::Nfc: out = tok::unicode_normalize(out, tok::NormForm::NFC); break;
      case NormStep::Nfd: out = tok::unicode_normalize(out, tok::NormForm::NFD); break;
      case NormStep::Nfkc: out = tok::unicode_normalize(out, tok::NormForm::NFKC); break;
      case NormStep::Nfkd: out = tok::unicode_normalize(out, tok::NormForm::NFKD); break;
      case NormStep::Prepend:
        if (!out.empty()) out.insert(0, step.a);
        break;
      case NormStep::Replace: replace_all(out, step.a, step.b); break;
    }
  }
  return out;
}

void Tokenizer::Impl::tokenize_segment(std::string_view s, std::vector<int32_t>& ids) const {
  if (s.empty()) return;
  if (!pre_tokenizer.byte_level) {
    model->tokenize(s, ids);
    return;
  }
  std::string prefixed;
  if (pre_tokenizer.add_prefix_space && s.front() != ' ') {
    prefixed.reserve(s.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(s);
    s = prefixed;
  }
  thread_local std::vector<std::pair<uint32_t, uint32_t>> ranges;
  ranges.clear();
  if (pre_tokenizer.use_regex)
    tok::gpt2_split(s, ranges);
  else
    ranges.emplace_back(0, static_cast<uint32_t>(s.size()));
  std::string mapped;
  for (auto [b, e] : ranges) {
    mapped.clear();
    tok::byte_level_append(mapped, s.substr(b, e - b));
    model->tokenize(mapped, ids);
  }
}

const std::string* Tokenizer::Impl::find_token(int32_t id) const {
  if (auto it = added_by_id.find(id); it != added_by_id.end()) return &it->second;
  return model->id_to_token(id);
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, not a tokenizer.json", path);
  return from_json_text(read_file(path), path);
}

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  check_json_depth(text, path);
  try {
    json j = json::parse(text);
    if (!j.is_object()) fail("{}: not a tokenizer.json (top level is not an object)", path);
    if (!j.contains("model") || !j["model"].is_object())
      fail("{}: not a tokenizer.json (no \"model\" object)", path);
    const json& model = j["model"];
    std::string model_type = type_of(model);
    if (model_type.empty() && model.contains("merges")) model_type = "BPE";
    if (model_type != "BPE")
      fail("{}: unsupported tokenizer model type \"{}\" (only BPE is supported)", path,
           model_type);
    impl->model = std::make_unique<tok::BpeModel>(model, path);

    if (j.contains("normalizer")) parse_normalizer(j["normalizer"], path, impl->normalizer);
    if (j.contains("pre_tokenizer"))
      impl->pre_tokenizer = parse_pre_tokenizer(j["pre_tokenizer"], path);
    if (j.contains("decoder") && !j["decoder"].is_null()) {
      impl->has_decoder = true;
      parse_decoder(j["decoder"], path, impl->decoder);
    }

    // Added tokens. An id already in the model vocabulary wins over the file's id, as HF
    // re-derives ids when it loads.
    std::vector<tok::AddedToken> added;
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) fail("{}: \"added_tokens\" is not a list", path);
      for (const auto& t : j["added_tokens"]) {
        if (!t.is_object() || !t.contains("content") || !t["content"].is_string() ||
            !t.contains("id") || !t["id"].is_number_integer())
          fail("{}: an added token lacks a string \"content\" or an integer \"id\"", path);
        tok::AddedToken a;
        a.content = t["content"].get<std::string>();
        const int64_t id = json_integer(
            t["id"], fmt::format("{}: added token \"{}\" \"id\"", path, a.content), 0,
            int64_t{1} << 30);
        if (a.content.empty()) continue;  // HF ignores empty added tokens
        if (tok::utf8_invalid_offset(a.content) != std::string::npos)
          fail("{}: added token id {} is not valid UTF-8", path, id);
        auto vocab_id = impl->model->token_to_id(a.content);
        a.id = vocab_id ? *vocab_id : static_cast<int32_t>(id);
        a.special = t.value("special", false);
        a.single_word = t.value("single_word", false);
        a.lstrip = t.value("lstrip", false);
        a.rstrip = t.value("rstrip", false);
        a.normalized = t.value("normalized", !a.special);
        added.push_back(std::move(a));
      }
    }
    int32_t max_id = impl->model->max_id();
    std::vector<std::string> normalized_contents;
    for (const auto& a : added) {
      impl->added_by_id.insert_or_assign(a.id, a.content);
      impl->added_by_content.insert_or_assign(a.content, a.id);
      if (a.special) impl->special_contents.insert(a.content);
      max_id = std::max(max_id, a.id);
      normalized_contents.push_back(a.normalized ? impl->normalize(a.content) : a.content);
    }
    impl->added.build(std::move(added), normalized_contents);
    impl->vocab_size = max_id + 1;

    // Post-processor.
    std::vector<const json*> pending;
    if (j.contains("post_processor") && !j["post_processor"].is_null())
      pending.push_back(&j["post_processor"]);
    auto id_of = [&](const std::string& token) -> int32_t {
      if (auto it = impl->added_by_content.find(token); it != impl->added_by_content.end())
        return it->second;
      if (auto id = impl->model->token_to_id(token)) return *id;
      fail("{}: post_processor special token \"{}\" is not in the vocabulary", path, token);
    };
    for (size_t k = 0; k < pending.size(); ++k) {
      const json& p = *pending[k];
      std::string type = type_of(p);
      if (type == "ByteLevel") continue;
      if (type == "Sequence") {
        if (!p.contains("processors") || !p["processors"].is_array())
          fail("{}: post_processor Sequence has no \"processors\" list", path);
        // Processed in order, after the ones already queued.
        for (const auto& q : p["processors"]) pending.push_back(&q);
        continue;
      }
      Template t;
      if (type == "TemplateProcessing") {
        if (!p.contains("single") || !p["single"].is_array())
          fail("{}: TemplateProcessing has no \"single\" template", path);
        const json& specials = p.value("special_tokens", json::object());
        for (const auto& item : p["single"]) {
          Template::Item it;
          if (item.contains("Sequence")) {
            it.is_sequence = true;
          } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
            std::string name = item["SpecialToken"]["id"].get<std::string>();
            if (!specials.contains(name) || !specials[name].contains("ids"))
              fail("{}: TemplateProcessing special token \"{}\" is not in special_tokens", path,
                   name);
            const json& ids = specials[name]["ids"];
            if (!ids.is_array())
              fail("{}: TemplateProcessing special token \"{}\" has no list of \"ids\"", path,
                   name);
            // get<std::vector<int32_t>>() would cast a float (undefined beyond int32) and wrap a
            // large integer into some other token's id.
            for (const json& id : ids)
              it.ids.push_back(static_cast<int32_t>(json_integer(
                  id, fmt::format("{}: TemplateProcessing special token \"{}\" id", path, name),
                  0, int64_t{1} << 30)));
          } else {
            fail("{}: TemplateProcessing item {} is not supported", path, item.dump());
          }
          t.items.push_back(std::move(it));
        }
      } else if (type == "BertProcessing" || type == "RobertaProcessing") {
        auto tok_of = [&](const char* key) {
          if (!p.contains(key) || !p[key].is_array() || p[key].size() != 2)
            fail("{}: {} has no [token, id] \"{}\"", path, type, key);
          return id_of(p[key][0].get<std::string>());
        };
        t.items.push_back({false, {tok_of("cls")}});
        t.items.push_back({true, {}});
        t.items.push_back({false, {tok_of("sep")}});
      } else {
        fail("{}: unsupported post_processor type \"{}\"", path, type);
      }
      impl->post.push_back(std::move(t));
    }

    // BOS / EOS: from the first template that adds tokens around the sequence.
    for (const auto& t : impl->post) {
      bool after = false;
      for (const auto& it : t.items) {
        if (it.is_sequence) {
          after = true;
        } else if (!it.ids.empty()) {
          if (!after && !impl->bos) impl->bos = it.ids.front();
          if (after && !impl->eos) impl->eos = it.ids.front();
        }
      }
    }
    if (!impl->eos) {
      for (const char* name : {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"}) {
        if (auto it = impl->added_by_content.find(std::string_view(name));
            it != impl->added_by_content.end()) {
          impl->eos = it->second;
          break;
        }
        if (auto id = impl->model->token_to_id(name)) {
          impl->eos = *id;
          break;
        }
      }
    }
  } catch (const json::exception& e) {
    fail("{}: malformed tokenizer JSON: {}", path, e.what());
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (size_t bad = tok::utf8_invalid_offset(text); bad != std::string_view::npos)
    fail("tokenizer input is not valid UTF-8 (byte 0x{:02X} at offset {})",
         static_cast<unsigned char>(text[bad]), bad);
  if (text.size() >= (size_t{1} << 31)) fail("tokenizer input of {} bytes is too long", text.size());

  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  std::vector<tok::Piece> raw, norm;
  // 1. Added tokens that match the raw text; 2. normalize what is left, piece by piece;
  // 3. added tokens that match the normalized text; 4. pre-tokenize and run the model.
  m.added.split(text, false, raw);
  for (const auto& p : raw) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    std::string normalized = m.normalize(text.substr(p.begin, p.end - p.begin));
    norm.clear();
    m.added.split(normalized, true, norm);
    std::string_view ns = normalized;
    for (const auto& q : norm) {
      if (q.id >= 0)
        ids.push_back(q.id);
      else
        m.tokenize_segment(ns.substr(q.begin, q.end - q.begin), ids);
    }
  }

  if (add_special_tokens) {
    for (const auto& t : m.post) {
      std::vector<int32_t> next;
      next.reserve(ids.size() + 4);
      for (const auto& it : t.items) {
        if (it.is_sequence)
          next.insert(next.end(), ids.begin(), ids.end());
        else
          next.insert(next.end(), it.ids.begin(), it.ids.end());
      }
      ids = std::move(next);
    }
  }
  return ids;
}

namespace {

std::vector<std::string> apply_decoder(const DecStep& d, std::vector<std::string> tokens) {
  switch (d.kind) {
    case DecStep::ByteLevel: {
      std::string bytes;
      for (const auto& t : tokens) {
        size_t mark = bytes.size();
        bool ok = true;
        for (size_t i = 0; i < t.size();) {
          char32_t cp = 0;
          int w = tok::utf8_next(t, i, &cp);
          int b = w > 0 ? tok::byte_level_byte(cp) : -1;
          if (b < 0) {
            ok = false;
            break;
          }
          bytes.push_back(static_cast<char>(b));
          i += static_cast<size_t>(w);
        }
        if (!ok) {  // a character outside the byte map: the token's own bytes
          bytes.resize(mark);
          bytes.append(t);
        }
      }
      return {tok::utf8_lossy(bytes)};
    }
    case DecStep::Replace:
      for (auto& t : tokens) replace_all(t, d.a, d.b);
      return tokens;
    case DecStep::ByteFallback: {
      std::vector<std::string> out;
      out.reserve(tokens.size());
      std::string pending;
      auto flush = [&] {
        if (pending.empty()) return;
        if (tok::utf8_invalid_offset(pending) == std::string::npos) {
          out.push_back(pending);
        } else {
          for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
        }
        pending.clear();
      };
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      for (auto& t : tokens) {
        int byte = -1;
        if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
          // u8::from_str_radix(&t[3..5], 16): two hex digits, or '+' and one.
          int h = hex(t[3]), l = hex(t[4]);
          if (h >= 0 && l >= 0)
            byte = h * 16 + l;
          else if (t[3] == '+' && l >= 0)
            byte = l;
        }
        if (byte >= 0) {
          pending.push_back(static_cast<char>(byte));
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      return out;
    }
    case DecStep::Fuse: {
      std::string all;
      for (const auto& t : tokens) all += t;
      return {all};
    }
    case DecStep::Strip: {
      for (auto& t : tokens) {
        std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
        for (size_t i = 0; i < t.size();) {
          char32_t cp = 0;
          int w = tok::utf8_next(t, i, &cp);
          if (w == 0) w = 1, cp = 0xFFFD;
          chars.emplace_back(i, cp);
          i += static_cast<size_t>(w);
        }
        size_t start_cut = 0;
        for (size_t i = 0; i < d.start && i < chars.size() && chars[i].second == d.strip_char; ++i)
          start_cut = i + 1;
        size_t stop_cut = chars.size();
        for (size_t i = 0; i < d.stop && i < chars.size(); ++i) {
          size_t index = chars.size() - i - 1;
          if (chars[index].second != d.strip_char) break;
          stop_cut = index;
        }
        if (stop_cut < start_cut) stop_cut = start_cut;
        size_t b0 = start_cut < chars.size() ? chars[start_cut].first : t.size();
        size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
        t = t.substr(b0, b1 - b0);
      }
      return tokens;
    }
  }
  return tokens;
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = m.find_token(id);
    if (t == nullptr) continue;
    if (skip_special_tokens && m.special_contents.count(*t)) continue;
    tokens.push_back(*t);
  }
  if (!m.has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  for (const auto& d : m.decoder) tokens = apply_decoder(d, std::move(tokens));
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end())
    return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const std::string* t = impl_->find_token(id)) return *t;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

std::string byte_level_tokenizer_json() {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) {
    std::string token;
    const char byte = static_cast<char>(b);
    tok::byte_level_append(token, std::string_view(&byte, 1));
    vocab[token] = b;
  }
  const nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                             {"add_prefix_space", false},
                                             {"trim_offsets", true},
                                             {"use_regex", true}};
  const nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", nlohmann::ordered_json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", nullptr},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", nlohmann::ordered_json::array()}}}};
  return j.dump(2) + "\n";
}

}  // namespace kllens
