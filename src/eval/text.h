// Text files and the WikiText article split used by the demo models: an article runs from one
// line matching `^ = [^=].* = $` (a level-1 heading) to the next.
#pragma once

#include <string>
#include <vector>

namespace kllens {

std::string read_text_file(const std::string& path);  // throws Error naming the path

// Byte offsets where each article's heading line starts.
std::vector<size_t> article_starts(const std::string& text);

// Articles first..last (inclusive, 0-based): from the heading of `first` to the heading of
// last+1 (or the end of the text). Throws Error when the range is outside the text.
std::string select_articles(const std::string& text, int first, int last);

}  // namespace kllens
