#include "io/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/json_file.h"
#include "io/pytorch_checkpoint.h"

namespace kllens {

using json = nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_to_f32(dtype, data, out.size(), out.data());
  return out;
}

void TensorView::release_pages() const { release_mapped_range(data, nbytes); }

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {
// The Rust safetensors crate, which transformers reads checkpoints with, refuses longer headers.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < 8) fail("{}: truncated safetensors file ({} bytes, need at least 8)", path, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_.data(), 8);
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} is larger than the {} bytes safetensors allows", path, header_len,
         kMaxHeaderBytes);
  if (header_len > size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes)", path, header_len, size);
  const std::string_view header_text(reinterpret_cast<const char*>(file_.data() + 8), header_len);
  check_json_depth(header_text, path + ": safetensors header");
  // nlohmann keeps the last of two equal keys; the callback sees every key of the top-level
  // object, so a name given twice is refused instead of silently taking the second entry.
  std::set<std::string> names;
  std::string duplicate;
  const auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && duplicate.empty() &&
        !names.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(header_text.begin(), header_text.end(), on_event);
  } catch (const json::exception& e) {
    fail("{}: malformed safetensors JSON header: {}", path, e.what());
  }
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", path);
  if (!duplicate.empty()) fail("{}: the header names '{}' twice", path, duplicate);

  const size_t data_begin = 8 + header_len;
  const size_t data_size = size - data_begin;
  struct Range {
    uint64_t begin, end;
    std::string name;
    bool operator<(const Range& o) const {
      return std::tie(begin, end, name) < std::tie(o.begin, o.end, o.name);
    }
  };
  std::vector<Range> ranges;  // non-empty tensors, for the overlap check
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      // A map of strings to strings (the Rust crate refuses any other value).
      if (entry.is_null()) continue;
      if (!entry.is_object())
        fail("{}: __metadata__ must be an object of strings, got {}", path, entry.type_name());
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string())
          fail("{}: __metadata__ '{}' must be a string, got {}", path, k, v.type_name());
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      fail("{}: tensor '{}': header entry needs dtype, shape and two data_offsets", path, name);
    TensorView view;
    view.name = name;
    const std::string dtype_str = entry["dtype"].get<std::string>();
    auto dtype = parse_safetensors_dtype(dtype_str);
    if (!dtype) fail("{}: tensor '{}': unknown dtype '{}'", path, name, dtype_str);
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        fail("{}: tensor '{}': shape must hold non-negative integers", path, name);
      const uint64_t dim = d.get<uint64_t>();
      // Each dimension must fit int64_t (TensorView::shape) even when another one is 0.
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim > 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim))
        fail("{}: tensor '{}': shape {} is too large", path, name, entry["shape"].dump());
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offs = entry["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      fail("{}: tensor '{}': data_offsets must be non-negative integers", path, name);
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] out of range (data section is {} bytes)", path,
           name, begin, end, data_size);
    const uint64_t expected = numel * dtype_size(view.dtype);
    if (end - begin != expected)
      fail("{}: tensor '{}': {} bytes stored but shape {} x {} needs {}", path, name, end - begin,
           shape_str(view.shape), dtype_str, expected);
    view.data = file_.data() + data_begin + begin;
    view.nbytes = end - begin;
    view.file = &file_.path();
    if (end > begin) ranges.push_back({begin, end, name});  // empty tensors occupy no bytes
    tensors_.emplace(name, std::move(view));
  }
  // Sorted by start, a range overlaps an earlier one iff it starts before the furthest end seen
  // so far (comparing neighbours only would miss a long range covering several later ones).
  std::sort(ranges.begin(), ranges.end());
  const Range* furthest = nullptr;
  for (const auto& r : ranges) {
    if (furthest && r.begin < furthest->end)
      fail("{}: tensors '{}' and '{}' overlap (bytes {}..{} and {}..{} of the data section)", path,
           furthest->name, r.name, furthest->begin, furthest->end, r.begin, r.end);
    if (!furthest || r.end > furthest->end) furthest = &r;
  }
  // Disjoint and sorted, the tensors must also tile the data section, as every safetensors writer
  // lays them out and the Rust crate demands: bytes that belong to no tensor are a damaged or
  // hand-edited file (a tensor dropped from the header, data appended).
  uint64_t covered = 0;
  for (const auto& r : ranges) {
    if (r.begin > covered)
      fail("{}: bytes {}..{} of the data section belong to no tensor (a hole before tensor '{}')",
           path, covered, r.begin, r.name);
    covered = r.end;
  }
  if (covered < data_size)
    fail("{}: {} bytes after the last tensor{} belong to no tensor (the data section is {} bytes)",
         path, data_size - covered, ranges.empty() ? "" : " '" + ranges.back().name + "'",
         data_size);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  const TensorView* v = find(name);
  if (!v) fail("{}: tensor '{}' not found", path(), name);
  return *v;
}

TensorStore TensorStore::open_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  TensorStore store;
  if (!fs::exists(folder)) fail("{}: no such file or directory", folder);
  if (!fs::is_directory(folder)) fail("{}: not a model folder", folder);
  // safetensors first, as transformers prefers them; then PyTorch's pickled checkpoints.
  std::string index_name, single_name;
  for (const char* stem : {"model.safetensors", "pytorch_model.bin"}) {
    if (fs::exists(fs::path(folder) / (std::string(stem) + ".index.json"))) {
      index_name = std::string(stem) + ".index.json";
      break;
    }
    if (fs::exists(fs::path(folder) / stem)) {
      single_name = stem;
      break;
    }
  }
  std::vector<std::string> shard_files;
  std::map<std::string, std::string> claimed;  // tensor -> shard, as the index states it
  if (!index_name.empty()) {
    const fs::path index_path = fs::path(folder) / index_name;
    const json index = read_json_file(index_path.string());
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: no weight_map object", index_path.string());
    std::set<std::string> unique;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail("{}: weight_map['{}'] is not a file name", index_path.string(), name);
      const std::string f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        fail("{}: shard name '{}' must be a file in the folder", index_path.string(), f);
      unique.insert(f);
      claimed.emplace(name, f);
    }
    shard_files.assign(unique.begin(), unique.end());
  } else if (!single_name.empty()) {
    shard_files.push_back(single_name);
  } else {
    fail("{}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin", folder);
  }
  for (const auto& f : shard_files) {
    const std::string path = (fs::path(folder) / f).string();
    const std::map<std::string, TensorView>* tensors = nullptr;
    if (f.ends_with(".safetensors")) {
      store.files_.push_back(std::make_unique<SafetensorsFile>(path));
      tensors = &store.files_.back()->tensors();
    } else {
      store.checkpoints_.push_back(std::make_shared<PytorchCheckpoint>(path));
      tensors = &store.checkpoints_.back()->tensors();
    }
    for (const auto& [name, view] : *tensors) {
      if (store.index_.count(name))
        fail("{}: tensor '{}' appears in two shards", folder, name);
      store.index_[name] = &view;
    }
  }
  // A stale index (tensor moved or dropped when the shards were rewritten) would otherwise
  // surface later as a confusing "missing tensor"; name the shard the index points at instead.
  for (const auto& [name, shard] : claimed)
    if (!store.index_.count(name))
      fail("{}: the index puts tensor '{}' in {}, which has no such tensor", folder, name, shard);
  return store;
}

void TensorStore::rename(const std::function<std::string(const std::string&)>& new_name,
                         const std::string& what) {
  std::map<std::string, const TensorView*> renamed;
  for (const auto& [name, view] : index_) {
    const std::string to = new_name(name);
    if (!renamed.emplace(to, view).second)
      fail("{}: two tensors are both named '{}' once renamed", what, to);
  }
  index_ = std::move(renamed);
}

void TensorStore::drop(const std::string& name) { index_.erase(name); }

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& TensorStore::get(const std::string& name) const {
  const TensorView* v = find(name);
  if (!v) fail("model is missing tensor '{}'", name);
  return *v;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : index_) out.push_back(name);
  return out;
}

void TensorStore::release_pages() const {
  for (const auto& f : files_) f->release_pages();
  for (const auto& f : checkpoints_) f->release_pages();
}

OwnedTensor make_f32_tensor(std::vector<int64_t> shape, std::span<const float> values) {
  OwnedTensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.bytes.resize(values.size_bytes());
  // An empty span's data() may be null, and memcpy from null is undefined even for 0 bytes
  // (found by scripts/test-sanitized: UBSan in CliBadInput.IdFiles).
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size_bytes());
  return t;
}

OwnedTensor make_i32_tensor(std::vector<int64_t> shape, std::span<const int32_t> values) {
  OwnedTensor t;
  t.dtype = DType::kI32;
  t.shape = std::move(shape);
  t.bytes.resize(values.size_bytes());
  // An empty span's data() may be null, and memcpy from null is undefined even for 0 bytes
  // (found by scripts/test-sanitized: UBSan in CliBadInput.IdFiles).
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size_bytes());
  return t;
}

std::string safetensors_header_bytes(const json& header) {
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // align the data section (8 + text)
  const uint64_t len = text.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  return out + text;
}

void write_safetensors(const std::string& path, const std::map<std::string, OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", std::string(dtype_name(t.dtype))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  const std::string head = safetensors_header_bytes(header);
  write_stream_durably(path, [&](std::ostream& out) {
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    for (const auto& [name, t] : tensors)
      out.write(reinterpret_cast<const char*>(t.bytes.data()),
                static_cast<std::streamsize>(t.bytes.size()));
  });
}

std::vector<int64_t> read_int_tensor(const TensorView& view) {
  const auto n = static_cast<size_t>(view.numel());
  std::vector<int64_t> out(n);
  if (view.dtype == DType::kI64) {
    if (n > 0) std::memcpy(out.data(), view.data, n * 8);  // an empty out's data() may be null
  } else if (view.dtype == DType::kI32) {
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, view.data + 4 * i, 4);
      out[i] = v;
    }
  } else {
    fail("{}: tensor '{}' has dtype {}, expected I32 or I64", view.file ? *view.file : "?",
         view.name, dtype_name(view.dtype));
  }
  return out;
}

}  // namespace kllens
