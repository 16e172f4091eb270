#include "eval/bench.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "models/model.h"

namespace kllens {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

size_t status_field_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(key.size())) * 1024;
  return 0;
}
}  // namespace

Spread spread_of(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

BenchResult run_bench(const Model& model, const BenchOptions& o) {
  BenchResult r;
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(model.info().vocab - 1));
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt));
  for (auto& t : prompt) t = id(rng);
  std::vector<float> logits(static_cast<size_t>(model.info().vocab));
  for (int run = 0; run < o.runs; ++run) {
    if (o.prompt > 0) {
      const auto t0 = Clock::now();
      const auto out = model.forward_last(prompt);
      r.prefill_tps.push_back(static_cast<double>(o.prompt) / seconds_since(t0));
    }
    if (o.gen > 0) {
      auto state = model.new_decode_state();
      int32_t token = prompt.empty() ? 0 : prompt[0];
      const auto t0 = Clock::now();
      for (int64_t i = 0; i < o.gen; ++i) {
        const auto ts = Clock::now();
        model.decode_step(*state, token, logits.data());
        r.token_ms.push_back(1000.0 * seconds_since(ts));
        token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (i == 0) r.decode_state_bytes_start = state->bytes();
      }
      r.decode_tps.push_back(static_cast<double>(o.gen) / seconds_since(t0));
      r.decode_state_bytes_end = state->bytes();
    }
  }
  r.prefill = spread_of(r.prefill_tps);
  r.decode = spread_of(r.decode_tps);
  r.latency = spread_of(r.token_ms);
  if (!r.token_ms.empty()) {
    auto sorted = r.token_ms;
    std::sort(sorted.begin(), sorted.end());
    r.latency_p90_ms = sorted[static_cast<size_t>(0.9 * static_cast<double>(sorted.size() - 1))];
  }
  return r;
}

size_t peak_rss_bytes() { return status_field_kb("VmHWM:"); }
size_t current_rss_bytes() { return status_field_kb("VmRSS:"); }

size_t path_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path)) return fs::file_size(path);
  size_t total = 0;
  if (fs::is_directory(path))
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file()) total += e.file_size();
  return total;
}

int64_t decode_bytes_per_token(const Model& model) {
  int64_t bytes = 0;
  for (const auto& p : model.weights().all()) {
    const int64_t b = p->resident_bytes();
    // An untied embedding table is read one row per token; everything else whole.
    if (p->role == Role::kEmbed && !p->tied_head && p->rows() > 0)
      bytes += b / p->rows();
    else
      bytes += b;
  }
  return bytes;
}

double measure_read_bandwidth(int threads, int64_t buffer_bytes) {
  // Larger than the last-level cache (260 MB on the machines this was written on) so the passes
  // stream from memory; each thread sums its own contiguous share, as decode's row split does.
  const int64_t n = std::max<int64_t>(buffer_bytes / 8, 1 << 20);
  std::vector<uint64_t> buf(static_cast<size_t>(n));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = static_cast<uint64_t>(i);
  std::vector<double> rates;
  uint64_t sink = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += buf[static_cast<size_t>(i)];
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += total;
    rates.push_back(static_cast<double>(n) * 8.0 / s / 1e9);
  }
  volatile uint64_t keep = sink;
  (void)keep;
  return spread_of(rates).median;
}

}  // namespace kllens
