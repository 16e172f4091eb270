// A progress bar with ETA on stderr, drawn only when stderr is a terminal (never in logs or CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kllens {

// Items are counted; the ETA follows the work they stand for. By default every item is one unit
// of work; when items cost very different amounts (a sweep entry of layer 0 recomputes every
// layer, one of the last layer only the head), give the total work and each item's share, so
// the ETA is right from the first item instead of after the expensive ones are done.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  Progress(std::string label, int64_t total, double total_work);
  ~Progress();
  void advance(int64_t n = 1);
  void advance(int64_t n, double work);
  // More work discovered on the way (an adaptive sweep's refined entries): the ETA includes it.
  void add_work(double work);
  void set(int64_t done);
  void finish();
  // Seconds left after `elapsed` seconds at the work done so far; negative when unknown (no
  // work done yet, or all of it).
  double eta_seconds(double elapsed) const;

 private:
  void draw(bool final);
  std::string label_;
  int64_t total_, done_ = 0;
  double total_work_ = -1, work_done_ = 0;  // total_work_ < 0: one unit per item
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kllens
