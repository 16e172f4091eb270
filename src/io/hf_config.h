// Typed, validated access to a Hugging Face config.json. Every failure names the file and key.
// Checkpoints on the Hub were saved by many transformers versions, so families ask for a key
// under each of its historical names (get_int({"n_groups", "mamba_n_groups"}, ...)).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kllens {

// Bounds far above every published model, so that a corrupt or hostile config.json is one Error
// instead of an overflow in the families' shape arithmetic or a tensor table of billions of
// entries: every integer read through get_int (and the getters built on it) is within
// ±kMaxConfigInt, and layer and expert counts are at most kMaxConfigCount.
inline constexpr int64_t kMaxConfigInt = int64_t{1} << 24;
inline constexpr int64_t kMaxConfigCount = 1024;

// The text of a config.json as Python's json module writes it, made strict JSON: the bare tokens
// Infinity, -Infinity and NaN (transformers 4.x writes "time_step_limit": [0.0, Infinity]) become
// {"__float__": "Infinity"} and so on, the form transformers 5.x writes; so does a number beyond
// a double's range (1e400, which Python reads as inf). Strings are untouched.
std::string python_json_literals(std::string_view text);

// FOLDER/config.json; Error when the folder does not exist or the file is not there.
std::string folder_config_path(const std::string& folder);

class HfConfig {
 public:
  static HfConfig load_folder(const std::string& folder);  // reads folder/config.json
  // The same from the text of a config.json (Python literals accepted); `path` names it in errors.
  static HfConfig from_text(std::string_view text, std::string path);
  static HfConfig from_json(nlohmann::json j, std::string path);

  const std::string& path() const { return path_; }
  const nlohmann::json& json() const { return json_; }
  bool has(const std::string& key) const;

  std::string model_type() const;  // required "model_type"
  int64_t get_int(const std::string& key) const;  // required
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;  // required list of integers
  // A required value that must be a positive integer (dimensions, counts), at most max.
  int64_t get_positive(const std::string& key, int64_t max = kMaxConfigInt) const;
  // Python's int(value) for a dimension the config implies through key (int(expand * hidden)):
  // Error unless it is within 0..kMaxConfigInt (a double outside int64_t is undefined to cast).
  int64_t int_dimension(const std::string& key, double value) const;
  // First key present wins; fails naming all keys when none is.
  int64_t get_int_any(std::initializer_list<const char*> keys) const;
  std::optional<double> find_float(const std::string& key) const;

  [[noreturn]] void invalid(const std::string& key, const std::string& why) const;

 private:
  nlohmann::json json_;
  std::string path_;
};

}  // namespace kllens
