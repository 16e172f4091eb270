// JSON files the tool writes and reads back (plans, sensitivity reports): one place for the
// error messages and for writing atomically.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kllens {

// Parses the file; Error "PATH: cannot open" or "PATH: malformed JSON: ...".
nlohmann::json read_json_file(const std::string& path);
// The same for text already in memory: Error "WHAT: malformed JSON: ...".
nlohmann::json parse_json_text(std::string_view text, const std::string& what);

// v as an integer from min to max; Error "WHAT must be an integer from MIN to MAX, got V"
// otherwise. (nlohmann's get<int64_t>() also takes a float, casting it, which is undefined
// behaviour beyond int64_t's range, and wraps an unsigned beyond it.)
int64_t json_integer(const nlohmann::json& v, const std::string& what,
                     int64_t min = std::numeric_limits<int64_t>::min(),
                     int64_t max = std::numeric_limits<int64_t>::max());

// Writes j.dump(indent) and a newline durably (io/durable_file.h): a reader, or a run after a
// crash, sees the old file or the whole new one, never half. Error when it cannot be written.
void write_json_file_atomic(const std::string& path, const nlohmann::json& j, int indent = 1);

}  // namespace kllens
