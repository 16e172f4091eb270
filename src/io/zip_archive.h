// The entries of a ZIP archive in a memory-mapped file, as PyTorch's torch.save writes them
// (pytorch_model.bin): every entry stored uncompressed, ZIP64 records past 4 GiB. Hand-written
// rather than libzip or minizip because a checkpoint's tensors are read in place from the
// mapping, which needs each entry's byte range in the file; those libraries only copy entries
// out. Everything is validated when the archive is opened: the end records, every central
// directory entry against its local header (name, sizes, CRC-32), entries inside the file and
// not overlapping each other or the directory, each name once, no compression or encryption.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "io/mapped_file.h"

namespace kllens {

class ZipArchive {
 public:
  explicit ZipArchive(const std::string& path);  // maps and validates; throws Error
  // Entry name -> its bytes inside the mapping.
  const std::map<std::string, std::span<const std::byte>>& entries() const { return entries_; }
  const std::span<const std::byte>* find(const std::string& name) const;
  const std::string& path() const { return file_.path(); }
  const MappedFile& file() const { return file_; }

 private:
  MappedFile file_;
  std::map<std::string, std::span<const std::byte>> entries_;
};

// Whether a file starts like a ZIP archive (a local file header or an empty archive's end record).
bool looks_like_zip(std::span<const std::byte> head);

}  // namespace kllens
