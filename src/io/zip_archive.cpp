#include "io/zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "core/error.h"

namespace kllens {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50,
                   kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalHeaderBytes = 30, kCentralBytes = 46, kEndBytes = 22,
                 kZip64LocatorBytes = 20, kZip64EndBytes = 56;

// Little-endian reads at a checked position of the mapping.
class Reader {
 public:
  Reader(const std::byte* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  template <typename T>
  T at(uint64_t offset, const char* what) const {
    if (offset > size_ || sizeof(T) > size_ - offset)
      fail("{}: ZIP {} at byte {} runs past the end of the file ({} bytes)", path_, what, offset,
           size_);
    T v;
    std::memcpy(&v, data_ + offset, sizeof(T));
    return v;
  }
  size_t size() const { return size_; }

 private:
  const std::byte* data_;
  size_t size_;
  const std::string& path_;
};

struct EndRecord {
  uint64_t entries = 0, cd_size = 0, cd_offset = 0, end_of_cd_area = 0;
};

EndRecord read_end_record(const Reader& r, const std::string& path) {
  const size_t size = r.size();
  if (size < kEndBytes) fail("{}: not a ZIP archive ({} bytes, too short for its end record)", path, size);
  // The end record is the last 22 bytes plus a comment of at most 65,535 bytes; the last
  // signature whose comment length reaches exactly to the end of the file is it.
  std::optional<uint64_t> end;
  const uint64_t lowest = size - kEndBytes > 65535 ? size - kEndBytes - 65535 : 0;
  for (uint64_t pos = size - kEndBytes + 1; pos-- > lowest;) {
    if (r.at<uint32_t>(pos, "end record") != kEndSig) continue;
    if (pos + kEndBytes + r.at<uint16_t>(pos + 20, "comment length") == size) {
      end = pos;
      break;
    }
  }
  if (!end) fail("{}: not a ZIP archive (no end-of-central-directory record)", path);
  const uint64_t e = *end;
  if (r.at<uint16_t>(e + 4, "disk number") != 0 || r.at<uint16_t>(e + 6, "disk number") != 0)
    fail("{}: a multi-part ZIP archive, which kllens does not read", path);
  EndRecord rec;
  rec.entries = r.at<uint16_t>(e + 10, "entry count");
  rec.cd_size = r.at<uint32_t>(e + 12, "directory size");
  rec.cd_offset = r.at<uint32_t>(e + 16, "directory offset");
  rec.end_of_cd_area = e;
  const bool needs64 = rec.entries == 0xFFFF || rec.cd_size == 0xFFFFFFFF || rec.cd_offset == 0xFFFFFFFF;
  if (e >= kZip64LocatorBytes && r.at<uint32_t>(e - kZip64LocatorBytes, "ZIP64 locator") == kZip64LocatorSig) {
    const uint64_t z = r.at<uint64_t>(e - kZip64LocatorBytes + 8, "ZIP64 end record offset");
    if (z > e - kZip64LocatorBytes || e - kZip64LocatorBytes - z < kZip64EndBytes)
      fail("{}: the ZIP64 end record offset {} is not before its locator", path, z);
    if (r.at<uint32_t>(z, "ZIP64 end record") != kZip64EndSig)
      fail("{}: no ZIP64 end record at byte {}, where the locator points", path, z);
    if (r.at<uint32_t>(z + 16, "disk number") != 0 || r.at<uint32_t>(z + 20, "disk number") != 0)
      fail("{}: a multi-part ZIP archive, which kllens does not read", path);
    rec.entries = r.at<uint64_t>(z + 32, "entry count");
    rec.cd_size = r.at<uint64_t>(z + 40, "directory size");
    rec.cd_offset = r.at<uint64_t>(z + 48, "directory offset");
    rec.end_of_cd_area = z;
  } else if (needs64) {
    fail("{}: the end record defers to a ZIP64 record that is not there", path);
  }
  if (rec.cd_offset > rec.end_of_cd_area || rec.cd_size > rec.end_of_cd_area - rec.cd_offset)
    fail("{}: the central directory (offset {}, {} bytes) does not end before its end record "
         "at byte {}",
         path, rec.cd_offset, rec.cd_size, rec.end_of_cd_area);
  // Bounds before allocation: every entry takes at least 46 bytes of the directory.
  if (rec.entries > rec.cd_size / kCentralBytes)
    fail("{}: {} entries cannot fit in a central directory of {} bytes", path, rec.entries,
         rec.cd_size);
  return rec;
}

struct Entry {
  std::string name;
  uint64_t local_offset = 0, size = 0, data_offset = 0, end = 0;
  uint32_t crc = 0;
};

}  // namespace

bool looks_like_zip(std::span<const std::byte> head) {
  if (head.size() < 4) return false;
  uint32_t sig;
  std::memcpy(&sig, head.data(), 4);
  return sig == kLocalHeaderSig || sig == kEndSig;
}

ZipArchive::ZipArchive(const std::string& path) : file_(path) {
  const Reader r(file_.data(), file_.size(), path);
  const EndRecord end = read_end_record(r, path);
  std::vector<Entry> entries;
  entries.reserve(static_cast<size_t>(end.entries));
  uint64_t pos = end.cd_offset;
  const uint64_t cd_end = end.cd_offset + end.cd_size;
  for (uint64_t i = 0; i < end.entries; ++i) {
    if (cd_end - pos < kCentralBytes)
      fail("{}: central directory entry {} runs past the directory's {} bytes", path, i, end.cd_size);
    if (r.at<uint32_t>(pos, "directory entry") != kCentralSig)
      fail("{}: no central directory entry at byte {} (entry {})", path, pos, i);
    const uint16_t flags = r.at<uint16_t>(pos + 8, "flags");
    const uint16_t method = r.at<uint16_t>(pos + 10, "method");
    Entry e;
    e.crc = r.at<uint32_t>(pos + 16, "CRC");
    uint64_t compressed = r.at<uint32_t>(pos + 20, "size");
    uint64_t size = r.at<uint32_t>(pos + 24, "size");
    const uint16_t name_len = r.at<uint16_t>(pos + 28, "name length");
    const uint16_t extra_len = r.at<uint16_t>(pos + 30, "extra length");
    const uint16_t comment_len = r.at<uint16_t>(pos + 32, "comment length");
    uint32_t disk = r.at<uint16_t>(pos + 34, "disk number");
    uint64_t local = r.at<uint32_t>(pos + 42, "local header offset");
    const uint64_t variable = uint64_t{name_len} + extra_len + comment_len;
    if (cd_end - pos - kCentralBytes < variable)
      fail("{}: central directory entry {} runs past the directory's {} bytes", path, i, end.cd_size);
    e.name.assign(reinterpret_cast<const char*>(file_.data() + pos + kCentralBytes), name_len);
    // ZIP64 extra field: the 64-bit values of the fields that hold their all-ones sentinel, in
    // this order.
    for (uint64_t x = pos + kCentralBytes + name_len, x_end = x + extra_len; x + 4 <= x_end;) {
      const uint16_t id = r.at<uint16_t>(x, "extra field"), len = r.at<uint16_t>(x + 2, "extra field");
      if (x_end - x - 4 < len) fail("{}: entry '{}' has an extra field past its end", path, e.name);
      if (id == 0x0001) {
        uint64_t f = x + 4;
        const uint64_t f_end = f + len;
        const auto take64 = [&](uint64_t& v) {
          if (f_end - f < 8) fail("{}: entry '{}' has a short ZIP64 extra field", path, e.name);
          v = r.at<uint64_t>(f, "ZIP64 field");
          f += 8;
        };
        if (size == 0xFFFFFFFF) take64(size);
        if (compressed == 0xFFFFFFFF) take64(compressed);
        if (local == 0xFFFFFFFF) take64(local);
        if (disk == 0xFFFF) {
          if (f_end - f < 4) fail("{}: entry '{}' has a short ZIP64 extra field", path, e.name);
          disk = r.at<uint32_t>(f, "ZIP64 field");
        }
      }
      x += 4 + len;
    }
    if (flags & 1) fail("{}: entry '{}' is encrypted", path, e.name);
    if (method != 0)
      fail("{}: entry '{}' is compressed (method {}); torch.save stores entries uncompressed",
           path, e.name, method);
    if (compressed != size)
      fail("{}: stored entry '{}' has a compressed size {} that is not its size {}", path, e.name,
           compressed, size);
    if (disk != 0) fail("{}: a multi-part ZIP archive, which kllens does not read", path);
    if (local > end.cd_offset || end.cd_offset - local < kLocalHeaderBytes)
      fail("{}: entry '{}' has its local header at byte {}, not before the central directory "
           "(byte {})",
           path, e.name, local, end.cd_offset);
    if (r.at<uint32_t>(local, "local header") != kLocalHeaderSig)
      fail("{}: entry '{}': no local header at byte {}", path, e.name, local);
    const uint16_t local_flags = r.at<uint16_t>(local + 6, "flags");
    const uint16_t local_name_len = r.at<uint16_t>(local + 26, "name length");
    const uint16_t local_extra_len = r.at<uint16_t>(local + 28, "extra length");
    e.local_offset = local;
    e.data_offset = local + kLocalHeaderBytes + local_name_len + local_extra_len;
    if (e.data_offset > end.cd_offset || size > end.cd_offset - e.data_offset)
      fail("{}: entry '{}' ({} bytes from byte {}) runs into the central directory at byte {}",
           path, e.name, size, e.data_offset, end.cd_offset);
    e.end = e.data_offset + size;
    e.size = size;
    const std::string_view local_name(
        reinterpret_cast<const char*>(file_.data() + local + kLocalHeaderBytes), local_name_len);
    if (local_name != e.name)
      fail("{}: entry '{}' has the name '{}' in its local header", path, e.name, local_name);
    if (r.at<uint16_t>(local + 8, "method") != method)
      fail("{}: entry '{}' has another method in its local header", path, e.name);
    // Without a data descriptor (flag bit 3) the local header repeats CRC and sizes; 0xFFFFFFFF
    // defers them to its ZIP64 field, which the central directory's already give.
    if (!(local_flags & 8)) {
      const uint32_t local_crc = r.at<uint32_t>(local + 14, "CRC");
      const uint32_t local_size = r.at<uint32_t>(local + 22, "size");
      if (local_crc != e.crc || (local_size != 0xFFFFFFFF && local_size != size))
        fail("{}: entry '{}': its local header (CRC {:08x}, {} bytes) contradicts the central "
             "directory (CRC {:08x}, {} bytes)",
             path, e.name, local_crc, local_size, e.crc, size);
    }
    entries.push_back(std::move(e));
    pos += kCentralBytes + variable;
  }
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->local_offset < b->local_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->local_offset < by_offset[i - 1]->end)
      fail("{}: entries '{}' and '{}' overlap", path, by_offset[i - 1]->name, by_offset[i]->name);
  for (const auto& e : entries) {
    const std::span<const std::byte> bytes(file_.data() + e.data_offset, static_cast<size_t>(e.size));
    // The CRC proves the bytes are the ones written: a bit flipped in a tensor would otherwise
    // load as a silently different model.
    const auto crc = static_cast<uint32_t>(
        crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
    if (crc != e.crc)
      fail("{}: entry '{}' is corrupt (CRC-32 {:08x}, the directory says {:08x})", path, e.name,
           crc, e.crc);
    if (!entries_.emplace(e.name, bytes).second) fail("{}: the archive holds '{}' twice", path, e.name);
  }
}

const std::span<const std::byte>* ZipArchive::find(const std::string& name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace kllens
