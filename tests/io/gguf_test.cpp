// io/gguf: the GGUF v3 container. A round trip of every metadata type and of tensors of several
// ggml types, the layout rules ggml's reader demands, and every malformation the reader must
// reject with an Error (never a crash), each in a file built byte by byte here.
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "io/durable_file.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using gguf::GgmlType;
using gguf::Value;

// Little-endian byte builder for hand-made files.
struct Bytes {
  std::string s;
  template <typename T>
  Bytes& put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& v) {
    put<uint64_t>(v.size());
    s += v;
    return *this;
  }
  Bytes& raw(const std::string& v) {
    s += v;
    return *this;
  }
  Bytes& pad(size_t align) {
    while (s.size() % align) s += '\0';
    return *this;
  }
};

Bytes header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  Bytes b;
  b.raw("GGUF").put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  return b;
}

// A tensor info entry.
void info(Bytes& b, const std::string& name, std::vector<uint64_t> ne, uint32_t type,
          uint64_t offset) {
  b.str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
  for (uint64_t d : ne) b.put<uint64_t>(d);
  b.put<uint32_t>(type).put<uint64_t>(offset);
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("gguf"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& bytes) {
    const auto p = dir_ / name;
    test::write_file(p, bytes);
    return p.string();
  }
  // Opening must throw Error (exit code 1, one line) whose message names the file and has `part`.
  void expect_rejected(const std::string& bytes, const std::string& part) {
    const std::string path = write("bad-" + std::to_string(counter_++) + ".gguf", bytes);
    try {
      gguf::File f(path);
      ADD_FAILURE() << "accepted a file that should fail with '" << part << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.exit_code(), 1);
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
    }
  }
  fs::path dir_;
  int counter_ = 0;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Every value type, scalar and array, with edge values.
std::vector<std::pair<std::string, Value>> all_values() {
  std::vector<std::pair<std::string, Value>> kv;
  kv.emplace_back("t.u8", uint8_t{255});
  kv.emplace_back("t.i8", int8_t{-128});
  kv.emplace_back("t.u16", uint16_t{65535});
  kv.emplace_back("t.i16", int16_t{-32768});
  kv.emplace_back("t.u32", uint32_t{4000000000u});
  kv.emplace_back("t.i32", int32_t{-2000000000});
  kv.emplace_back("t.f32", 3.25f);
  kv.emplace_back("t.bool.true", true);
  kv.emplace_back("t.bool.false", false);
  kv.emplace_back("t.string", std::string("h\xC3\xA9llo \"gguf\"\n"));
  kv.emplace_back("t.string.empty", std::string());
  kv.emplace_back("t.u64", std::numeric_limits<uint64_t>::max());
  kv.emplace_back("t.i64", std::numeric_limits<int64_t>::min());
  kv.emplace_back("t.f64", -1.0e300);
  kv.emplace_back("t.a.u8", std::vector<uint8_t>{0, 1, 255});
  kv.emplace_back("t.a.i8", std::vector<int8_t>{-1, 0, 127});
  kv.emplace_back("t.a.u16", std::vector<uint16_t>{7, 65535});
  kv.emplace_back("t.a.i16", std::vector<int16_t>{-7});
  kv.emplace_back("t.a.u32", std::vector<uint32_t>{1, 2, 3});
  kv.emplace_back("t.a.i32", std::vector<int32_t>{1, 3, 5, 6});
  kv.emplace_back("t.a.f32", std::vector<float>{0.5f, -0.0f, 1e-30f});
  kv.emplace_back("t.a.bool", std::vector<bool>{true, false, true});
  kv.emplace_back("t.a.string", std::vector<std::string>{"a b", "", "\xE2\x96\x81x"});
  kv.emplace_back("t.a.u64", std::vector<uint64_t>{1ull << 63});
  kv.emplace_back("t.a.i64", std::vector<int64_t>{-5, 5});
  kv.emplace_back("t.a.f64", std::vector<double>{2.5, -1e-300});
  kv.emplace_back("t.a.empty", std::vector<int32_t>{});
  return kv;
}

struct TestTensor {
  std::string name;
  std::vector<int64_t> ne;
  GgmlType type;
  std::vector<uint8_t> data;
};

std::vector<TestTensor> some_tensors() {
  std::vector<TestTensor> t;
  // Sizes from the block layouts: F32 4, F16/BF16 2 per element; Q8_0 34, Q4_0 18, Q4_1 20 per
  // 32 elements; Q6_K 210 per 256.
  t.push_back({"f32.vec", {5}, GgmlType::kF32, random_bytes(5 * 4, 1)});
  t.push_back({"f16.mat", {3, 7}, GgmlType::kF16, random_bytes(21 * 2, 2)});
  t.push_back({"bf16.mat", {4, 2, 3}, GgmlType::kBF16, random_bytes(24 * 2, 3)});
  t.push_back({"blk.0.q8", {64, 3}, GgmlType::kQ8_0, random_bytes(2 * 3 * 34, 4)});
  t.push_back({"blk.0.q4", {32, 5}, GgmlType::kQ4_0, random_bytes(5 * 18, 5)});
  t.push_back({"blk.0.q41", {96, 1}, GgmlType::kQ4_1, random_bytes(3 * 20, 6)});
  t.push_back({"blk.0.q6k", {256, 2}, GgmlType::kQ6_K, random_bytes(2 * 210, 7)});
  t.push_back({"i32.4d", {1, 2, 1, 3}, GgmlType::kI32, random_bytes(6 * 4, 8)});
  return t;
}

void check_round_trip(const std::string& path, uint32_t alignment, bool set_alignment) {
  gguf::Writer w;
  auto kv = all_values();
  if (set_alignment) kv.insert(kv.begin() + 3, {"general.alignment", alignment});
  for (const auto& [k, v] : kv) w.set(k, v);
  const auto tensors = some_tensors();
  for (const auto& t : tensors) w.add_tensor(t.name, t.ne, t.type, t.data);
  EXPECT_EQ(w.alignment(), alignment);
  w.write(path);
  EXPECT_EQ(fs::file_size(path), w.file_size());
  EXPECT_FALSE(fs::exists(temporary_name_for(path))) << "the temporary is renamed into place";

  gguf::File f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  ASSERT_EQ(f.metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, kv[i].first);
    EXPECT_EQ(f.metadata()[i].second.type(), kv[i].second.type()) << kv[i].first;
    EXPECT_EQ(f.metadata()[i].second.array_type(), kv[i].second.array_type()) << kv[i].first;
    EXPECT_TRUE(f.metadata()[i].second == kv[i].second) << kv[i].first;
  }
  EXPECT_EQ(f.get_as<std::string>("t.string"), "h\xC3\xA9llo \"gguf\"\n");
  EXPECT_EQ(f.get_as<std::vector<bool>>("t.a.bool"), (std::vector<bool>{true, false, true}));
  EXPECT_THROW(f.get_as<uint32_t>("t.u64"), Error);  // strict types, as llama.cpp checks them
  EXPECT_THROW(f.get("no.such.key"), Error);

  ASSERT_EQ(f.tensors().size(), tensors.size());
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const gguf::TensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, tensors[i].name);
    EXPECT_EQ(t.ne, tensors[i].ne);
    EXPECT_EQ(t.type, tensors[i].type);
    ASSERT_EQ(t.nbytes, tensors[i].data.size());
    EXPECT_EQ(std::memcmp(t.data, tensors[i].data.data(), t.nbytes), 0) << t.name;
    // ggml's reader: offsets are the running sum of the padded sizes, in info order.
    EXPECT_EQ(t.offset, expected_offset) << t.name;
    expected_offset += (t.nbytes + alignment - 1) / alignment * alignment;
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
  EXPECT_EQ(f.data_offset() + expected_offset, f.file_size());
  EXPECT_THROW(f.tensor("missing"), Error);
}

TEST_F(GgufTest, RoundTripsEveryValueTypeAndTensorType) {
  check_round_trip((dir_ / "a.gguf").string(), 32, false);
}

// An empty tensor converts to nothing. memcpy(nullptr, src, 0), what the empty destination's
// data() gave, is undefined behaviour: this fails under -fsanitize=undefined (the fuzz build,
// fuzz/gguf_fuzz.cpp found it), not in a plain build.
TEST_F(GgufTest, ConvertsAnEmptyTensor) {
  gguf::Writer w;
  w.add_tensor("empty", {0, 4}, GgmlType::kF32, {});
  const std::string path = (dir_ / "empty.gguf").string();
  w.write(path);
  const gguf::File f(path);
  const gguf::TensorInfo& t = f.tensor("empty");
  EXPECT_EQ(t.numel(), 0);
  std::vector<float> out;
  gguf::to_f32(t.type, t.data, t.numel(), out.data());
  EXPECT_TRUE(out.empty());
}

TEST_F(GgufTest, RoundTripsWithCustomAlignment) {
  check_round_trip((dir_ / "b.gguf").string(), 64, true);
  check_round_trip((dir_ / "c.gguf").string(), 1, true);
}

TEST_F(GgufTest, HeaderBytesAreTheSpecifiedLayout) {
  gguf::Writer w;
  w.set("k", uint32_t{7});
  w.add_tensor("t", {2}, GgmlType::kF32, std::vector<uint8_t>(8, 0xAB));
  const std::string path = (dir_ / "h.gguf").string();
  w.write(path);
  Bytes b = header(1, 1);
  b.str("k").put<uint32_t>(4).put<uint32_t>(7);
  info(b, "t", {2}, 0, 0);
  b.pad(32).raw(std::string(8, '\xAB')).pad(32);
  EXPECT_EQ(test::read_file(path), b.s);
}

TEST_F(GgufTest, TypeSizes) {
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kQ8_0, {64, 2}), 2u * 2 * 34);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kQ4_0, {32, 3}), 3u * 18);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kQ4_1, {32}), 20u);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kQ4_K, {256}), 144u);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kQ6_K, {512}), 420u);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kBF16, {3, 3}), 18u);
  EXPECT_EQ(gguf::tensor_bytes(GgmlType::kF16, {0, 3}), 0u);
  EXPECT_THROW(gguf::tensor_bytes(GgmlType::kQ8_0, {48}), Error);
  EXPECT_THROW(gguf::tensor_bytes(GgmlType::kF32, {1ll << 40, 1ll << 40}), Error);
  EXPECT_FALSE(gguf::type_traits(4).has_value());   // removed Q4_2
  EXPECT_FALSE(gguf::type_traits(31).has_value());  // removed Q4_0_4_4
  EXPECT_FALSE(gguf::type_traits(40).has_value());
  EXPECT_EQ(gguf::type_name(GgmlType::kBF16), "bf16");
}

TEST_F(GgufTest, WriterRejectsWhatGgmlWouldReject) {
  gguf::Writer w;
  w.set("a", uint8_t{1});
  EXPECT_THROW(w.set("a", uint8_t{2}), Error);
  EXPECT_THROW(w.set("", uint8_t{2}), Error);
  EXPECT_THROW(w.set("general.alignment", uint64_t{32}), Error);
  EXPECT_THROW(w.set("general.alignment", uint32_t{48}), Error);
  w.add_tensor("x", {32}, GgmlType::kQ8_0, std::vector<uint8_t>(34));
  EXPECT_THROW(w.add_tensor("x", {32}, GgmlType::kQ8_0, std::vector<uint8_t>(34)), Error);
  EXPECT_THROW(w.add_tensor("y", {32}, GgmlType::kQ8_0, std::vector<uint8_t>(33)), Error);
  EXPECT_THROW(w.add_tensor("y", {16}, GgmlType::kQ8_0, std::vector<uint8_t>(17)), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), {1}, GgmlType::kF32, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor("z", {1, 1, 1, 1, 1}, GgmlType::kF32, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor("z", {}, GgmlType::kF32, {}), Error);
  w.add_tensor(std::string(63, 'n'), {1}, GgmlType::kF32, std::vector<uint8_t>(4));
  EXPECT_THROW(w.write((dir_ / "no-such-dir" / "x.gguf").string()), Error);
}

TEST_F(GgufTest, DequantizesTheGgmlBlockLayouts) {
  // Q8_0: d = 0.5 (f16 0x3800), x = d * q.
  std::vector<uint8_t> q8(34, 0);
  q8[0] = 0x00, q8[1] = 0x38;
  for (int j = 0; j < 32; ++j) q8[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  std::vector<float> out(32);
  gguf::to_f32(GgmlType::kQ8_0, reinterpret_cast<const std::byte*>(q8.data()), 32, out.data());
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.5f * static_cast<float>(j - 16));
  // Q4_0: byte j holds element j (low nibble) and j + 16 (high nibble); x = d * (q - 8).
  std::vector<uint8_t> q4(18, 0);
  q4[0] = 0x00, q4[1] = 0x40;  // d = 2
  for (int j = 0; j < 16; ++j) q4[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  gguf::to_f32(GgmlType::kQ4_0, reinterpret_cast<const std::byte*>(q4.data()), 32, out.data());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * static_cast<float>(j - 8));
    EXPECT_EQ(out[j + 16], 2.0f * static_cast<float>(15 - j - 8));
  }
  // Q4_1: x = d * q + m, d then m.
  std::vector<uint8_t> q41(20, 0);
  q41[0] = 0x00, q41[1] = 0x3C;  // d = 1
  q41[2] = 0x00, q41[3] = 0xC2;  // m = -3
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j | (j << 4));
  gguf::to_f32(GgmlType::kQ4_1, reinterpret_cast<const std::byte*>(q41.data()), 32, out.data());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], static_cast<float>(j) - 3.0f);
    EXPECT_EQ(out[j + 16], static_cast<float>(j) - 3.0f);
  }
  const uint16_t bf = f32_to_bf16(1.5f), hf = f32_to_f16(-2.25f);
  gguf::to_f32(GgmlType::kBF16, reinterpret_cast<const std::byte*>(&bf), 1, out.data());
  EXPECT_EQ(out[0], 1.5f);
  gguf::to_f32(GgmlType::kF16, reinterpret_cast<const std::byte*>(&hf), 1, out.data());
  EXPECT_EQ(out[0], -2.25f);
  EXPECT_THROW(gguf::to_f32(GgmlType::kQ6_K, nullptr, 256, out.data()), Error);
}

// A valid two-tensor file, built by hand; the malformation tests change one field of it.
struct Valid {
  uint32_t version = 3;
  uint64_t n_tensors = 2, n_kv = 2;
  std::string kv_override;  // replaces the metadata when non-empty
  uint32_t type0 = 0;
  std::vector<uint64_t> ne0 = {8};
  uint64_t offset0 = 0, offset1 = 32;
  std::string name1 = "b";
  uint64_t data_size = 64;

  std::string build() const {
    Bytes b = header(n_tensors, n_kv, version);
    if (!kv_override.empty()) {
      b.raw(kv_override);
    } else {
      b.str("general.architecture").put<uint32_t>(8).str("test");
      b.str("list").put<uint32_t>(9).put<uint32_t>(5).put<uint64_t>(2).put<int32_t>(1).put<int32_t>(2);
    }
    info(b, "a", ne0, type0, offset0);
    info(b, name1, {4}, 0, offset1);
    b.pad(32);
    b.raw(std::string(data_size, '\x01'));
    return b.s;
  }
};

TEST_F(GgufTest, HandBuiltValidFileIsAccepted) {
  const std::string path = write("valid.gguf", Valid{}.build());
  gguf::File f(path);
  EXPECT_EQ(f.get_as<std::string>("general.architecture"), "test");
  EXPECT_EQ(f.get_as<std::vector<int32_t>>("list"), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensor("b").offset, 32u);
}

TEST_F(GgufTest, RejectsBadMagicAndVersions) {
  std::string bad = Valid{}.build();
  bad[0] = 'g';
  expect_rejected(bad, "not a GGUF file");
  expect_rejected("", "not a GGUF file");
  expect_rejected("GGU", "not a GGUF file");
  Valid v;
  v.version = 1;
  expect_rejected(v.build(), "version 1 is not supported");
  v.version = 4;
  expect_rejected(v.build(), "unsupported GGUF version 4");
  v.version = 0x03000000u;  // version 3 written big-endian
  expect_rejected(v.build(), "big-endian");
  v.version = 0x02000000u;
  expect_rejected(v.build(), "big-endian");
  v.version = 0;
  expect_rejected(v.build(), "unsupported GGUF version 0");
  v.version = std::numeric_limits<uint32_t>::max();
  expect_rejected(v.build(), "unsupported GGUF version 4294967295");
  v.version = 2;  // ggml still reads version 2 (same layout)
  EXPECT_EQ(gguf::File(write("v2.gguf", v.build())).version(), 2u);
}

TEST_F(GgufTest, RejectsEveryTruncation) {
  const std::string full = Valid{}.build();
  // The last tensor's bytes end at data_start + 32 + 16; any shorter prefix must be refused.
  const size_t data_start = full.size() - 64;
  double slowest = 0;
  for (size_t n = 0; n < data_start + 48; ++n) {
    const std::string path = write("trunc.gguf", full.substr(0, n));
    const auto start = std::chrono::steady_clock::now();
    try {
      gguf::File f(path);
      ADD_FAILURE() << "accepted a prefix of " << n << " bytes";
    } catch (const Error& e) {
      // One line naming the file and what was cut (a count, a length, a field, the data).
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
    }
    slowest = std::max(slowest, seconds_since(start));
  }
  EXPECT_LT(slowest, test::time_limit(1.0));
  expect_rejected(full.substr(0, 120), "truncated");  // inside the first tensor info
  expect_rejected(full.substr(0, data_start + 40), "runs past the end");
}

TEST_F(GgufTest, RejectsLyingCounts) {
  Valid v;
  v.n_kv = 1ull << 60;
  expect_rejected(v.build(), "metadata count");
  v = Valid{};
  v.n_tensors = 1ull << 40;
  expect_rejected(v.build(), "tensor count");
  v = Valid{};
  v.n_kv = std::numeric_limits<uint64_t>::max();
  expect_rejected(v.build(), "metadata count 18446744073709551615 is impossible");
  v = Valid{};
  v.n_tensors = std::numeric_limits<uint64_t>::max();
  expect_rejected(v.build(), "tensor count 18446744073709551615 is impossible");
  v = Valid{};
  v.n_kv = 3;  // one more than present: the tensor infos are read as metadata and fail
  EXPECT_THROW(gguf::File(write("kv3.gguf", v.build())), Error);
}

TEST_F(GgufTest, RejectsHugeStringAndArrayLengths) {
  Valid v;
  Bytes kv;
  kv.put<uint64_t>(0xFFFFFFFFFFFFull).raw("key");
  kv.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = kv.s;
  expect_rejected(v.build(), "past the end of the file");

  Bytes kv2;
  kv2.str("s").put<uint32_t>(8).put<uint64_t>(1ull << 62);
  kv2.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = kv2.s;
  expect_rejected(v.build(), "claims a length");

  Bytes kv3;
  kv3.str("arr").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(1ull << 61);
  kv3.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = kv3.s;
  expect_rejected(v.build(), "claims 2305843009213693952 f32 elements");

  Bytes kv4;  // an array of strings whose count fits but whose strings do not
  kv4.str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("ok").put<uint64_t>(1ull << 40);
  v.kv_override = kv4.s;
  expect_rejected(v.build(), "claims a length");
}

TEST_F(GgufTest, RejectsBadValueTypes) {
  Valid v;
  Bytes kv;
  kv.str("k").put<uint32_t>(13).put<uint32_t>(0);
  kv.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = kv.s;
  expect_rejected(v.build(), "unknown value type 13");

  Bytes nested;
  nested.str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(0);
  nested.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = nested.s;
  expect_rejected(v.build(), "array of arrays");

  Bytes boolean;
  boolean.str("flag").put<uint32_t>(7).put<uint8_t>(2);
  boolean.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = boolean.s;
  expect_rejected(v.build(), "not 0 or 1");

  Bytes dup;
  dup.str("x").put<uint32_t>(4).put<uint32_t>(1);
  dup.str("x").put<uint32_t>(4).put<uint32_t>(2);
  v.kv_override = dup.s;
  expect_rejected(v.build(), "duplicate metadata key 'x'");

  Bytes align;
  align.str("general.alignment").put<uint32_t>(10).put<uint64_t>(32);
  align.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = align.s;
  expect_rejected(v.build(), "general.alignment must be a u32");

  Bytes align2;
  align2.str("general.alignment").put<uint32_t>(4).put<uint32_t>(24);
  align2.str("x").put<uint32_t>(4).put<uint32_t>(1);
  v.kv_override = align2.s;
  expect_rejected(v.build(), "not a power of two");
}

TEST_F(GgufTest, RejectsBadTensorInfos) {
  Valid v;
  v.type0 = 4;
  expect_rejected(v.build(), "unknown ggml type 4");
  v.type0 = 1000;
  expect_rejected(v.build(), "unknown ggml type 1000");
  v = Valid{};
  v.type0 = 8;  // q8_0 with ne[0] = 8: not whole blocks
  expect_rejected(v.build(), "not a multiple of the q8_0 block size 32");
  v = Valid{};
  v.ne0 = {1, 1, 1, 1, 8};
  expect_rejected(v.build(), "5 dimensions");
  v.ne0 = {};
  expect_rejected(v.build(), "0 dimensions");
  v.ne0 = {1ull << 63};
  expect_rejected(v.build(), "negative");
  v.ne0 = {1ull << 40, 1ull << 40};
  expect_rejected(v.build(), "overflows");
  v = Valid{};
  v.name1 = "a";
  expect_rejected(v.build(), "duplicate tensor name 'a'");
  v.name1 = std::string(64, 'x');
  expect_rejected(v.build(), "at most 63");
  v.name1 = "";
  expect_rejected(v.build(), "empty name");
}

TEST_F(GgufTest, RejectsBadOffsets) {
  Valid v;
  v.offset1 = 33;
  expect_rejected(v.build(), "not a multiple of the alignment 32");
  v.offset1 = 0;  // b on top of a
  expect_rejected(v.build(), "overlap");
  v = Valid{};
  v.ne0 = {16};  // a is 64 bytes: b at 32 overlaps it
  expect_rejected(v.build(), "overlap");
  v = Valid{};
  v.offset1 = 64;  // b's 16 bytes end at 80 > 64
  expect_rejected(v.build(), "runs past the end");
  v.offset1 = 1ull << 62;
  expect_rejected(v.build(), "runs past the end");
  v = Valid{};
  v.offset0 = std::numeric_limits<uint64_t>::max() - 31;  // offset + size overflows
  expect_rejected(v.build(), "runs past the end");
}

// Lengths and counts near 2^64 (and 2^63, which is negative as int64): each refused before
// anything is reserved, naming the entry.
TEST_F(GgufTest, RejectsLengthsNearTwoToThe64) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const auto with_kv = [](const Bytes& kv) {
    Valid v;
    v.kv_override = kv.s;
    return v.build();
  };
  for (const uint64_t n : {kMax, kMax - 7, uint64_t{1} << 63}) {
    SCOPED_TRACE(n);
    Bytes key;
    key.put<uint64_t>(n).raw("key").put<uint32_t>(4).put<uint32_t>(1);
    key.str("x").put<uint32_t>(4).put<uint32_t>(1);
    expect_rejected(with_kv(key), "metadata entry 0 key");
    Bytes str;
    str.str("s").put<uint32_t>(8).put<uint64_t>(n).raw("abc");
    str.str("x").put<uint32_t>(4).put<uint32_t>(1);
    expect_rejected(with_kv(str), "metadata 's'");
    // u8, bool, string, u64 elements: the smallest and the largest encodings.
    for (const uint32_t elem : {0u, 7u, 8u, 10u}) {
      Bytes arr;
      arr.str("arr").put<uint32_t>(9).put<uint32_t>(elem).put<uint64_t>(n);
      arr.str("x").put<uint32_t>(4).put<uint32_t>(1);
      expect_rejected(with_kv(arr), "metadata 'arr'");
      expect_rejected(with_kv(arr), "claims " + std::to_string(n));
    }
    Bytes name = header(1, 0);
    name.put<uint64_t>(n).raw("a").put<uint32_t>(1).put<uint64_t>(4).put<uint32_t>(0).put<uint64_t>(0);
    expect_rejected(name.s, "name of tensor 0");
  }
}

// general.alignment must be a u32 power of two (ggml's reader requires both); 2^31, the largest,
// is valid but names itself where the offsets or the file size contradict it.
TEST_F(GgufTest, RejectsBadAlignments) {
  const auto with_alignment = [](const Bytes& typed_value, Valid v = Valid{}) {
    Bytes kv;
    kv.str("general.alignment").raw(typed_value.s);
    kv.str("x").put<uint32_t>(4).put<uint32_t>(1);
    v.kv_override = kv.s;
    return v.build();
  };
  const auto u32 = [](uint32_t a) { return Bytes().put<uint32_t>(4).put<uint32_t>(a); };
  expect_rejected(with_alignment(u32(0)), "general.alignment 0 is not a power of two");
  expect_rejected(with_alignment(u32(13)), "general.alignment 13 is not a power of two");
  expect_rejected(with_alignment(u32(0xFFFFFFFFu)), "general.alignment 4294967295 is not a power");
  expect_rejected(with_alignment(Bytes().put<uint32_t>(5).put<int32_t>(32)),
                  "general.alignment must be a u32, got i32");
  expect_rejected(with_alignment(Bytes().put<uint32_t>(2).put<uint16_t>(32)),
                  "general.alignment must be a u32, got u16");
  expect_rejected(with_alignment(Bytes().put<uint32_t>(8).str("32")),
                  "general.alignment must be a u32, got string");
  expect_rejected(
      with_alignment(Bytes().put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1).put<uint32_t>(32)),
      "general.alignment must be a u32, got array");
  const uint32_t big = uint32_t{1} << 31;
  expect_rejected(with_alignment(u32(big)),
                  "not a multiple of the alignment 2147483648 (general.alignment = 2147483648)");
  Valid empty_first;  // offsets 0 and 0, the first tensor empty: only the data start is wrong
  empty_first.ne0 = {0};
  empty_first.offset1 = 0;
  expect_rejected(with_alignment(u32(big), empty_first),
                  "data section would start at byte 2147483648 (general.alignment = 2147483648)");
}

// Type ids ggml removed (4, 5 = Q4_2, Q4_3; 31..33 and 36..38 = the repacked Q4_0_4_4 ... and
// IQ4_NL_4_4 ... types) and ids past the table.
TEST_F(GgufTest, RejectsUnknownAndRemovedTypes) {
  for (const uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xFFFFFFFFu}) {
    SCOPED_TRACE(id);
    EXPECT_FALSE(gguf::type_traits(id).has_value());
    Valid v;
    v.type0 = id;
    expect_rejected(v.build(), "tensor 'a' has unknown ggml type " + std::to_string(id));
  }
}

TEST_F(GgufTest, RejectsBadDimensionsAndBlockRows) {
  Valid v;
  v.ne0.assign(5, 1);
  expect_rejected(v.build(), "tensor 'a' has 5 dimensions; 1..4 are allowed");
  // A count of dimensions near 2^32 is refused before any is read.
  Bytes b = header(1, 0);
  b.str("a").put<uint32_t>(0xFFFFFFFFu).raw(std::string(64, '\0'));
  expect_rejected(b.s, "has 4294967295 dimensions");
  // Products past INT64_MAX, also when a zero dimension empties the tensor.
  const std::vector<std::vector<uint64_t>> overflowing = {
      {1ull << 32, 1ull << 32}, {1ull << 62, 2}, {1ull << 31, 1ull << 31, 2},
      {1ull << 62, 0, 1ull << 62}, {0, 1ull << 40, 1ull << 40}};
  for (const auto& ne : overflowing) {
    v.ne0 = ne;
    expect_rejected(v.build(), "tensor 'a' (f32): element count overflows int64");
  }
  // A zero dimension is an empty tensor (ggml writes those too).
  v.ne0 = {8, 0};
  const gguf::File f(write("zero.gguf", v.build()));
  EXPECT_EQ(f.tensor("a").numel(), 0);
  EXPECT_EQ(f.tensor("a").nbytes, 0u);
  // Block types whose block does not divide the row: q4_0 (32), q4_K and iq4_xs (256).
  const std::vector<std::tuple<uint32_t, std::string, int>> blocks = {
      {2, "q4_0", 32}, {12, "q4_K", 256}, {23, "iq4_xs", 256}};
  for (const auto& [type, name, block] : blocks) {
    v = Valid{};
    v.type0 = type;
    v.ne0 = {static_cast<uint64_t>(block / 2), 2};
    expect_rejected(v.build(), "tensor 'a' (" + name + "): ne[0] = " + std::to_string(block / 2) +
                                   " is not a multiple of the " + name + " block size " +
                                   std::to_string(block));
  }
}

// Random corruption of a real file: every outcome must be a clean Error or a valid file.
TEST_F(GgufTest, RandomCorruptionNeverCrashes) {
  gguf::Writer w;
  for (const auto& [k, v] : all_values()) w.set(k, v);
  for (const auto& t : some_tensors()) w.add_tensor(t.name, t.ne, t.type, t.data);
  const std::string path = (dir_ / "src.gguf").string();
  w.write(path);
  const std::string good = test::read_file(path);
  std::mt19937 rng(42);
  int rejected = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good;
    const size_t header_end = 24 + 900;  // corrupt mostly the metadata and infos
    for (int k = 0; k < 3; ++k)
      bad[rng() % std::min(bad.size(), header_end)] = static_cast<char>(rng());
    const std::string p = write("rand.gguf", bad);
    try {
      gguf::File f(p);
      for (const auto& t : f.tensors()) EXPECT_LE(f.data_offset() + t.offset + t.nbytes, f.file_size());
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace kllens
