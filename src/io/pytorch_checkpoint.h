// PyTorch checkpoints (pytorch_model.bin as torch.save writes it since PyTorch 1.6): a ZIP
// archive holding `<prefix>/data.pkl`, a pickle of the state dict, and one entry
// `<prefix>/data/<key>` per storage. The pickle is read by a restricted interpreter, never by
// running it: only the opcodes of protocols 2-5 that data uses, and only the globals a state dict
// refers to (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and
// the typed storage classes); any other global (os.system, builtins.eval, ...) or opcode is one
// Error naming it. Tensors are views into the mapped file, checked like safetensors' (dtype from
// the storage class, storage byte size = numel x element size, every tensor contiguous and inside
// its storage, little-endian archive).
#pragma once

#include <map>
#include <span>
#include <string>

#include "io/safetensors.h"
#include "io/zip_archive.h"

namespace kllens {

// What data.pkl must reduce to: a dict (or OrderedDict) of string keys to tensors. A wider
// checkpoint ({"model": state_dict, "optimizer": ...}) is refused naming its first other key.
class PytorchCheckpoint {
 public:
  explicit PytorchCheckpoint(const std::string& path);  // maps and validates; throws Error
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return zip_.path(); }
  void release_pages() const { zip_.file().release_pages(); }

 private:
  ZipArchive zip_;
  std::map<std::string, TensorView> tensors_;
};

// A stored pickle's bytes under test or fuzzing, without the archive: the state dict it describes,
// each tensor's data taken from storages[key]. PytorchCheckpoint calls this on data.pkl.
std::map<std::string, TensorView> unpickle_state_dict(
    std::span<const std::byte> pickle, const std::map<std::string, std::span<const std::byte>>& storages,
    const std::string& path);

}  // namespace kllens
