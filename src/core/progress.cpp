#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kllens {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), enabled_(isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  if (enabled_) draw(false);
}

Progress::Progress(std::string label, int64_t total, double total_work)
    : Progress(std::move(label), total) {
  total_work_ = total_work;
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) { set(done_ + n); }

void Progress::add_work(double work) {
  if (total_work_ >= 0) total_work_ += work;
}

void Progress::advance(int64_t n, double work) {
  work_done_ += work;
  set(done_ + n);
}

double Progress::eta_seconds(double elapsed) const {
  const bool weighted = total_work_ >= 0;
  const double done = weighted ? work_done_ : static_cast<double>(done_);
  const double total = weighted ? total_work_ : static_cast<double>(total_);
  if (done <= 0 || done >= total || done_ >= total_) return -1;
  return elapsed / done * (total - done);
}

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
  // The bar shows the work done, like the ETA; the counter shows items.
  double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (total_work_ > 0) frac = std::min(1.0, work_done_ / total_work_);
  const int width = 30;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  char eta[32] = "";
  if (const double rest = eta_seconds(elapsed); !final && rest >= 0) {
    std::snprintf(eta, sizeof eta, " ETA %dm%02ds", static_cast<int>(rest) / 60,
                  static_cast<int>(rest) % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %.0fs%s   ", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), elapsed, eta);
  std::fflush(stderr);
}

}  // namespace kllens
