// JSON files the tool reads (config.json, tokenizer.json, safetensors headers, plans, sensitivity
// reports, the JSON inside GGUF keys) and writes: one place for the error messages, the nesting
// limit and for writing atomically.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kllens {

// The deepest nesting of arrays and objects kllens parses. nlohmann's parser itself is iterative,
// but copying, comparing and dump() of a value recurse once per level, so 100,000 nested '['
// (a few hundred kilobytes) would overflow the stack far from the parser. serde_json, which
// Hugging Face's Rust readers of tokenizer.json and safetensors headers use, stops at 128 too;
// no published file comes near it.
inline constexpr int kMaxJsonDepth = 128;

// Error "WHAT: JSON nested deeper than 128 levels (at byte N)" when text opens more arrays and
// objects (outside strings) than kMaxJsonDepth before closing them. One linear pass; malformed
// text is left to the parser.
void check_json_depth(std::string_view text, const std::string& what);

// Parses the file; Error "PATH: cannot open", "PATH: malformed JSON: ..." or the depth error.
nlohmann::json read_json_file(const std::string& path);
// The same for text already in memory: Error "WHAT: malformed JSON: ..." or the depth error.
// Every JSON text kllens reads goes through one of the two, or through check_json_depth first
// where the reader keeps messages of its own.
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
