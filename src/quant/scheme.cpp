#include "quant/scheme.h"

#include <cctype>
#include <charconv>
#include <vector>

#include "core/error.h"
#include "quant/formats.h"

namespace kllens {

namespace {

constexpr int kMaxGroup = 1 << 20;

constexpr const char* kAcceptedForms =
    "accepted forms: intB[:gG][:sym|asym][:s16|s32] with B in 2..8 and G = 0 (one group per "
    "row, the default) or a power of two >= 8 (e.g. int4:g32, int8:g0:asym:s32; defaults sym "
    "and s16), a ggml block format (q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K q6_K iq4_nl "
    "iq4_xs; q4_K, q5_K and q6_K also as '<name>:refined', kllens' quantizer for ggml's layout), or one of bf16, f16, f32";

[[noreturn]] void bad_scheme(std::string_view text, std::string_view why) {
  throw UsageError(fmt::format("invalid quantization scheme '{}': {}; {}", text, why,
                               kAcceptedForms));
}

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Parses a non-negative decimal integer occupying all of `s`.
bool parse_uint(std::string_view s, int& out) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

QuantScheme keep_scheme(QuantFormat format, int bits) {
  QuantScheme s;
  s.format = format;
  s.bits = bits;
  s.group_size = 0;
  s.symmetric = true;
  s.scale_f16 = false;
  return s;
}

QuantScheme block_scheme(const BlockFormatTraits& t) {
  QuantScheme s;
  s.format = t.format;
  s.bits = t.bits;
  s.group_size = t.block_elems;
  s.symmetric = true;
  s.scale_f16 = true;
  return s;
}

}  // namespace

QuantScheme QuantScheme::make_int(int bits, int group_size, bool symmetric, bool scale_f16) {
  KLLENS_CHECK(bits >= 2 && bits <= 8, "int scheme bits {} not in 2..8", bits);
  KLLENS_CHECK(group_size == 0 || (group_size >= 8 && group_size <= kMaxGroup &&
                                   is_power_of_two(group_size)),
               "int scheme group size {} is neither 0 nor a power of two >= 8", group_size);
  QuantScheme s;
  s.format = QuantFormat::kInt;
  s.bits = bits;
  s.group_size = group_size;
  s.symmetric = symmetric;
  s.scale_f16 = scale_f16;
  return s;
}

QuantScheme QuantScheme::parse(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string_view t = lower;
  if (const BlockFormatTraits* b = block_traits_by_name(t)) return block_scheme(*b);
  if (const size_t colon = t.find(':'); colon != std::string_view::npos) {
    if (const BlockFormatTraits* b = block_traits_by_name(t.substr(0, colon))) {
      if (t.substr(colon + 1) != "refined")
        bad_scheme(text, fmt::format("unknown variant '{}' of {} (the only one is ':refined')",
                                     t.substr(colon + 1), b->name));
      if (!b->quantize_row_refined)
        bad_scheme(text, fmt::format("{} has no refined quantizer (q4_K, q5_K and q6_K have one)",
                                     b->name));
      QuantScheme s = block_scheme(*b);
      s.refined = true;
      return s;
    }
  }
  if (t == "bf16") return keep_scheme(QuantFormat::kBF16, 16);
  if (t == "f16") return keep_scheme(QuantFormat::kF16, 16);
  if (t == "f32") return keep_scheme(QuantFormat::kF32, 32);
  if (!t.starts_with("int")) bad_scheme(text, "unknown scheme name");

  const auto parts = split(t, ':');
  int bits = 0;
  if (!parse_uint(parts[0].substr(3), bits)) bad_scheme(text, "expected a bit count after 'int'");
  if (bits < 2 || bits > 8) bad_scheme(text, fmt::format("{} bits is not in 2..8", bits));

  int group = 0;
  bool symmetric = true, scale_f16 = true;
  bool seen_group = false, seen_sym = false, seen_scale = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string_view p = parts[i];
    if (p.starts_with("g")) {
      if (seen_group) bad_scheme(text, "the group size is given twice");
      seen_group = true;
      if (!parse_uint(p.substr(1), group)) bad_scheme(text, fmt::format("bad group '{}'", p));
      if (group != 0 && (group < 8 || group > kMaxGroup || !is_power_of_two(group)))
        bad_scheme(text, fmt::format("group size {} is neither 0 nor a power of two >= 8", group));
    } else if (p == "sym" || p == "asym") {
      if (seen_sym) bad_scheme(text, "sym/asym is given twice");
      seen_sym = true;
      symmetric = p == "sym";
    } else if (p == "s16" || p == "s32") {
      if (seen_scale) bad_scheme(text, "the scale type is given twice");
      seen_scale = true;
      scale_f16 = p == "s16";
    } else {
      bad_scheme(text, fmt::format("unknown field '{}'", p));
    }
  }
  return make_int(bits, group, symmetric, scale_f16);
}

std::string QuantScheme::to_string() const {
  switch (format) {
    case QuantFormat::kInt:
      return fmt::format("int{}:g{}:{}:{}", bits, group_size, symmetric ? "sym" : "asym",
                         scale_f16 ? "s16" : "s32");
    case QuantFormat::kBF16: return "bf16";
    case QuantFormat::kF16: return "f16";
    case QuantFormat::kF32: return "f32";
    default: break;
  }
  if (const BlockFormatTraits* b = block_traits(format))
    return refined ? fmt::format("{}:refined", b->name) : std::string(b->name);
  KLLENS_CHECK(false, "unknown quant format {}", static_cast<int>(format));
}

int64_t QuantScheme::effective_group(int64_t cols) const {
  if (const BlockFormatTraits* b = block_traits(format)) return b->block_elems;
  if (is_int() && group_size > 0 && cols % group_size == 0) return group_size;
  return cols;
}

int64_t QuantScheme::groups_per_row(int64_t cols) const {
  if (is_keep() || cols <= 0) return 0;
  return cols / effective_group(cols);
}

bool QuantScheme::supports(int64_t cols) const {
  const BlockFormatTraits* b = block_traits(format);
  return !b || cols % b->block_elems == 0;
}

void QuantScheme::check_shape(int64_t rows, int64_t cols, std::string_view what) const {
  if (rows < 0 || cols < 0) fail("{} has a negative shape [{}, {}]", what, rows, cols);
  if (!supports(cols))
    fail("{} [{}, {}] cannot be stored as {}: its rows have {} elements, which is not a multiple "
         "of the {}-element block (llama.cpp requires whole blocks; use another format, an intB "
         "scheme, or keep this tensor in bf16/f16/f32)",
         what, rows, cols, to_string(), cols, effective_group(0));
}

int64_t QuantScheme::storage_bytes(int64_t rows, int64_t cols) const {
  check_shape(rows, cols);
  if (const BlockFormatTraits* b = block_traits(format))
    return rows * (cols / b->block_elems) * b->block_bytes;
  switch (format) {
    case QuantFormat::kBF16:
    case QuantFormat::kF16: return rows * cols * 2;
    case QuantFormat::kF32: return rows * cols * 4;
    default: break;
  }
  const int64_t groups = rows * groups_per_row(cols);
  const int64_t code_bytes = (rows * cols * bits + 7) / 8;
  return code_bytes + groups * (scale_f16 ? 2 : 4) + (symmetric ? 0 : groups);
}

double QuantScheme::bits_per_weight(int64_t cols) const {
  check_shape(1, cols);
  if (const BlockFormatTraits* b = block_traits(format))
    return 8.0 * b->block_bytes / b->block_elems;
  switch (format) {
    case QuantFormat::kBF16:
    case QuantFormat::kF16: return 16;
    case QuantFormat::kF32: return 32;
    default: break;
  }
  if (cols == 0) return bits;
  const double per_group_bits = (scale_f16 ? 16 : 32) + (symmetric ? 0 : 8);
  return bits + per_group_bits * static_cast<double>(groups_per_row(cols)) /
                    static_cast<double>(cols);
}

}  // namespace kllens
