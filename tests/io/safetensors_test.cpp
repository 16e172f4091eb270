// io/safetensors: reading valid files and folders (single and sharded), writing, and every
// validation rule the header states, each with a file built byte by byte here.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::fresh_temp_dir;

// A safetensors file from its parts; header_len overrides the 8-byte length field.
std::string raw_file(const std::string& header, const std::string& data,
                     std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t len = header_len.value_or(header.size());
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &len, 8);
  return bytes + header + data;
}

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Expects constructing a SafetensorsFile at `path` to fail with a message containing each part.
void expect_rejected(const fs::path& path, const std::vector<std::string>& parts) {
  try {
    SafetensorsFile f(path.string());
    ADD_FAILURE() << path << " was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.exit_code(), 1);
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = fresh_temp_dir("safetensors"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& bytes) {
    const auto p = dir_ / name;
    test::write_file(p, bytes);
    return p;
  }
  // One header entry.
  static json entry(const std::string& dtype, json shape, uint64_t begin, uint64_t end) {
    return {{"dtype", dtype}, {"shape", std::move(shape)}, {"data_offsets", {begin, end}}};
  }
  fs::path dir_;
};

TEST_F(SafetensorsTest, ReadsEveryDtypeOfAHandWrittenFile) {
  const std::vector<float> f32 = {1.0f, -2.5f, 1e-3f};
  const std::vector<uint16_t> f16 = {0x3c00, 0x0001, 0xfc00, 0x7e00};  // 1, 2^-24, -inf, nan
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc020};                // 1, -2.5
  const std::vector<double> f64 = {0.25, -8.0};
  const std::vector<int64_t> i64 = {5, -1, 1LL << 40};
  const std::vector<int32_t> i32 = {7, 319};
  std::string data = bytes_of(f32) + bytes_of(f16) + bytes_of(bf16) + bytes_of(f64) +
                     bytes_of(i64) + bytes_of(i32);
  size_t o = 0;
  const auto next = [&o](size_t n) {
    const size_t b = o;
    o += n;
    return std::pair<size_t, size_t>{b, o};
  };
  json h;
  auto r = next(12);
  h["a.f32"] = entry("F32", {3}, r.first, r.second);
  r = next(8);
  h["b.f16"] = entry("F16", {2, 2}, r.first, r.second);
  r = next(4);
  h["c.bf16"] = entry("BF16", {1, 2}, r.first, r.second);
  r = next(16);
  h["d.f64"] = entry("F64", {2}, r.first, r.second);
  r = next(24);
  h["e.i64"] = entry("I64", {3}, r.first, r.second);
  r = next(8);
  h["f.i32"] = entry("I32", {2}, r.first, r.second);
  h["g.scalar_empty"] = entry("F32", {0, 4}, o, o);  // empty tensors are legal
  h["__metadata__"] = {{"format", "pt"}, {"note", ""}};
  const auto path = write("all.safetensors", raw_file(h.dump(), data));

  SafetensorsFile f(path.string());
  EXPECT_EQ(f.tensors().size(), 7u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.get("a.f32").to_f32(), f32);
  const auto half = f.get("b.f16").to_f32();
  EXPECT_EQ(f.get("b.f16").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(half[0], 1.0f);
  EXPECT_EQ(half[1], std::ldexp(1.0f, -24));
  EXPECT_EQ(half[2], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(half[3]));
  EXPECT_EQ(f.get("c.bf16").to_f32(), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(f.get("d.f64").to_f32(), (std::vector<float>{0.25f, -8.0f}));
  EXPECT_EQ(read_int_tensor(f.get("e.i64")), i64);
  EXPECT_EQ(read_int_tensor(f.get("f.i32")), (std::vector<int64_t>{7, 319}));
  EXPECT_EQ(f.get("g.scalar_empty").numel(), 0);
  EXPECT_TRUE(f.get("g.scalar_empty").to_f32().empty());
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_THROW(read_int_tensor(f.get("a.f32")), Error);      // floating is not an id tensor
  EXPECT_THROW(f.get("f.i32").to_f32(), Error);              // integers are not weights
  try {
    f.get("missing.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.weight"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
  }
}

TEST_F(SafetensorsTest, WriteThenReadRoundTrips) {
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  const std::vector<int32_t> ids = {1, 2, 3};
  const auto path = (dir_ / "out.safetensors").string();
  write_safetensors(path,
                    {{"logits", make_f32_tensor({1, 2, 3}, logits)},
                     {"ids", make_i32_tensor({3}, ids)}},
                    {{"source", "test"}});
  const std::string bytes = test::read_file(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);  // data section aligned
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("source"), "test");
  EXPECT_EQ(f.get("logits").shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(f.get("logits").dtype, DType::kF32);
  EXPECT_EQ(f.get("logits").to_f32(), logits);
  EXPECT_EQ(f.get("ids").dtype, DType::kI32);
  EXPECT_EQ(read_int_tensor(f.get("ids")), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THROW(write_safetensors((dir_ / "no/such/dir/x.safetensors").string(), {}), Error);
}

TEST_F(SafetensorsTest, RejectsShortAndMissingFiles) {
  expect_rejected(write("empty.safetensors", ""), {"empty.safetensors", "truncated"});
  expect_rejected(write("four.safetensors", "abcd"), {"four.safetensors", "truncated"});
  expect_rejected(dir_ / "nonexistent.safetensors", {"nonexistent.safetensors", "cannot open"});
  fs::create_directories(dir_ / "adir");
  expect_rejected(dir_ / "adir", {"adir", "not a regular file"});
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastTheEnd) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::string data(4, '\0');
  expect_rejected(write("len1.safetensors", raw_file(header, data, header.size() + 5)),
                  {"len1.safetensors", "header length"});
  expect_rejected(write("len2.safetensors", raw_file(header, data, ~uint64_t{0})),
                  {"len2.safetensors", "header length"});
  expect_rejected(write("len3.safetensors", raw_file(header, data, uint64_t{1} << 63)),
                  {"len3.safetensors", "header length"});
  // Exactly to the end: valid length, but then the tensor's bytes are gone.
  expect_rejected(write("len4.safetensors", raw_file(header, data, header.size() + 4)),
                  {"len4.safetensors"});
}

TEST_F(SafetensorsTest, RejectsMalformedHeaders) {
  expect_rejected(write("j1.safetensors", raw_file("{\"a\": ", "")), {"j1.safetensors", "JSON"});
  expect_rejected(write("j2.safetensors", raw_file("[1, 2]", "")), {"j2.safetensors", "not a JSON object"});
  expect_rejected(write("j3.safetensors", raw_file(std::string("\xff\xfe{}", 4), "")),
                  {"j3.safetensors"});
  expect_rejected(write("j4.safetensors", raw_file(R"({"a": 5})", "")), {"j4.safetensors", "'a'"});
  expect_rejected(write("j5.safetensors", raw_file(R"({"a": {"dtype": "F32", "shape": [1]}})", "")),
                  {"'a'", "data_offsets"});
  expect_rejected(
      write("j6.safetensors", raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "")),
      {"'a'", "data_offsets"});
  expect_rejected(
      write("j7.safetensors",
            raw_file(R"({"a": {"dtype": 1, "shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0'))),
      {"'a'", "dtype"});
  expect_rejected(
      write("j8.safetensors",
            raw_file(R"({"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", std::string(4, '\0'))),
      {"'a'", "shape"});
}

TEST_F(SafetensorsTest, RejectsBadDtypesShapesAndOffsets) {
  const std::string d16(16, '\0');
  const auto one = [&](const std::string& name, json e) {
    json h;
    h["w"] = std::move(e);
    return write(name, raw_file(h.dump(), d16));
  };
  expect_rejected(one("dt.safetensors", entry("F8_E9", {4}, 0, 16)), {"'w'", "unknown dtype 'F8_E9'"});
  expect_rejected(one("neg.safetensors", entry("F32", {-4}, 0, 16)), {"'w'", "shape"});
  expect_rejected(one("flt.safetensors", entry("F32", {4.5}, 0, 16)), {"'w'", "shape"});
  expect_rejected(one("str.safetensors", entry("F32", {"4"}, 0, 16)), {"'w'", "shape"});
  expect_rejected(one("huge.safetensors", entry("F32", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 16)),
                  {"'w'", "too large"});
  // A dimension above INT64_MAX cannot be a shape even when another dimension is 0.
  expect_rejected(one("huge0.safetensors", entry("F32", {uint64_t{0}, ~uint64_t{0}}, 0, 0)),
                  {"'w'", "too large"});
  expect_rejected(one("end.safetensors", entry("F32", {5}, 0, 20)), {"'w'", "out of range"});
  expect_rejected(one("rev.safetensors", entry("F32", {0}, 8, 4)), {"'w'", "out of range"});
  expect_rejected(one("big.safetensors", entry("F32", {1}, ~uint64_t{0} - 2, ~uint64_t{0} + 2)),
                  {"'w'", "out of range"});
  json negoff = entry("F32", {4}, 0, 16);
  negoff["data_offsets"] = {-4, 12};
  expect_rejected(one("negoff.safetensors", negoff), {"'w'", "data_offsets"});
  expect_rejected(one("size.safetensors", entry("F32", {3}, 0, 16)), {"'w'", "16 bytes", "needs 12"});
  expect_rejected(one("size2.safetensors", entry("BF16", {4}, 0, 16)), {"'w'", "needs 8"});

  json h;
  h["first"] = entry("F32", {3}, 0, 12);
  h["second"] = entry("F32", {2}, 8, 16);
  expect_rejected(write("ovl.safetensors", raw_file(h.dump(), d16)), {"'first'", "'second'", "overlap"});
  json h2;
  h2["outer"] = entry("F32", {4}, 0, 16);
  h2["inner"] = entry("F32", {1}, 4, 8);
  expect_rejected(write("ovl2.safetensors", raw_file(h2.dump(), d16)), {"'inner'", "'outer'", "overlap"});
  json h3;  // three ranges where only the first and third overlap
  h3["a"] = entry("F32", {4}, 0, 16);
  h3["b"] = entry("F32", {0}, 4, 4);
  h3["c"] = entry("F32", {1}, 8, 12);
  expect_rejected(write("ovl3.safetensors", raw_file(h3.dump(), d16)), {"'a'", "'c'", "overlap"});
}

TEST_F(SafetensorsTest, AcceptsAdjacentAndEmptyTensors) {
  json h;
  h["a"] = entry("F32", {2}, 0, 8);
  h["b"] = entry("F32", {2}, 8, 16);
  h["empty_at_0"] = entry("F32", {0}, 0, 0);
  h["empty_at_8"] = entry("I64", {0, 3}, 8, 8);
  SafetensorsFile f(write("adj.safetensors", raw_file(h.dump(), std::string(16, '\0'))).string());
  EXPECT_EQ(f.tensors().size(), 4u);
}

// A folder with model.safetensors.index.json and two shards, as Hugging Face saves large models.
class ShardedFolderTest : public SafetensorsTest {
 protected:
  void SetUp() override {
    SafetensorsTest::SetUp();
    write_safetensors((dir_ / "model-00001-of-00002.safetensors").string(),
                      {{"a.weight", make_f32_tensor({2, 2}, a_)}, {"b.weight", make_f32_tensor({1}, b_)}});
    write_safetensors((dir_ / "model-00002-of-00002.safetensors").string(),
                      {{"c.weight", make_f32_tensor({3}, c_)}});
    index_ = {{"metadata", {{"total_size", 32}}},
              {"weight_map",
               {{"a.weight", "model-00001-of-00002.safetensors"},
                {"b.weight", "model-00001-of-00002.safetensors"},
                {"c.weight", "model-00002-of-00002.safetensors"}}}};
  }
  void write_index() { test::write_file(dir_ / "model.safetensors.index.json", index_.dump()); }
  void expect_folder_rejected(const std::vector<std::string>& parts) {
    write_index();
    try {
      TensorStore::open_folder(dir_.string());
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
  }
  std::vector<float> a_ = {1, 2, 3, 4}, b_ = {5}, c_ = {6, 7, 8};
  json index_;
};

TEST_F(ShardedFolderTest, ReadsBothShards) {
  write_index();
  const auto store = TensorStore::open_folder(dir_.string());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(store.get("a.weight").to_f32(), a_);
  EXPECT_EQ(store.get("b.weight").to_f32(), b_);
  EXPECT_EQ(store.get("c.weight").to_f32(), c_);
  EXPECT_NE(store.get("c.weight").file->find("model-00002-of-00002"), std::string::npos);
  EXPECT_EQ(store.find("d.weight"), nullptr);
  try {
    store.get("d.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'d.weight'"), std::string::npos);
  }
  store.release_pages();
  EXPECT_EQ(store.get("a.weight").to_f32(), a_);  // pages come back from the file
}

TEST_F(ShardedFolderTest, IndexWinsOverASingleFile) {
  write_index();
  write_safetensors((dir_ / "model.safetensors").string(), {{"z", make_f32_tensor({1}, b_)}});
  const auto store = TensorStore::open_folder(dir_.string());
  EXPECT_EQ(store.names().size(), 3u);
}

TEST_F(ShardedFolderTest, RejectsAMissingShard) {
  index_["weight_map"]["c.weight"] = "model-00003-of-00002.safetensors";
  expect_folder_rejected({"model-00003-of-00002.safetensors"});
}

TEST_F(ShardedFolderTest, RejectsATensorTheIndexPutsInTheWrongShard) {
  index_["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors";
  expect_folder_rejected({"'c.weight'", "model-00001-of-00002.safetensors"});
}

TEST_F(ShardedFolderTest, RejectsATensorInTwoShards) {
  write_safetensors((dir_ / "model-00002-of-00002.safetensors").string(),
                    {{"c.weight", make_f32_tensor({3}, c_)}, {"a.weight", make_f32_tensor({2, 2}, a_)}});
  expect_folder_rejected({"'a.weight'", "two shards"});
}

TEST_F(ShardedFolderTest, RejectsBadIndexFiles) {
  test::write_file(dir_ / "model.safetensors.index.json", "{\"weight_map\": ");
  try {
    TensorStore::open_folder(dir_.string());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors.index.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("malformed JSON"), std::string::npos);
  }
  index_ = {{"metadata", {}}};
  expect_folder_rejected({"model.safetensors.index.json", "weight_map"});
  index_ = {{"weight_map", {{"a.weight", 3}}}};
  expect_folder_rejected({"model.safetensors.index.json", "'a.weight'"});
  index_ = {{"weight_map", {{"a.weight", "../model-00001-of-00002.safetensors"}}}};
  expect_folder_rejected({"model.safetensors.index.json", "../model-00001-of-00002.safetensors"});
  index_ = {{"weight_map", {{"a.weight", ".."}}}};
  expect_folder_rejected({"model.safetensors.index.json", "'..'"});
  index_ = json::array();
  expect_folder_rejected({"model.safetensors.index.json"});
}

TEST_F(SafetensorsTest, OpenFolderRejectsNonFolders) {
  const auto expect_msg = [](const std::string& folder, const std::string& part) {
    try {
      TensorStore::open_folder(folder);
      ADD_FAILURE() << folder;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(folder), std::string::npos) << e.what();
    }
  };
  expect_msg((dir_ / "nowhere").string(), "no such file");
  test::write_file(dir_ / "file.txt", "x");
  expect_msg((dir_ / "file.txt").string(), "not a model folder");
  expect_msg(dir_.string(), "no model.safetensors");
}

// Empty id tensors read as no ids (memcpy(nullptr, ..., 0) before: undefined behaviour, which
// fails under -fsanitize=undefined, the fuzz build, not in a plain build).
TEST_F(SafetensorsTest, ReadsEmptyIntTensors) {
  json h;
  h["i64"] = entry("I64", {0}, 0, 0);
  h["i32"] = entry("I32", {3, 0}, 0, 0);
  SafetensorsFile f(write("empty-ids.safetensors", raw_file(h.dump(), "")).string());
  EXPECT_TRUE(read_int_tensor(f.get("i64")).empty());
  EXPECT_TRUE(read_int_tensor(f.get("i32")).empty());
}

TEST_F(SafetensorsTest, ReadIntTensorNamesFileAndTensor) {
  const auto path = (dir_ / "ids.safetensors").string();
  write_safetensors(path, {{"ids", make_f32_tensor({2}, std::vector<float>{1, 2})}});
  SafetensorsFile f(path);
  try {
    read_int_tensor(f.get("ids"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'ids'"), std::string::npos) << e.what();
  }
}

// Header lengths 0..7 (what the length field holds, and files shorter than the field itself) and
// above the Rust crate's 100 MB limit: one Error naming the header.
TEST_F(SafetensorsTest, RejectsTinyAndHugeHeaderLengths) {
  json h;
  h["w"] = entry("F32", {2}, 0, 8);
  const std::string header = h.dump(), data(8, '\0');
  for (uint64_t len = 0; len < 8; ++len) {
    SCOPED_TRACE(len);
    const auto path = write("len" + std::to_string(len) + ".safetensors", raw_file(header, data, len));
    expect_rejected(path, {path.filename().string(), "header"});
    const auto tiny = write("file" + std::to_string(len) + ".safetensors", std::string(len, '\x01'));
    expect_rejected(tiny, {tiny.filename().string(), "truncated"});
  }
  expect_rejected(write("huge.safetensors", raw_file(header, data, 100'000'001)),
                  {"huge.safetensors", "header length 100000001", "larger than the 100000000 bytes"});
  // A file that does hold that many bytes (sparse: nothing is written) is refused before any of
  // them is read.
  const auto sparse = write("sparse.safetensors", raw_file(header, data, 100'000'001));
  fs::resize_file(sparse, 8 + 100'000'001 + 8);
  const auto start = std::chrono::steady_clock::now();
  expect_rejected(sparse, {"sparse.safetensors", "larger than the 100000000 bytes"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), test::time_limit(1.0));
}

// The tensors must tile the data section, as the Rust crate requires: a hole between two, before
// the first or after the last is a damaged file.
TEST_F(SafetensorsTest, RejectsHolesAndTrailingBytes) {
  const std::string d24(24, '\0');
  json hole;
  hole["a"] = entry("F32", {2}, 0, 8);
  hole["b"] = entry("F32", {2}, 16, 24);
  expect_rejected(write("hole.safetensors", raw_file(hole.dump(), d24)),
                  {"hole.safetensors", "bytes 8..16", "hole before tensor 'b'"});
  json front;
  front["a"] = entry("F32", {4}, 8, 24);
  expect_rejected(write("front.safetensors", raw_file(front.dump(), d24)),
                  {"bytes 0..8", "hole before tensor 'a'"});
  json tail;
  tail["a"] = entry("F32", {2}, 0, 8);
  tail["b"] = entry("F32", {2}, 8, 16);
  expect_rejected(write("tail.safetensors", raw_file(tail.dump(), d24)),
                  {"tail.safetensors", "8 bytes after the last tensor 'b'"});
  expect_rejected(write("only.safetensors", raw_file("{}", d24)), {"24 bytes after the last tensor"});
  // Empty tensors occupy no bytes: wherever they point, they leave no hole.
  tail["e"] = entry("F32", {0}, 16, 16);
  SafetensorsFile ok(write("exact.safetensors", raw_file(tail.dump(), std::string(16, '\0'))).string());
  EXPECT_EQ(ok.tensors().size(), 3u);
}

// nlohmann keeps the last of two equal keys; a header naming a tensor twice is refused.
TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  const std::string w = R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  expect_rejected(write("dup.safetensors", raw_file("{\"w\": " + w + ", \"w\": " + w + "}", std::string(8, '\0'))),
                  {"dup.safetensors", "names 'w' twice"});
  expect_rejected(write("dupmeta.safetensors",
                        raw_file(R"({"__metadata__": {}, "w": )" + w + R"(, "__metadata__": {"a": "b"}})",
                                 std::string(8, '\0'))),
                  {"names '__metadata__' twice"});
  // The same key in two different objects is not a duplicate.
  SafetensorsFile f(write("nested.safetensors",
                          raw_file(R"({"__metadata__": {"w": "x"}, "w": )" + w + "}", std::string(8, '\0')))
                        .string());
  EXPECT_EQ(f.metadata().at("w"), "x");
}

// __metadata__ is a map of strings (or null), as the Rust crate reads it.
TEST_F(SafetensorsTest, RejectsNonStringMetadata) {
  const std::string w = R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  const auto with_meta = [&](const std::string& name, const std::string& meta) {
    return write(name, raw_file("{\"__metadata__\": " + meta + ", " + w + "}", std::string(8, '\0')));
  };
  expect_rejected(with_meta("m1.safetensors", R"({"format": "pt", "step": 3})"),
                  {"m1.safetensors", "__metadata__ 'step' must be a string, got number"});
  expect_rejected(with_meta("m2.safetensors", R"({"a": null})"), {"__metadata__ 'a'", "null"});
  expect_rejected(with_meta("m3.safetensors", R"({"a": {"b": "c"}})"), {"__metadata__ 'a'", "object"});
  expect_rejected(with_meta("m4.safetensors", R"({"a": ["x"]})"), {"__metadata__ 'a'", "array"});
  expect_rejected(with_meta("m5.safetensors", R"(["format", "pt"])"),
                  {"__metadata__ must be an object of strings, got array"});
  expect_rejected(with_meta("m6.safetensors", "7"), {"__metadata__", "number"});
  EXPECT_TRUE(SafetensorsFile(with_meta("null.safetensors", "null").string()).metadata().empty());
}

TEST_F(SafetensorsTest, RejectsDeeplyNestedHeaders) {
  const std::string deep(100000, '[');
  const auto start = std::chrono::steady_clock::now();
  expect_rejected(write("deep.safetensors", raw_file("{\"__metadata__\": " + deep, "")),
                  {"deep.safetensors", "nested deeper than"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), test::time_limit(1.0));
}

TEST(SafetensorsShape, ShapeStr) {
  EXPECT_EQ(shape_str(std::vector<int64_t>{}), "[]");
  EXPECT_EQ(shape_str(std::vector<int64_t>{3}), "[3]");
  EXPECT_EQ(shape_str(std::vector<int64_t>{2, 37, 320}), "[2, 37, 320]");
}

}  // namespace
}  // namespace kllens
