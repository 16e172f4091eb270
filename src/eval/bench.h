// Speed and memory of a model on this machine: prefill and decode tokens/s, per-token decode
// latency, peak resident memory. Random token ids with a fixed seed; several runs, reported as
// median and spread (min..max). Timing lives here and in `kllens bench`, never in tests.
// Prefill is one window of `prompt` tokens through every layer with the head applied to the last
// position only (as llama-bench's pp test); decode is `gen` single-token steps from a fresh state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kllens {

class Model;

struct BenchOptions {
  int64_t prompt = 512;  // tokens in the prefill window
  int64_t gen = 128;     // decode steps
  int runs = 3;
  uint64_t seed = 7;
};

struct Spread {
  double median = 0, min = 0, max = 0;
};
Spread spread_of(std::vector<double> values);

struct BenchResult {
  std::vector<double> prefill_tps;     // per run
  std::vector<double> decode_tps;      // per run
  std::vector<double> token_ms;        // every decode step of every run
  Spread prefill, decode, latency;     // latency: median, min, max; p90 below
  double latency_p90_ms = 0;
  size_t decode_state_bytes_start = 0; // after the first decode step
  size_t decode_state_bytes_end = 0;   // after the last: flat for SSMs and windowed attention
};

BenchResult run_bench(const Model& model, const BenchOptions& options);

// Weight bytes one decode step reads: every matrix whole (packed or float32), an untied embedding
// table one row. The bandwidth arithmetic of `bench`: tokens/s <= bandwidth / these bytes.
int64_t decode_bytes_per_token(const Model& model);
// Median read bandwidth (GB/s) of 5 passes summing a buffer of buffer_bytes with `threads`
// OpenMP threads.
double measure_read_bandwidth(int threads, int64_t buffer_bytes = int64_t{512} << 20);

size_t peak_rss_bytes();     // VmHWM of this process
size_t current_rss_bytes();  // VmRSS
size_t path_bytes(const std::string& path);  // a file, or the sum of a folder's files

}  // namespace kllens
