#include "io/json_file.h"


#include "core/error.h"
#include "io/durable_file.h"
#include "io/read_file.h"

namespace kllens {

void check_json_depth(std::string_view text, const std::string& what) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        fail("{}: JSON nested deeper than {} levels (at byte {})", what, kMaxJsonDepth, i);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_text(read_file(path), path);
}

nlohmann::json parse_json_text(std::string_view text, const std::string& what) {
  check_json_depth(text, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed JSON: {}", what, e.what());
  }
}

int64_t json_integer(const nlohmann::json& v, const std::string& what, int64_t min, int64_t max) {
  bool ok = false;
  int64_t i = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ok = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    i = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    ok = true;
    i = v.get<int64_t>();
  }
  if (!ok || i < min || i > max)
    fail("{} must be an integer from {} to {}, got {}", what, min, max, v.dump());
  return i;
}

void write_json_file_atomic(const std::string& path, const nlohmann::json& j, int indent) {
  write_file_durably(path, j.dump(indent) + "\n");
}

}  // namespace kllens
