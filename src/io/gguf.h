// GGUF v3 files (ggml's container for llama.cpp models), written and read without any model
// knowledge. Layout, all little-endian:
//   header    "GGUF", u32 version (3), u64 tensor count, u64 metadata count
//   metadata  per key: string key, u32 value type, value (string = u64 length + bytes;
//             array = u32 element type + u64 count + elements; arrays of arrays are refused,
//             as ggml's reader refuses them)
//   infos     per tensor: string name, u32 n_dims, u64 ne[n_dims] (innermost first: ne[0] is
//             the contiguous row length), u32 ggml type, u64 offset into the data section
//   padding   to general.alignment (u32, power of two; 32 when absent)
//   data      each tensor at its offset, offsets multiples of the alignment
// The writer lays tensors out contiguously in insertion order, each padded to the alignment,
// which is what ggml's own reader demands (it requires offset == running sum of the padded
// sizes). The reader accepts any aligned, in-range, non-overlapping layout, and validates every
// count, length, type, shape and offset before handing out a view: a malformed file throws
// kllens::Error naming the file and the problem, never reads out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "io/mapped_file.h"

namespace kllens::gguf {

inline constexpr uint32_t kVersion = 3;
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr size_t kMaxNameLength = 63;  // ggml: strlen(name) < GGML_MAX_NAME (64)
inline constexpr int kMaxDims = 4;           // GGML_MAX_DIMS

enum class ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
std::string_view value_type_name(ValueType type);  // "u8", ..., "string", "array"

// ggml tensor types. Only the ids still valid in GGUF files are listed (4, 5 and 31..33, 36..38
// were removed from ggml and are rejected as unknown).
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kIQ2_XXS = 16,
  kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19, kIQ4_NL = 20, kIQ3_S = 21, kIQ2_S = 22,
  kIQ4_XS = 23, kI8 = 24, kI16 = 25, kI32 = 26, kI64 = 27, kF64 = 28, kIQ1_M = 29,
  kBF16 = 30, kTQ1_0 = 34, kTQ2_0 = 35, kMXFP4 = 39,
};

struct TypeTraits {
  std::string_view name;  // ggml_type_name: "f32", "q8_0", "bf16", ...
  int64_t block_size = 1; // elements per block (along ne[0])
  int64_t type_size = 0;  // bytes per block
};
// nullopt for ids ggml does not define (or no longer accepts in files).
std::optional<TypeTraits> type_traits(uint32_t type_id);
TypeTraits type_traits(GgmlType type);
std::string_view type_name(GgmlType type);
// Bytes of a tensor of these dims; Error when ne[0] is not a multiple of the block size or the
// size overflows.
uint64_t tensor_bytes(GgmlType type, const std::vector<int64_t>& ne);

namespace detail {
template <typename T, typename V>
struct is_alternative;
template <typename T, typename... Ts>
struct is_alternative<T, std::variant<Ts...>>
    : std::bool_constant<(std::is_same_v<T, Ts> || ...)> {};
}  // namespace detail

// One metadata value: a scalar of any GGUF type, a string, or an array of scalars or strings.
// The C++ alternative fixes the GGUF type, so a value reads back with the type it was written
// with (uint8_t, int8_t and bool are distinct types).
class Value {
 public:
  using Data = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                            std::string, uint64_t, int64_t, double,
                            std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                            std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                            std::vector<float>, std::vector<bool>, std::vector<std::string>,
                            std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>;

  Value() : data_(uint8_t{0}) {}
  // Only the exact alternative types convert, so the GGUF type is never picked by an implicit
  // conversion (pass uint32_t{n}, not n, for a u32 key).
  template <typename T>
    requires detail::is_alternative<T, Data>::value
  Value(T v) : data_(std::move(v)) {}  // NOLINT: implicit on purpose
  Value(const char* s) : data_(std::string(s)) {}

  ValueType type() const;
  // The element type of an array (Error-free: returns kArray's element for arrays only).
  std::optional<ValueType> array_type() const;
  size_t array_size() const;  // 0 for scalars

  template <typename T>
  const T* get_if() const { return std::get_if<T>(&data_); }
  const Data& data() const { return data_; }

  // Short human-readable form: scalars printed, strings quoted and cut at 60 characters, arrays
  // as "[type x n]" with their first elements.
  std::string to_display() const;

  bool operator==(const Value&) const = default;

 private:
  Data data_;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // innermost first
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;      // from the start of the data section
  uint64_t nbytes = 0;
  const std::byte* data = nullptr;  // into the mapped file (valid while the GgufFile lives)

  int64_t numel() const;
};

// Collects metadata and tensors, then writes the file in one pass (through a temporary file that
// is renamed into place, so a failed write never leaves a truncated file under the final name).
class Writer {
 public:
  // Keys are written in insertion order. Setting a key twice is an Error (GGUF forbids
  // duplicates); "general.alignment" must be a u32 power of two and sets the alignment.
  void set(const std::string& key, Value value);
  bool has(const std::string& key) const;
  // Validates the name (non-empty, < 64 bytes, unique), the dims (1..4, each >= 0), the type's
  // block size against ne[0] and that data.size() equals the type's byte size.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type,
                  std::vector<uint8_t> data);
  uint32_t alignment() const { return alignment_; }
  // Total bytes the file will have.
  uint64_t file_size() const;
  void write(const std::string& path) const;  // Error naming the path on any I/O failure

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> key_index_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
  uint32_t alignment_ = kDefaultAlignment;

  std::vector<uint8_t> serialize_header(uint64_t* data_start) const;
};

// A memory-mapped, fully validated GGUF file.
class File {
 public:
  explicit File(const std::string& path);  // Error naming the path and the problem

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute start of the data section
  uint64_t file_size() const { return file_->size(); }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(const std::string& key) const;
  const Value& get(const std::string& key) const;  // Error naming the file and the key
  // Typed access: Error when missing or stored with another GGUF type (naming both types).
  template <typename T>
  const T& get_as(const std::string& key) const {
    const Value& v = get(key);
    if (const T* p = v.get_if<T>()) return *p;
    wrong_type(key, v, Value(T{}));
  }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;
  const TensorInfo& tensor(const std::string& name) const;  // Error when absent

 private:
  [[noreturn]] void wrong_type(const std::string& key, const Value& got, const Value& want) const;

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> key_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Converts n elements of a tensor stored as F32, F16, BF16, Q8_0, Q4_0 or Q4_1 to float32 (ggml's
// dequantizers: Q8_0 x = d*q, Q4_0 x = d*(q-8), Q4_1 x = d*q + m, d and m float16). n must be a
// multiple of the block size and `src` must hold the matching bytes. Error for other types.
void to_f32(GgmlType type, const std::byte* src, int64_t n, float* dst);

}  // namespace kllens::gguf
