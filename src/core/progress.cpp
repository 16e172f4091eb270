#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kllens {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  if (enabled_) draw(false);
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) { set(done_ + n); }

void Progress::set(int64_t done) {
  done_ = done;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(200) || done_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) {
    draw(true);
    std::fputc('\n', stderr);
  }
}

void Progress::draw(bool final) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const int width = 30;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  char eta[32] = "";
  if (!final && done_ > 0 && done_ < total_) {
    const double rest = elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_);
    std::snprintf(eta, sizeof eta, " ETA %dm%02ds", static_cast<int>(rest) / 60,
                  static_cast<int>(rest) % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %.0fs%s   ", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), elapsed, eta);
  std::fflush(stderr);
}

}  // namespace kllens
