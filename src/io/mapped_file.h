// Read-only memory map of a whole file. Weights stay in the page cache and are converted from
// there, so a checkpoint is never read into a second heap copy.
#pragma once

#include <cstddef>
#include <string>

namespace kllens {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the mapped pages are no longer needed (after conversion to float32), so
  // they leave this process's resident set.
  void release_pages() const;

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// The same for one range of a mapping (a tensor): only whole pages inside [data, data + nbytes)
// are released, so a page shared with a neighbour stays.
void release_mapped_range(const void* data, size_t nbytes);

}  // namespace kllens
