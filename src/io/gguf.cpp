#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "io/durable_file.h"

namespace kllens::gguf {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::kU8: return "u8";
    case ValueType::kI8: return "i8";
    case ValueType::kU16: return "u16";
    case ValueType::kI16: return "i16";
    case ValueType::kU32: return "u32";
    case ValueType::kI32: return "i32";
    case ValueType::kF32: return "f32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kU64: return "u64";
    case ValueType::kI64: return "i64";
    case ValueType::kF64: return "f64";
  }
  return "unknown";
}

namespace {

// ggml's type_traits (ggml.c): block size and bytes per block of every type a file may hold.
struct TypeEntry {
  uint32_t id;
  TypeTraits traits;
};
constexpr TypeEntry kTypes[] = {
    {0, {"f32", 1, 4}},         {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},
    {3, {"q4_1", 32, 20}},      {6, {"q5_0", 32, 22}},      {7, {"q5_1", 32, 24}},
    {8, {"q8_0", 32, 34}},      {9, {"q8_1", 32, 36}},      {10, {"q2_K", 256, 84}},
    {11, {"q3_K", 256, 110}},   {12, {"q4_K", 256, 144}},   {13, {"q5_K", 256, 176}},
    {14, {"q6_K", 256, 210}},   {15, {"q8_K", 256, 292}},   {16, {"iq2_xxs", 256, 66}},
    {17, {"iq2_xs", 256, 74}},  {18, {"iq3_xxs", 256, 98}}, {19, {"iq1_s", 256, 50}},
    {20, {"iq4_nl", 32, 18}},   {21, {"iq3_s", 256, 110}},  {22, {"iq2_s", 256, 82}},
    {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},         {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},        {27, {"i64", 1, 8}},        {28, {"f64", 1, 8}},
    {29, {"iq1_m", 256, 56}},   {30, {"bf16", 1, 2}},       {34, {"tq1_0", 256, 54}},
    {35, {"tq2_0", 256, 66}},   {39, {"mxfp4", 32, 17}},
};

bool is_known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kF64); }

// Smallest encoding of one element of a value type (for "is this count possible" checks).
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
    case ValueType::kString: return 8;
    case ValueType::kArray: return 12;
  }
  return 1;
}

uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

bool is_power_of_two(uint32_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace

std::optional<TypeTraits> type_traits(uint32_t type_id) {
  for (const auto& e : kTypes)
    if (e.id == type_id) return e.traits;
  return std::nullopt;
}

TypeTraits type_traits(GgmlType type) {
  auto t = type_traits(static_cast<uint32_t>(type));
  KLLENS_CHECK(t.has_value(), "ggml type id {} has no traits", static_cast<uint32_t>(type));
  return *t;
}

std::string_view type_name(GgmlType type) { return type_traits(type).name; }

uint64_t tensor_bytes(GgmlType type, const std::vector<int64_t>& ne) {
  const TypeTraits t = type_traits(type);
  if (ne.empty()) fail("a tensor needs at least one dimension");
  // The product of the non-zero dimensions must fit int64 too: a zero dimension empties the
  // tensor but leaves the others to row and column arithmetic ({2^62, 0, 2^62} is refused).
  constexpr auto kMaxElements = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t n = 1, nonzero = 1;
  for (int64_t d : ne) {
    if (d < 0) fail("negative dimension {}", d);
    if (d == 0) {
      n = 0;
      continue;
    }
    if (nonzero > kMaxElements / static_cast<uint64_t>(d)) fail("element count overflows int64");
    nonzero *= static_cast<uint64_t>(d);
    n *= static_cast<uint64_t>(d);
  }
  if (ne[0] % t.block_size != 0)
    fail("ne[0] = {} is not a multiple of the {} block size {}", ne[0], t.name, t.block_size);
  const uint64_t blocks = n / static_cast<uint64_t>(t.block_size);
  if (blocks > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(t.type_size))
    fail("byte size overflows");
  return blocks * static_cast<uint64_t>(t.type_size);
}

// ---------------------------------------------------------------------------------------------
// Value

ValueType Value::type() const {
  switch (data_.index()) {
    case 0: return ValueType::kU8;
    case 1: return ValueType::kI8;
    case 2: return ValueType::kU16;
    case 3: return ValueType::kI16;
    case 4: return ValueType::kU32;
    case 5: return ValueType::kI32;
    case 6: return ValueType::kF32;
    case 7: return ValueType::kBool;
    case 8: return ValueType::kString;
    case 9: return ValueType::kU64;
    case 10: return ValueType::kI64;
    case 11: return ValueType::kF64;
    default: return ValueType::kArray;
  }
}

std::optional<ValueType> Value::array_type() const {
  static constexpr ValueType kElem[] = {ValueType::kU8,  ValueType::kI8,   ValueType::kU16,
                                        ValueType::kI16, ValueType::kU32,  ValueType::kI32,
                                        ValueType::kF32, ValueType::kBool, ValueType::kString,
                                        ValueType::kU64, ValueType::kI64,  ValueType::kF64};
  const size_t i = data_.index();
  if (i < 12) return std::nullopt;
  return kElem[i - 12];
}

size_t Value::array_size() const {
  return std::visit(
      [](const auto& v) -> size_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (requires { v.size(); } && !std::is_same_v<T, std::string>) return v.size();
        else return 0;
      },
      data_);
}

namespace {
template <typename T>
std::string scalar_display(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    std::string s = v.size() > 60 ? v.substr(0, 57) + "..." : v;
    for (char& c : s)
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    return "\"" + s + "\"";
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
    return fmt::format("{}", static_cast<int>(v));
  } else {
    return fmt::format("{}", v);
  }
}
}  // namespace

std::string Value::to_display() const {
  return std::visit(
      [this](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (requires { typename T::value_type; } && !std::is_same_v<T, std::string>) {
          std::string out = fmt::format("[{} x {}]", value_type_name(*array_type()), v.size());
          const size_t shown = std::min<size_t>(v.size(), 4);
          for (size_t i = 0; i < shown; ++i) {
            out += (i == 0 ? " " : ", ");
            out += scalar_display<typename T::value_type>(v[i]);
          }
          if (v.size() > shown) out += ", ...";
          return out;
        } else {
          return scalar_display(v);
        }
      },
      data_);
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

class ByteSink {
 public:
  std::vector<uint8_t> bytes;
  template <typename T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

void put_value(ByteSink& out, const Value& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          out.put_string(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          out.put<uint8_t>(v ? 1 : 0);
        } else if constexpr (requires { typename T::value_type; }) {
          out.put<uint32_t>(static_cast<uint32_t>(*value.array_type()));
          out.put<uint64_t>(v.size());
          for (const auto& e : v) {
            using E = std::decay_t<decltype(e)>;
            if constexpr (std::is_same_v<E, std::string>) out.put_string(e);
            else if constexpr (std::is_same_v<typename T::value_type, bool>)
              out.put<uint8_t>(static_cast<bool>(e) ? 1 : 0);
            else out.put<E>(e);
          }
        } else {
          out.put<T>(v);
        }
      },
      value.data());
}

}  // namespace

void Writer::set(const std::string& key, Value value) {
  if (key.empty()) fail("GGUF metadata keys must not be empty");
  if (key_index_.count(key)) fail("GGUF metadata key '{}' set twice", key);
  if (key == "general.alignment") {
    const uint32_t* a = value.get_if<uint32_t>();
    if (!a) fail("general.alignment must be a u32, got {}", value_type_name(value.type()));
    if (!is_power_of_two(*a)) fail("general.alignment must be a power of two, got {}", *a);
    alignment_ = *a;
  }
  key_index_[key] = kv_.size();
  kv_.emplace_back(key, std::move(value));
}

bool Writer::has(const std::string& key) const { return key_index_.count(key) != 0; }

void Writer::add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type,
                        std::vector<uint8_t> data) {
  if (name.empty()) fail("GGUF tensor names must not be empty");
  if (name.size() > kMaxNameLength)
    fail("GGUF tensor name '{}' is {} bytes; ggml allows at most {}", name, name.size(),
         kMaxNameLength);
  if (tensor_index_.count(name)) fail("GGUF tensor '{}' added twice", name);
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims))
    fail("GGUF tensor '{}' has {} dimensions; 1..{} are allowed", name, ne.size(), kMaxDims);
  uint64_t nbytes = 0;
  try {
    nbytes = tensor_bytes(type, ne);
  } catch (const Error& e) {
    fail("GGUF tensor '{}' ({}): {}", name, type_name(type), e.what());
  }
  if (nbytes != data.size())
    fail("GGUF tensor '{}' ({}): {} bytes of data for a size of {} bytes", name, type_name(type),
         data.size(), nbytes);
  tensor_index_[name] = tensors_.size();
  tensors_.push_back({name, std::move(ne), type, std::move(data)});
}

std::vector<uint8_t> Writer::serialize_header(uint64_t* data_start) const {
  ByteSink out;
  out.bytes.insert(out.bytes.end(), {'G', 'G', 'U', 'F'});
  out.put<uint32_t>(kVersion);
  out.put<uint64_t>(tensors_.size());
  out.put<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    out.put_string(key);
    out.put<uint32_t>(static_cast<uint32_t>(value.type()));
    put_value(out, value);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    out.put_string(t.name);
    out.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) out.put<uint64_t>(static_cast<uint64_t>(d));
    out.put<uint32_t>(static_cast<uint32_t>(t.type));
    out.put<uint64_t>(offset);
    offset += pad_to(t.data.size(), alignment_);
  }
  *data_start = pad_to(out.bytes.size(), alignment_);
  out.bytes.resize(*data_start, 0);
  return std::move(out.bytes);
}

uint64_t Writer::file_size() const {
  uint64_t start = 0;
  serialize_header(&start);
  uint64_t size = start;
  for (const auto& t : tensors_) size += pad_to(t.data.size(), alignment_);
  return size;
}

void Writer::write(const std::string& path) const {
  uint64_t data_start = 0;
  const std::vector<uint8_t> header = serialize_header(&data_start);
  const std::string tmp = temporary_name_for(path);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  static const uint8_t kZeros[256] = {};
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    ok = t.data.empty() || std::fwrite(t.data.data(), 1, t.data.size(), f) == t.data.size();
    // Every tensor is padded, the last one too (as ggml and gguf-py write files).
    uint64_t pad = pad_to(t.data.size(), alignment_) - t.data.size();
    while (ok && pad > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof kZeros));
      ok = std::fwrite(kZeros, 1, n, f) == n;
      pad -= n;
    }
  }
  const int err = errno;
  if (std::fclose(f) != 0) ok = false;
  if (!ok) {
    std::remove(tmp.c_str());
    fail("{}: write failed: {}", tmp, std::strerror(err));
  }
  commit_temporary_file(tmp, path);
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

class Cursor {
 public:
  Cursor(const std::byte* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(std::string_view what) {
    const uint64_t at = pos_;
    const uint64_t n = read<uint64_t>(what);
    if (n > remaining())
      fail("{}: {} at byte {} claims a length of {} bytes, past the end of the file ({} bytes)",
           path_, what, at, n, size_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      fail("{}: truncated: {} at byte {} needs {} bytes but the file ends at {}", path_, what, pos_,
           n, size_);
  }

 private:
  const std::byte* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

template <typename T>
T read_scalar(Cursor& c, std::string_view what, const std::string& path) {
  if constexpr (std::is_same_v<T, bool>) {
    const uint8_t b = c.read<uint8_t>(what);
    if (b > 1) fail("{}: {} is a bool stored as {}, not 0 or 1", path, what, b);
    return b == 1;
  } else if constexpr (std::is_same_v<T, std::string>) {
    return c.read_string(what);
  } else {
    return c.read<T>(what);
  }
}

template <typename T>
Value read_array_of(Cursor& c, uint64_t n, std::string_view what, const std::string& path) {
  std::vector<T> v;
  v.reserve(static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; ++i) v.push_back(read_scalar<T>(c, what, path));
  return Value(std::move(v));
}

Value read_value(Cursor& c, ValueType type, const std::string& what, const std::string& path) {
  switch (type) {
    case ValueType::kU8: return read_scalar<uint8_t>(c, what, path);
    case ValueType::kI8: return read_scalar<int8_t>(c, what, path);
    case ValueType::kU16: return read_scalar<uint16_t>(c, what, path);
    case ValueType::kI16: return read_scalar<int16_t>(c, what, path);
    case ValueType::kU32: return read_scalar<uint32_t>(c, what, path);
    case ValueType::kI32: return read_scalar<int32_t>(c, what, path);
    case ValueType::kF32: return read_scalar<float>(c, what, path);
    case ValueType::kBool: return read_scalar<bool>(c, what, path);
    case ValueType::kString: return read_scalar<std::string>(c, what, path);
    case ValueType::kU64: return read_scalar<uint64_t>(c, what, path);
    case ValueType::kI64: return read_scalar<int64_t>(c, what, path);
    case ValueType::kF64: return read_scalar<double>(c, what, path);
    case ValueType::kArray: {
      const uint64_t at = c.pos();
      const uint32_t et = c.read<uint32_t>(what + " (array element type)");
      if (!is_known_value_type(et))
        fail("{}: {} at byte {} is an array of unknown value type {}", path, what, at, et);
      const auto elem = static_cast<ValueType>(et);
      if (elem == ValueType::kArray)
        fail("{}: {} at byte {} is an array of arrays, which GGUF readers do not support", path,
             what, at);
      const uint64_t n = c.read<uint64_t>(what + " (array length)");
      if (n > c.remaining() / min_encoded_size(elem))
        fail("{}: {} at byte {} claims {} {} elements, more than the {} bytes left in the file "
             "can hold",
             path, what, at, n, value_type_name(elem), c.remaining());
      const std::string ew = what + " (element)";
      switch (elem) {
        case ValueType::kU8: return read_array_of<uint8_t>(c, n, ew, path);
        case ValueType::kI8: return read_array_of<int8_t>(c, n, ew, path);
        case ValueType::kU16: return read_array_of<uint16_t>(c, n, ew, path);
        case ValueType::kI16: return read_array_of<int16_t>(c, n, ew, path);
        case ValueType::kU32: return read_array_of<uint32_t>(c, n, ew, path);
        case ValueType::kI32: return read_array_of<int32_t>(c, n, ew, path);
        case ValueType::kF32: return read_array_of<float>(c, n, ew, path);
        case ValueType::kBool: return read_array_of<bool>(c, n, ew, path);
        case ValueType::kString: return read_array_of<std::string>(c, n, ew, path);
        case ValueType::kU64: return read_array_of<uint64_t>(c, n, ew, path);
        case ValueType::kI64: return read_array_of<int64_t>(c, n, ew, path);
        case ValueType::kF64: return read_array_of<double>(c, n, ew, path);
        case ValueType::kArray: break;
      }
      break;
    }
  }
  fail("{}: {} has unknown value type {}", path, what, static_cast<uint32_t>(type));
}

}  // namespace

File::File(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  Cursor c(file_->data(), file_->size(), file_->path());
  const std::string& p = file_->path();
  if (file_->size() < 4 || std::memcmp(file_->data(), "GGUF", 4) != 0)
    fail("{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", p);
  c.read<uint32_t>("magic");
  version_ = c.read<uint32_t>("version");
  if (version_ == 0x03000000u || version_ == 0x02000000u)
    fail("{}: big-endian GGUF files are not supported", p);
  if (version_ == 1) fail("{}: GGUF version 1 is not supported (only versions 2 and 3)", p);
  if (version_ != 2 && version_ != 3)
    fail("{}: unsupported GGUF version {} (only versions 2 and 3)", p, version_);
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Every entry takes some minimum number of bytes, so counts beyond what the file can hold are
  // rejected before anything is reserved.
  constexpr uint64_t kMinKv = 8 + 4 + 1, kMinTensor = 8 + 4 + 8 + 4 + 8;
  if (n_kv > c.remaining() / kMinKv)
    fail("{}: metadata count {} is impossible for a file of {} bytes", p, n_kv, file_->size());
  if (n_tensors > c.remaining() / kMinTensor)
    fail("{}: tensor count {} is impossible for a file of {} bytes", p, n_tensors, file_->size());

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string what = fmt::format("metadata entry {}", i);
    std::string key = c.read_string(what + " key");
    if (key.empty()) fail("{}: {} has an empty key", p, what);
    if (key_index_.count(key)) fail("{}: duplicate metadata key '{}'", p, key);
    const uint64_t at = c.pos();
    const uint32_t t = c.read<uint32_t>("value type of '" + key + "'");
    if (!is_known_value_type(t))
      fail("{}: metadata '{}' at byte {} has unknown value type {}", p, key, at, t);
    Value v = read_value(c, static_cast<ValueType>(t), "metadata '" + key + "'", p);
    key_index_[key] = kv_.size();
    kv_.emplace_back(std::move(key), std::move(v));
  }
  // Named in the messages of the checks the alignment drives.
  std::string alignment_what = fmt::format("the default alignment {}", alignment_);
  if (const Value* a = find("general.alignment")) {
    const uint32_t* u = a->get_if<uint32_t>();
    if (!u) fail("{}: general.alignment must be a u32, got {}", p, value_type_name(a->type()));
    if (!is_power_of_two(*u)) fail("{}: general.alignment {} is not a power of two", p, *u);
    alignment_ = *u;
    alignment_what = fmt::format("general.alignment = {}", alignment_);
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = c.read_string(fmt::format("name of tensor {}", i));
    if (t.name.empty()) fail("{}: tensor {} has an empty name", p, i);
    if (t.name.size() > kMaxNameLength)
      fail("{}: tensor name '{}' is {} bytes; ggml allows at most {}", p, t.name.substr(0, 80),
           t.name.size(), kMaxNameLength);
    if (tensor_index_.count(t.name)) fail("{}: duplicate tensor name '{}'", p, t.name);
    const uint32_t n_dims = c.read<uint32_t>("dimension count of '" + t.name + "'");
    if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims))
      fail("{}: tensor '{}' has {} dimensions; 1..{} are allowed", p, t.name, n_dims, kMaxDims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t e = c.read<uint64_t>("dimensions of '" + t.name + "'");
      if (e > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("{}: tensor '{}' has dimension ne[{}] = {}, which is negative as int64", p, t.name, d, e);
      t.ne.push_back(static_cast<int64_t>(e));
    }
    const uint32_t type_id = c.read<uint32_t>("type of '" + t.name + "'");
    const auto traits = type_traits(type_id);
    if (!traits) fail("{}: tensor '{}' has unknown ggml type {}", p, t.name, type_id);
    t.type = static_cast<GgmlType>(type_id);
    try {
      t.nbytes = tensor_bytes(t.type, t.ne);
    } catch (const Error& e) {
      fail("{}: tensor '{}' ({}): {}", p, t.name, traits->name, e.what());
    }
    t.offset = c.read<uint64_t>("offset of '" + t.name + "'");
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}' has offset {}, not a multiple of the alignment {} ({})", p, t.name,
           t.offset, alignment_, alignment_what);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  data_offset_ = pad_to(c.pos(), alignment_);
  if (!tensors_.empty() && data_offset_ > file_->size())
    fail("{}: truncated: the data section would start at byte {} ({}) but the file has {} bytes",
         p, data_offset_, alignment_what, file_->size());
  const uint64_t data_size = tensors_.empty() ? 0 : file_->size() - data_offset_;
  for (auto& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file (data "
           "section of {} bytes)",
           p, t.name, t.nbytes, t.offset, data_size);
    t.data = file_->data() + data_offset_ + t.offset;
  }
  std::vector<const TensorInfo*> order;
  for (const auto& t : tensors_)
    if (t.nbytes > 0) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->offset < order[i - 1]->offset + order[i - 1]->nbytes)
      fail("{}: tensors '{}' (bytes {}..{}) and '{}' (from byte {}) overlap", p,
           order[i - 1]->name, order[i - 1]->offset, order[i - 1]->offset + order[i - 1]->nbytes,
           order[i]->name, order[i]->offset);
}

const Value* File::find(const std::string& key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& File::get(const std::string& key) const {
  const Value* v = find(key);
  if (!v) fail("{}: no metadata key '{}'", path(), key);
  return *v;
}

void File::wrong_type(const std::string& key, const Value& got, const Value& want) const {
  auto describe = [](const Value& v) {
    std::string s(value_type_name(v.type()));
    if (auto e = v.array_type()) s += fmt::format(" of {}", value_type_name(*e));
    return s;
  };
  fail("{}: metadata '{}' is {}, expected {}", path(), key, describe(got), describe(want));
}

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("{}: no tensor '{}'", path(), name);
  return *t;
}

// ---------------------------------------------------------------------------------------------

void to_f32(GgmlType type, const std::byte* src, int64_t n, float* dst) {
  auto half = [](const std::byte* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
  };
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * 4);  // an empty dst may be null
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half(src + 2 * i);
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = bf16_to_f32(b);
      }
      return;
    case GgmlType::kQ8_0:
      KLLENS_CHECK(n % 32 == 0, "q8_0 needs whole blocks, n = {}", n);
      for (int64_t b = 0; b < n / 32; ++b) {
        const std::byte* blk = src + b * 34;
        const float d = half(blk);
        for (int j = 0; j < 32; ++j)
          dst[b * 32 + j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
      }
      return;
    case GgmlType::kQ4_0:
      KLLENS_CHECK(n % 32 == 0, "q4_0 needs whole blocks, n = {}", n);
      for (int64_t b = 0; b < n / 32; ++b) {
        const std::byte* blk = src + b * 18;
        const float d = half(blk);
        for (int j = 0; j < 16; ++j) {
          const auto q = static_cast<uint8_t>(blk[2 + j]);
          dst[b * 32 + j] = static_cast<float>((q & 0x0F) - 8) * d;
          dst[b * 32 + j + 16] = static_cast<float>((q >> 4) - 8) * d;
        }
      }
      return;
    case GgmlType::kQ4_1:
      KLLENS_CHECK(n % 32 == 0, "q4_1 needs whole blocks, n = {}", n);
      for (int64_t b = 0; b < n / 32; ++b) {
        const std::byte* blk = src + b * 20;
        const float d = half(blk), m = half(blk + 2);
        for (int j = 0; j < 16; ++j) {
          const auto q = static_cast<uint8_t>(blk[4 + j]);
          dst[b * 32 + j] = static_cast<float>(q & 0x0F) * d + m;
          dst[b * 32 + j + 16] = static_cast<float>(q >> 4) * d + m;
        }
      }
      return;
    default:
      fail("cannot convert ggml type {} to float32 (kllens reads f32, f16, bf16, q8_0, q4_0, q4_1)",
           type_name(type));
  }
}

}  // namespace kllens::gguf
