// Files that are either the old version or the whole new one, even across a kill or a power
// loss: written to a temporary name beside the target, fsynced, renamed over it, and the
// directory fsynced so that the rename itself is on disk.
#pragma once

#include <cstdio>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

namespace kllens {

// Replaces PATH with BYTES durably. Error naming the file when anything fails; PATH is then
// untouched and the temporary is removed.
void write_file_durably(const std::string& path, std::string_view bytes);

// The same for a writer that streams (a multi-GB checkpoint): `write` fills a binary stream on
// the temporary. Error when the stream fails; if `write` throws, its exception passes through.
// Either way PATH is untouched and the temporary removed.
void write_stream_durably(const std::string& path, const std::function<void(std::ostream&)>& write);

// The temporary name write_file_durably uses (PATH.tmp.PID: two processes never share one).
// Removes PATH's temporaries left by processes that no longer exist (a writer killed mid-write).
std::string temporary_name_for(const std::string& path);

// For writers that stream into a temporary themselves (the GGUF writer): fsyncs TMP, renames it
// over PATH and fsyncs the directory. Error (TMP removed) when any step fails.
void commit_temporary_file(const std::string& tmp, const std::string& path);

// Writes all of BYTES to FD (a short write or EINTR continues); Error "WHAT: write failed: ...".
void write_all(int fd, std::string_view bytes, const std::string& what);

// fsync of the directory holding PATH, so a rename or creation inside it survives a crash.
void fsync_parent_directory(const std::string& path);

}  // namespace kllens
