#include "eval/text.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/read_file.h"

namespace kllens {

std::string read_text_file(const std::string& path) {
  if (std::filesystem::is_directory(path)) fail("{}: is a directory, not a text file", path);
  return read_file(path);
}

namespace {
// " = Title = " exactly: starts with " = ", next char not '=', ends with " = ".
bool is_article_heading(const std::string& text, size_t begin, size_t end) {
  const size_t n = end - begin;
  if (n < 7) return false;
  if (text.compare(begin, 3, " = ") != 0) return false;
  if (text[begin + 3] == '=') return false;
  return text.compare(end - 3, 3, " = ") == 0;
}
}  // namespace

std::vector<size_t> article_starts(const std::string& text) {
  std::vector<size_t> starts;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (is_article_heading(text, pos, eol)) starts.push_back(pos);
    pos = eol + 1;
  }
  return starts;
}

std::string select_articles(const std::string& text, int first, int last) {
  const auto starts = article_starts(text);
  const int n = static_cast<int>(starts.size());
  if (first < 0 || last < first || last >= n)
    fail("article range {}..{} is outside the text, which has {} articles (0..{})", first, last, n,
         n - 1);
  const size_t begin = starts[static_cast<size_t>(first)];
  const size_t end = last + 1 < n ? starts[static_cast<size_t>(last + 1)] : text.size();
  return text.substr(begin, end - begin);
}

}  // namespace kllens
