// safetensors files: 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the data. Everything is validated before any view is made,
// as strictly as the Rust safetensors crate reads files: header bounds (at most 100,000,000
// bytes), JSON (nested at most kMaxJsonDepth), each name once, __metadata__ a map of strings,
// dtypes, byte size = numel x dtype size, offsets in bounds, non-overlapping and tiling the data
// section (no hole, no byte after the last tensor). A model folder holds one file or shards
// listed in model.safetensors.index.json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace kllens {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  const std::string* file = nullptr;  // for error messages

  int64_t numel() const;
  // Converts a floating tensor to float32 (throws Error for non-floating dtypes).
  std::vector<float> to_f32() const;
  // Drops this tensor's mapped pages from the resident set once it has been converted, so
  // loading never holds the file's pages and the float32 copies of the whole model at once.
  void release_pages() const;
};

std::string shape_str(std::span<const int64_t> shape);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates; throws Error
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws Error naming file and tensor
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }
  void release_pages() const { file_.release_pages(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

class PytorchCheckpoint;  // io/pytorch_checkpoint.h

// All tensors of a Hugging Face model folder: model.safetensors, its shards
// (model.safetensors.index.json), or else PyTorch's pytorch_model.bin or its shards.
class TensorStore {
 public:
  static TensorStore open_folder(const std::string& folder);
  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;
  void release_pages() const;
  // Gives every tensor the name new_name(old) (a checkpoint's names mapped to the family's);
  // two tensors given one name are an Error naming `what`.
  void rename(const std::function<std::string(const std::string&)>& new_name, const std::string& what);
  void drop(const std::string& name);

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::shared_ptr<const PytorchCheckpoint>> checkpoints_;
  std::map<std::string, const TensorView*> index_;
};

// Writing (for CLI outputs such as logits and token ids). Tensors are written in name order.
struct OwnedTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
OwnedTensor make_f32_tensor(std::vector<int64_t> shape, std::span<const float> values);
OwnedTensor make_i32_tensor(std::vector<int64_t> shape, std::span<const int32_t> values);
// The bytes before the data section: the header's length (u64, little-endian) and its JSON,
// padded with spaces so that the data starts 8-byte aligned.
std::string safetensors_header_bytes(const nlohmann::json& header);
void write_safetensors(const std::string& path, const std::map<std::string, OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads an integer tensor (I32 or I64) as int64 values, e.g. token ids; throws Error otherwise.
std::vector<int64_t> read_int_tensor(const TensorView& view);

}  // namespace kllens
