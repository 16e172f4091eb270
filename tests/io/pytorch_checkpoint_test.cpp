// PyTorch checkpoints: the archives of data/fixtures/mamba-ssm-native/bad (written by
// tools/make_pytorch_fixtures.py as torch.save lays them out) and hand-written pickles. A valid
// one reads in place; every hostile one is one Error naming what is wrong, quickly, and no pickle
// can make the reader do anything but build a state dict.
#include "io/pytorch_checkpoint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using namespace std::string_literals;  // pickles hold NUL bytes

std::string bad(const std::string& name) {
  return test::repo_path("data/fixtures/mamba-ssm-native/bad/" + name);
}

TEST(PytorchCheckpoint, ReadsTensorsInPlaceIncludingViewsOfOneStorage) {
  const PytorchCheckpoint ckpt(bad("valid.bin"));
  ASSERT_EQ(ckpt.tensors().size(), 2u);
  const TensorView& w = ckpt.tensors().at("w");
  EXPECT_EQ(w.dtype, DType::kF32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.to_f32(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  // "row" is elements 3..5 of the same storage (offset 3), as a slice saved by torch.save is.
  const TensorView& row = ckpt.tensors().at("row");
  EXPECT_EQ(row.to_f32(), (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(row.data, w.data + 12);
  // torch.save aligns storages to 64 bytes within the file; the reader keeps them in place.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data) % 64, 0u);
}

TEST(PytorchCheckpoint, HostileArchivesGiveOneClearError) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"compressed.bin", {"compressed (method 8)"}},
      {"big_endian.bin", {"'big'-endian"}},
      {"non_contiguous.bin", {"not contiguous"}},
      {"past_storage.bin", {"does not fit its storage of 6 elements"}},
      {"storage_size_lies.bin", {"storage '0' says 7 elements", "24 bytes"}},
      {"missing_storage.bin", {"storage '0' has no data/0 entry"}},
      {"not_a_state_dict.bin", {"'model' is a dict, not a tensor"}},
      {"os_system.bin", {"global 'os.system'", "refused"}},
      {"bad_crc.bin", {"archive/data/0", "corrupt (CRC-32"}},
      {"lying_size.bin", {"archive/data/0", "contradicts the central directory"}},
      {"truncated.bin", {"no end-of-central-directory record"}},
      {"legacy.bin", {"not a ZIP archive"}},
  };
  for (const auto& [file, parts] : cases) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> want = parts;
    want.push_back(file);
    expect_error([&] { PytorchCheckpoint c(bad(file)); }, want, file);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
              test::time_limit(1.0))
        << file;
  }
}

// Pickles written by hand, opcode by opcode (protocol 2), without an archive.
std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
std::string unpickle_error(const std::string& pickle) {
  static const std::map<std::string, std::span<const std::byte>> no_storages;
  static const std::string path = "test.pkl";
  return test::error_of([&] { (void)unpickle_state_dict(bytes(pickle), no_storages, path); });
}

TEST(PytorchCheckpoint, PickleOpcodesOutsideAStateDictAreRefused) {
  const std::string proto = "\x80\x02";
  // builtins.eval through STACK_GLOBAL (protocol 4's spelling of GLOBAL).
  EXPECT_NE(unpickle_error(proto + "\x8c\x08" "builtins" "\x8c\x04" "eval" "\x93").find("'builtins.eval'"),
            std::string::npos);
  // INST (protocol 0's object construction) and NEWOBJ are never part of a state dict.
  EXPECT_NE(unpickle_error(proto + "(i__main__\nX\n.").find("opcode 0x69 ('i')"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "\x81.").find("opcode 0x81"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "h\x05.").find("memo entry 5, which was never stored"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "a.").find("empty stack"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "}").find("without its STOP"), std::string::npos);
  EXPECT_NE(unpickle_error(proto + "\x8a\x09" "123456789.").find("beyond 64 bits"), std::string::npos);
  // A length of 2^64 - 1 is checked against the bytes left before anything is allocated.
  EXPECT_NE(unpickle_error(proto + "\x8d\xff\xff\xff\xff\xff\xff\xff\xff").find("runs past the end"),
            std::string::npos);
  EXPECT_NE(unpickle_error(proto + "K\x01.").find("holds an int, not a state dict"), std::string::npos);
  // A dict whose value is a list that contains itself: no walk follows it, so no loop.
  EXPECT_NE(unpickle_error(proto + "}X\x01\x00\x00\x00w]q\x00h\x00" "as."s).find("'w' is a list"),
            std::string::npos);
}

TEST(PytorchCheckpoint, DeepNestingCostsLinearTimeAndNoRecursion) {
  // A million lists, each appended into the one below it: a chain a million deep.
  const int n = 1'000'000;
  std::string p = "\x80\x02}X\x01\x00\x00\x00w"s;
  p.append(n, ']');
  p.append(n - 1, 'a');
  p += "s.";
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(unpickle_error(p).find("'w' is a list"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
            test::time_limit(1.0));
}

TEST(PytorchCheckpoint, AFolderWithOnlyPytorchModelBinLoadsIt) {
  const fs::path dir = test::fresh_temp_dir("pytorch-folder");
  fs::copy_file(bad("valid.bin"), dir / "pytorch_model.bin");
  const TensorStore store = TensorStore::open_folder(dir.string());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"row", "w"}));
  EXPECT_EQ(store.get("w").to_f32()[5], 6.0f);
  // safetensors win when both are there, as in transformers.
  fs::copy_file(bad("non_contiguous.bin"), dir / "model.safetensors");
  expect_error([&] { (void)TensorStore::open_folder(dir.string()); }, {"model.safetensors"});
}

}  // namespace
}  // namespace kllens
