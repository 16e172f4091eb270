#include "io/hf_config.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"
#include "io/read_file.h"

namespace kllens {

std::string python_json_literals(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];  // an escaped character
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    // Outside strings JSON has no letters but those of true, false and null, so a token that
    // starts here and spells one of Python's literals is one.
    bool replaced = false;
    for (std::string_view lit : {"-Infinity", "Infinity", "NaN"}) {
      if (text.substr(i, lit.size()) != lit) continue;
      const size_t end = i + lit.size();
      if (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_'))
        continue;
      out += fmt::format("{{\"__float__\": \"{}\"}}", lit);
      i = end - 1;
      replaced = true;
      break;
    }
    if (replaced) continue;
    // A number too large for a double: Python's json reads a float literal such as 1e400 as
    // inf, which nlohmann refuses ("number overflow", naming no key). It becomes the Infinity
    // form, so the getter that reads it names the key; an integer literal that large (an exact
    // int in Python) goes the same way, since no key takes it either.
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t end = i + 1;
      const auto in_number = [](char d) {
        return (d >= '0' && d <= '9') || d == '+' || d == '-' || d == '.' || d == 'e' || d == 'E';
      };
      while (end < text.size() && in_number(text[end])) ++end;
      const std::string number(text.substr(i, end - i));
      const double value = std::strtod(number.c_str(), nullptr);
      if (std::isinf(value))
        out += fmt::format("{{\"__float__\": \"{}\"}}", value < 0 ? "-Infinity" : "Infinity");
      else
        out += number;
      i = end - 1;
      continue;
    }
    out += c;
  }
  return out;
}

std::string folder_config_path(const std::string& folder) {
  namespace fs = std::filesystem;
  if (!fs::exists(folder)) fail("{}: no such file or directory", folder);
  const std::string path = (fs::path(folder) / "config.json").string();
  if (!fs::is_regular_file(path)) fail("{}: cannot open (is {} a Hugging Face model folder?)", path, folder);
  return path;
}

HfConfig HfConfig::load_folder(const std::string& folder) {
  const std::string path = folder_config_path(folder);
  return from_text(read_file(path), path);
}

HfConfig HfConfig::from_text(std::string_view text, std::string path) {
  nlohmann::json j;
  const std::string strict = python_json_literals(text);
  check_json_depth(strict, path);
  try {
    j = nlohmann::json::parse(strict);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed JSON: {}", path, e.what());
  }
  return from_json(std::move(j), std::move(path));
}

HfConfig HfConfig::from_json(nlohmann::json j, std::string path) {
  if (!j.is_object()) fail("{}: config is not a JSON object", path);
  HfConfig c;
  c.json_ = std::move(j);
  c.path_ = std::move(path);
  return c;
}

bool HfConfig::has(const std::string& key) const {
  return json_.contains(key) && !json_[key].is_null();
}

void HfConfig::invalid(const std::string& key, const std::string& why) const {
  fail("{}: '{}' {}", path_, key, why);
}

std::string HfConfig::model_type() const {
  if (!has("model_type") || !json_["model_type"].is_string())
    invalid("model_type", "is missing or not a string");
  return json_["model_type"].get<std::string>();
}

int64_t HfConfig::get_int(const std::string& key) const {
  if (!has(key)) invalid(key, "is missing");
  const auto& v = json_[key];
  const std::string too_large =
      fmt::format("is too large (kllens reads integers up to ±{}), got {}", kMaxConfigInt, v.dump());
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(kMaxConfigInt))
    invalid(key, too_large);
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < -kMaxConfigInt || i > kMaxConfigInt) invalid(key, too_large);
    return i;
  }
  // 4.0 is accepted as 4 (some configs are written by float arithmetic). The range check comes
  // first: casting a double outside int64_t's range is undefined behaviour.
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(d >= -static_cast<double>(kMaxConfigInt) && d <= static_cast<double>(kMaxConfigInt)))
      invalid(key, too_large);
    if (d == std::trunc(d)) return static_cast<int64_t>(d);
  }
  invalid(key, "must be an integer, got " + v.dump());
}

int64_t HfConfig::int_dimension(const std::string& key, double value) const {
  if (!(value >= 0 && value < static_cast<double>(kMaxConfigInt) + 1))
    invalid(key, fmt::format("gives a size of {}, outside 0..{}", value, kMaxConfigInt));
  return static_cast<int64_t>(value);
}

int64_t HfConfig::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

int64_t HfConfig::get_positive(const std::string& key, int64_t max) const {
  const int64_t v = get_int(key);
  if (v <= 0) invalid(key, "must be a positive integer, got " + std::to_string(v));
  if (v > max) invalid(key, fmt::format("is {}; kllens reads at most {}", v, max));
  return v;
}

int64_t HfConfig::get_int_any(std::initializer_list<const char*> keys) const {
  for (const char* k : keys)
    if (has(k)) return get_int(k);
  std::string names;
  for (const char* k : keys) names += (names.empty() ? "" : " / ") + std::string(k);
  invalid(names, "is missing");
}

double HfConfig::get_float(const std::string& key) const {
  if (!has(key)) invalid(key, "is missing");
  const auto& v = json_[key];
  if (!v.is_number()) invalid(key, "must be a number, got " + v.dump());
  return v.get<double>();
}

double HfConfig::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

std::optional<double> HfConfig::find_float(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_float(key);
}

bool HfConfig::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_[key];
  if (!v.is_boolean()) invalid(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string HfConfig::get_string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_[key];
  if (!v.is_string()) invalid(key, "must be a string, got " + v.dump());
  return v.get<std::string>();
}

std::vector<int64_t> HfConfig::get_int_list(const std::string& key) const {
  if (!has(key)) invalid(key, "is missing");
  const auto& v = json_[key];
  if (!v.is_array()) invalid(key, "must be a list of integers, got " + v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    if (!e.is_number_integer() ||
        (e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(kMaxConfigInt)) ||
        (!e.is_number_unsigned() &&
         (e.get<int64_t>() < -kMaxConfigInt || e.get<int64_t>() > kMaxConfigInt)))
      invalid(key, fmt::format("must be a list of integers within ±{}, got {}", kMaxConfigInt, v.dump()));
    out.push_back(e.get<int64_t>());
  }
  return out;
}

}  // namespace kllens
